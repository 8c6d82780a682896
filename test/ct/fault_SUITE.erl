%% @doc Faults from outside: peers that vanish mid-call or stop reading,
%% large terms as ids and payloads, exit signals from linked processes.
-module(fault_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [peer_gone_mid_call_loses_nothing_and_links_fire,
     peer_that_does_not_read_is_dropped_at_the_output_limit,
     a_reply_over_the_output_limit_drops_its_peer_and_says_why,
     large_ids_and_payloads_are_accepted,
     linked_beam_process_death_restarts_the_worker,
     a_million_nested_lists_never_reach_a_behaviour].

init_per_testcase(Case, Config) ->
    Extra = case Case of
                peer_that_does_not_read_is_dropped_at_the_output_limit -> ["--max-outbuf", "262144"];
                a_reply_over_the_output_limit_drops_its_peer_and_says_why -> ["--max-outbuf", "262144"];
                _ -> []
            end,
    cnode_test:init_case(Config, ["--manager", "counters=counter,children=1000,timeout=0"] ++ Extra,
                         counters).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config).

peer_gone_mid_call_loses_nothing_and_links_fire(Config) ->
    N = ?config(node, Config),
    M = {counters, N},
    #{pid := W1} = gen_server:call(M, {get, <<"c1">>}),
    #{pid := W2} = gen_server:call(M, {get, <<"c2">>}),
    {Peer, _} = cnode_test:start_peer("vanish"),
    %% On the peer: one process links to c2's worker; another is inside a
    %% one-second call to c1's worker when the whole peer goes away.
    _ = peer:call(Peer, ?MODULE, hold_link, [W2]),
    _ = peer:call(Peer, erlang, spawn, [gen_server, call, [W1, {sleep, 1000}, 10000]]),
    cnode_test:wait_until(fun() -> maps:get('busy?', gen_server:call(M, {get, <<"c1">>})) =/= nil end, 5000),
    PeerOs = peer:call(Peer, os, getpid, []),
    _ = os:cmd("kill -9 " ++ PeerOs),
    catch peer:stop(Peer),
    %% c1 finishes its callback and keeps its pid; its reply had nowhere to go.
    cnode_test:wait_until(fun() -> maps:get('busy?', gen_server:call(M, {get, <<"c1">>})) =:= nil end, 5000),
    ?assertMatch(#{pid := W1}, gen_server:call(M, {get, <<"c1">>})),
    ?assertMatch({ok, _}, gen_server:call(M, {synch_call, <<"c1">>, get})),
    cnode_test:wait_until(fun() -> maps:get(undeliverable, cnode_test:stats(N)) >= 1 end, 5000),
    %% c2 was linked to a process of the lost node: noconnection took it
    %% down and it came back (permanent) under a new pid.
    cnode_test:wait_until(fun() ->
        case gen_server:call(M, {get, <<"c2">>}) of #{pid := W2} -> false; #{pid := _} -> true; _ -> false end
    end, 5000),
    ?assertEqual(1000, maps:get(workers, gen_server:call(M, stats))).

peer_that_does_not_read_is_dropped_at_the_output_limit(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    ok = inet:setopts(S, [{recbuf, 4096}]),
    From = raw_dist:fake_pid(S, 1),
    %% Each state reply is about 100 KB; ask for many and never read. The
    %% node may drop us before the last request is written: a send then
    %% fails because the socket is gone, which is the point.
    ok = ask_state(S, From, 300),
    cnode_test:wait_until(fun() -> maps:get(outbuf_overflows, cnode_test:stats(N)) >= 1 end, 20000),
    %% Dropped: the socket ends once the kernel's buffer is drained.
    ?assertEqual(closed, drain(S)),
    %% Everyone else is still served.
    ?assertMatch(#{state := started}, gen_server:call({counters, N}, state, 10000)).

%% One reply bigger than --max-outbuf on its own (a payload of 300 KB
%% read back): the peer is dropped as one that does not read would be,
%% and the log says how much more it was, not "0 bytes queued".
a_reply_over_the_output_limit_drops_its_peer_and_says_why(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    Big = binary:copy(<<"x">>, 300000),
    ?assertEqual({ok, ok}, raw_dist:gen_call(S, From, counters, {put, big, [{payload, Big}]}, 5000)),
    ok = raw_dist:send_frame(S, {6, From, '', counters}, {'$gen_call', {From, make_ref()}, {get, big}}),
    ?assertEqual(closed, drain(S)),
    ?assertEqual(1, maps:get(outbuf_overflows, cnode_test:stats(N))),
    Log = cnode_test:log(?config(cnode, Config)),
    ?assertMatch({match, _}, re:run(Log, "bytes queued and 300[0-9]{3} more would pass --max-outbuf")),
    %% The child is still there, and everyone else is still served.
    ?assertEqual(1001, gen_server:call({counters, N}, count, 5000)).

ask_state(_S, _From, 0) -> ok;
ask_state(S, From, K) ->
    case raw_dist:send_frame(S, {6, From, '', counters}, {'$gen_call', {From, make_ref()}, state}) of
        ok -> ask_state(S, From, K - 1);
        {error, R} when R =:= closed; R =:= econnreset; R =:= epipe -> ok
    end.

drain(S) ->
    case gen_tcp:recv(S, 0, 10000) of
        {ok, _} -> drain(S);
        {error, R} -> R
    end.

large_ids_and_payloads_are_accepted(Config) ->
    N = ?config(node, Config),
    M = {counters, N},
    BigId = binary:copy(<<"i">>, 1 bsl 20),
    BigPayload = lists:seq(1, 200000),
    MapId = maps:from_list([{K, K * 2} || K <- lists:seq(1, 5000)]),
    ok = gen_server:call(M, {put, BigId, [{payload, BigPayload}, {timeout, 0}]}),
    ok = gen_server:call(M, {put, MapId, [{payload, 1}, {timeout, 0}]}),
    ?assertMatch(#{pid := _}, gen_server:call(M, {get, BigId})),
    ?assertMatch(#{pid := _}, gen_server:call(M, {get, maps:from_list(lists:reverse(maps:to_list(MapId)))})),
    %% counter's perform would crash on a list payload: it is only stored.
    {ok, Back} = gen_server:call(M, {synch_call, BigId, get}, 30000),
    ?assertEqual(BigPayload, Back),
    %% Nesting past the id depth limit is refused with a clear error.
    Deep = lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 500)),
    ?assertMatch({error, {bad_id, _}}, gen_server:call(M, {put, Deep, []})),
    ?assertEqual(pong, net_adm:ping(N)).

linked_beam_process_death_restarts_the_worker(Config) ->
    N = ?config(node, Config),
    M = {counters, N},
    #{pid := W} = gen_server:call(M, {get, <<"c5">>}),
    Linker = spawn(fun() -> link(W), receive die -> exit(boom) end end),
    cnode_test:wait_until(fun() -> {links, L} = process_info(Linker, links), lists:member(W, L) end, 5000),
    Linker ! die,
    cnode_test:wait_until(fun() ->
        case gen_server:call(M, {get, <<"c5">>}) of #{pid := W} -> false; #{pid := _} -> true; _ -> false end
    end, 5000),
    ?assert(maps:get(crashes, gen_server:call(M, stats)) >= 1),
    %% A normal exit of a linked process is ignored, as in OTP.
    #{pid := W2} = gen_server:call(M, {get, <<"c5">>}),
    Calm = spawn(fun() -> link(W2), receive go -> ok end end),
    cnode_test:wait_until(fun() -> {links, L} = process_info(Calm, links), lists:member(W2, L) end, 5000),
    Calm ! go,
    ?assertMatch(#{pid := W2}, gen_server:call(M, {get, <<"c5">>})).

%% Runs on a peer: a process that links to Pid and stays.
hold_link(Pid) ->
    spawn(fun() -> link(Pid), receive after infinity -> ok end end).

a_million_nested_lists_never_reach_a_behaviour(Config) ->
    N = ?config(node, Config),
    M = {counters, N},
    Deep = lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 1000000)),
    %% As an id: past the canonical form's depth limit.
    ?assertMatch({error, {bad_id, _}}, gen_server:call(M, {put, Deep, []}, 60000)),
    %% As a payload: refused before any behaviour could walk it.
    ?assertEqual({error, {bad_opts, too_deep}}, gen_server:call(M, {put, x, [{payload, Deep}]}, 60000)),
    %% As a message to a worker, or through the manager: an error, no call.
    #{pid := W} = gen_server:call(M, {get, <<"c1">>}),
    ?assertEqual({error, too_deep}, gen_server:call(W, Deep, 60000)),
    ?assertEqual({error, too_deep}, gen_server:call(M, {synch_call, <<"c1">>, Deep}, 60000)),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertMatch(#{pid := W}, gen_server:call(M, {get, <<"c1">>})).
