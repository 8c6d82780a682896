%% @doc Tarearbol's own DynamicManager test suite (test/dynamic_manager_test.exs,
%% version 1.12), replayed against the C node's `pingpong` behaviour with the
%% same timings and assertions.
-module(pingpong_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([receives_pong/1, tracks_crashes/1, timeout/1]).

-define(M, pingpong).

all() -> [receives_pong, tracks_crashes, timeout].

init_per_testcase(_Case, Config) ->
    cnode_test:init_case(Config, ["--manager", "pingpong=pingpong"], ?M).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config).

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).
cast(N, Req) -> gen_server:cast({?M, N}, Req).
children(N) -> maps:get(children, call(N, state)).

%% "receives pong"
receives_pong(Config) ->
    N = ?config(node, Config),
    ?assertMatch(#{foo := _}, children(N)),
    ok = call(N, {asynch_call, foo, '+'}),
    ok = call(N, {asynch_call, foo, '+'}),
    ?assertEqual({ok, {pong, {foo, 2}}}, call(N, {synch_call, foo, ping})),
    ok = call(N, {asynch_call, foo, {down, self()}}),
    receive <<"pong">> -> ok after 1000 -> ct:fail(no_pong) end,
    %% The perform that sent it returned halt: the child is gone.
    cnode_test:wait_until(fun() -> children(N) =:= #{} end, 1000).

%% "tracks crashes"
tracks_crashes(Config) ->
    N = ?config(node, Config),
    Id = term_to_binary(self()),
    cast(N, {put, Id, [{timeout, 100}]}),
    receive <<"pong">> -> ok after 1000 -> ct:fail(no_first_pong) end,
    cast(N, {put, Id, [{timeout, 100}]}),
    receive <<"pong">> -> ok after 1000 -> ct:fail(no_pong_after_put) end,
    ?assertEqual(2, maps:size(children(N))), % foo and Id: exactly one for Id
    #{pid := P} = call(N, {get, Id}),
    cast(N, {put_new, Id, [{timeout, 100}]}),
    receive <<"pong">> -> ok after 1000 -> ct:fail(no_pong_after_put_new) end,
    ?assertMatch(#{pid := P}, call(N, {get, Id})),
    cast(N, {del, Id}),
    cnode_test:wait_until(fun() -> not maps:is_key(Id, children(N)) end, 10),
    flush_pongs().

%% "timeout": pongs after ~100 ms, then ~1000 ms, then ~10 s.
timeout(Config) ->
    N = ?config(node, Config),
    Id = term_to_binary(self()),
    ok = call(N, {put, Id, [{payload, 100}, {timeout, 100}]}),
    receive <<"pong">> -> ct:fail(too_early) after 50 -> ok end,
    receive <<"pong">> -> ok after 500 -> ct:fail(no_first_pong) end,
    receive <<"pong">> -> ct:fail(second_too_early) after 300 -> ok end,
    receive <<"pong">> -> ok after 1000 -> ct:fail(no_second_pong) end,
    ok = call(N, {del, Id}).

flush_pongs() ->
    receive <<"pong">> -> flush_pongs() after 0 -> ok end.
