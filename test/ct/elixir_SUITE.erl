%% @doc An Elixir node uses the C node as a user would from iex
%% (test/elixir/smoke.exs): put, synch_call, the Child map, the worker's
%% pid, state, bad opts, del; the docs iex's h shows (Code.fetch_docs);
%% then the same through a module that uses TarearbolCnode.DynamicManager,
%% which starts its own node.
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
    %% The Elixir side (erl/lib) compiled as mix.exs would, next to the
    %% application's own beams.
    Ebin = filename:join(?config(priv_dir, Config), "ex_ebin"),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    Exs = filelib:wildcard(filename:join([Root, "erl", "lib", "**", "*.ex"])),
    AppEbin = filename:absname(code:lib_dir(tarearbol_cnode, ebin), os:getenv("PWD")),
    Compile = os:cmd("elixirc --warnings-as-errors -pa " ++ AppEbin ++ " -o " ++ Ebin ++ " " ++ lists:join(" ", Exs)
                     ++ " 2>&1; echo \"exit=$?\""),
    ct:log("~s", [Compile]),
    ?assertNotEqual(nomatch, string:find(Compile, "exit=0"), Compile),
    Cmd = "timeout 60 elixir --sname " ++ cnode_test:unique("ex") ++ " --cookie " ++ cnode_test:cookie() ++
          " -pa " ++ Ebin ++ " -pa " ++ AppEbin ++
          " " ++ Script1 ++ " " ++ atom_to_list(N) ++ " " ++ cnode_test:unique("exdm") ++ " 2>&1; echo \"exit=$?\"",
    Out = os:cmd(Cmd),
    ct:log("~s", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "SMOKE OK"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "child:"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "SMOKE DOCS OK"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "SMOKE DM OK"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "exit=0"), Out),
    cnode_test:stop(C).
