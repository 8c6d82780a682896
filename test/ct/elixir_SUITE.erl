%% @doc An Elixir node uses the C node as a user would from iex
%% (test/elixir/smoke.exs): put, synch_call, the Child map, the worker's
%% pid, state, bad opts, del.
-module(elixir_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, elixir_session_works/1]).

all() -> [elixir_session_works].

elixir_session_works(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "counters=counter,children=2,timeout=1000"]}),
    N = cnode_test:node(C),
    cnode_test:wait_started({counters, N}, 5000),
    Root = cnode_test:root(),
    Script1 = filename:join([Root, "test", "elixir", "smoke.exs"]),
    true = filelib:is_regular(Script1),
    Cmd = "timeout 60 elixir --sname " ++ cnode_test:unique("ex") ++ " --cookie " ++ cnode_test:cookie() ++
          " " ++ Script1 ++ " " ++ atom_to_list(N) ++ " 2>&1; echo \"exit=$?\"",
    Out = os:cmd(Cmd),
    ct:log("~s", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "SMOKE OK"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "child:"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "exit=0"), Out),
    cnode_test:stop(C).
