%% @doc Events: a BEAM process subscribes to a manager (the wire request
%% {subscribe, Pid, Events}, through tarearbol_cnode:subscribe/2,3) and
%% receives {tarearbol_cnode, {Name, Node}, Event, Map} for worker
%% crashes, restarts, escalations, state changes and performs later than
%% its threshold; only what it asked for. Lateness comes summarised, at
%% most one event per interval, and a flood of crashes is bounded per
%% subscriber with what was dropped told and counted. Bad subscribe forms
%% get clear errors; subscribers are bounded, and a dead one (its process
%% or its node gone) is dropped. With a telemetry module loaded (a fake
%% one from the data dir that records its calls), the application's
%% forwarder emits the same events through telemetry:execute/3.
-module(events_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(M, counters).

all() ->
    [a_crash_and_its_restart_name_the_worker_and_the_reason,
     only_the_events_subscribed_to_arrive,
     escalations_restart_all_then_go_down_with_a_state_event,
     state_events_follow_a_restart,
     a_perform_later_than_the_threshold_is_told_at_once,
     lateness_is_summarised_at_most_once_per_interval,
     a_flood_of_crashes_is_bounded_and_what_was_dropped_is_told,
     bad_subscribe_forms_get_clear_errors,
     subscribing_again_replaces_the_events,
     unsubscribe_stops_the_events,
     a_dead_subscriber_is_dropped,
     a_subscriber_on_a_peer_gets_events_and_goes_with_its_node,
     subscribers_are_bounded,
     telemetry_gets_the_same_events_when_it_is_loaded,
     without_telemetry_nothing_is_forwarded].

init_per_testcase(Case, Config) when Case =:= telemetry_gets_the_same_events_when_it_is_loaded;
                                     Case =:= without_telemetry_nothing_is_forwarded ->
    cnode_test:app_init_suite(Config);
init_per_testcase(escalations_restart_all_then_go_down_with_a_state_event, Config) ->
    start(Config, "counters=counter,children=2,timeout=0,max_restarts=1,max_seconds=30");
init_per_testcase(Case, Config) when Case =:= a_perform_later_than_the_threshold_is_told_at_once;
                                     Case =:= lateness_is_summarised_at_most_once_per_interval ->
    start(Config, "counters=counter,timeout=0,threads=1");
init_per_testcase(a_flood_of_crashes_is_bounded_and_what_was_dropped_is_told, Config) ->
    start(Config, "counters=counter,children=5000,timeout=0,restart=temporary");
init_per_testcase(_Case, Config) ->
    start(Config, "counters=counter,children=2,timeout=0").

start(Config, Spec) ->
    cnode_test:init_case(Config, ["--threads", "2", "--manager", Spec], ?M).

end_per_testcase(Case, Config) when Case =:= telemetry_gets_the_same_events_when_it_is_loaded;
                                    Case =:= without_telemetry_nothing_is_forwarded ->
    _ = code:purge(telemetry),
    _ = code:delete(telemetry),
    _ = code:purge(telemetry),
    code:del_path(proplists:get_value(priv_dir, Config)),
    cnode_test:app_end_case(Config),
    cnode_test:app_end_suite(Config);
end_per_testcase(_Case, Config) ->
    cnode_test:end_case(Config).

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).

%% A counter worker: payload 0 unless Opts say otherwise (a later key wins).
worker(N, Id, Opts) ->
    ok = call(N, {put, Id, [{timeout, 0}, {payload, 0} | Opts]}),
    #{pid := P} = call(N, {get, Id}),
    P.

subscribers(N) -> maps:get(subscribers, call(N, stats)).

%% The next event of kind Event from the manager on N, or a failure.
event(N, Event) -> event(N, Event, 5000).
event(N, Event, T) ->
    receive {tarearbol_cnode, {?M, N}, Event, Map} -> Map
    after T -> ct:fail({no_event, Event})
    end.

no_event(N, T) ->
    receive {tarearbol_cnode, {?M, N}, _, _} = E -> ct:fail({unexpected, E})
    after T -> ok
    end.

%% ---------------------------------------------------------------------------

a_crash_and_its_restart_name_the_worker_and_the_reason(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"w">>, []),
    ok = tarearbol_cnode:subscribe({?M, N}, [crash, restart]),
    gen_server:cast(P, {crash, {boom, 42}}),
    ?assertEqual(#{id => <<"w">>, pid => P, reason => {boom, 42}}, event(N, crash)),
    #{id := <<"w">>, pid := P2} = event(N, restart),
    ?assertNotEqual(P, P2),
    ?assertMatch(#{pid := P2}, call(N, {get, <<"w">>})),
    ?assertMatch(#{events_sent := 2, subscribers := 1}, call(N, stats)).

only_the_events_subscribed_to_arrive(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"w">>, []),
    ok = tarearbol_cnode:subscribe({?M, N}, [restart]),
    gen_server:cast(P, {crash, x}),
    ?assertMatch(#{id := <<"w">>}, event(N, restart)),
    ok = call(N, restart), %% a state change, not subscribed to
    no_event(N, 300).

escalations_restart_all_then_go_down_with_a_state_event(Config) ->
    N = ?config(node, Config),
    ok = tarearbol_cnode:subscribe({?M, N}, all),
    Crash = fun() -> ok = call(N, {asynch_call, <<"c1">>, {crash, x}}), event(N, crash) end,
    %% max_restarts=1: the second crash in the window restarts every worker.
    Crash(),
    _ = event(N, restart),
    Crash(),
    %% Both workers, the crashed one included.
    ?assertEqual(#{workers => 2, action => restart_all, max_restarts => 1, max_seconds => 30},
                 event(N, escalation)),
    _ = event(N, restart),
    %% The second escalation in the window takes the manager down.
    Crash(),
    _ = event(N, restart),
    Crash(),
    ?assertMatch(#{action := down}, event(N, escalation)),
    ?assertEqual(#{state => down}, event(N, state)),
    ?assertEqual({error, down}, call(N, {get, <<"c1">>})),
    ok = call(N, restart),
    ?assertEqual(#{state => starting}, event(N, state)),
    ?assertEqual(#{state => started}, event(N, state)).

state_events_follow_a_restart(Config) ->
    N = ?config(node, Config),
    ok = tarearbol_cnode:subscribe({?M, N}, [state]),
    ok = tarearbol_cnode:restart({?M, N}),
    ?assertEqual(#{state => starting}, event(N, state)),
    ?assertEqual(#{state => started}, event(N, state)),
    no_event(N, 200).

%% One pool thread: while worker s sleeps, t's perform cannot start.
a_perform_later_than_the_threshold_is_told_at_once(Config) ->
    N = ?config(node, Config),
    ok = tarearbol_cnode:subscribe({?M, N}, [late], #{late_ms => 100, late_interval_ms => 5000}),
    S = worker(N, <<"s">>, []),
    _ = worker(N, <<"t">>, [{timeout, 50}]),
    gen_server:cast(S, {sleep, 600}),
    Late = event(N, late),
    ?assertMatch(#{id := <<"t">>, count := 1, threshold_ms := 100, interval_ms := 5000}, Late),
    ?assert(maps:get(late_us, Late) >= 100000),
    %% Within the interval the rest is only counted.
    gen_server:cast(S, {sleep, 300}),
    no_event(N, 500).

lateness_is_summarised_at_most_once_per_interval(Config) ->
    N = ?config(node, Config),
    Interval = 400,
    ok = tarearbol_cnode:subscribe({?M, N}, [{late, 20, Interval}]),
    S = worker(N, <<"s">>, []),
    [worker(N, integer_to_binary(I), [{timeout, 20}]) || I <- lists:seq(1, 50)],
    %% About two seconds of a pool thread that sleeps 80 ms in every 100:
    %% every worker falls late over and over.
    T0 = erlang:monotonic_time(millisecond),
    [begin gen_server:cast(S, {sleep, 80}), timer:sleep(100) end || _ <- lists:seq(1, 20)],
    Events = collect_late(N, 1500),
    Span = erlang:monotonic_time(millisecond) - T0,
    Counts = [C || #{count := C} <- Events],
    Told = lists:sum(Counts),
    Samples = maps:get(lateness_samples, call(N, stats)),
    ct:pal("~p late events over ~p ms told of ~p late performs (~p performs in all)",
           [length(Events), Span, Told, Samples]),
    %% The first, then at most one an interval (the last may trail by one).
    ?assert(length(Events) >= 2),
    ?assert(length(Events) =< Span div Interval + 2),
    %% Summaries: many late performs told in few messages.
    ?assert(Told > 10 * length(Events)),
    ?assert(lists:all(fun(#{id := Id, late_us := L}) -> is_binary(Id) andalso L >= 20000 end, Events)),
    %% The events were spaced by the interval.
    ok.

collect_late(N, Quiet) ->
    receive {tarearbol_cnode, {?M, N}, late, Map} -> [Map | collect_late(N, Quiet)]
    after Quiet -> []
    end.

a_flood_of_crashes_is_bounded_and_what_was_dropped_is_told(Config) ->
    N = ?config(node, Config),
    ok = tarearbol_cnode:subscribe({?M, N}, [crash]),
    #{children := Children} = call(N, state),
    Pids = [P || #{pid := P} <- maps:values(Children)],
    5000 = length(Pids),
    T0 = erlang:monotonic_time(millisecond),
    [gen_server:cast(P, {crash, flood}) || P <- Pids],
    cnode_test:wait_until(fun() -> maps:get(workers, call(N, stats)) =:= 0 end, 30000),
    Span = erlang:monotonic_time(millisecond) - T0,
    {Got, Told, Msgs} = count_flood(N, {0, 0, 0}, 500),
    #{events_dropped := Dropped, crashes := 5000} = call(N, stats),
    ct:pal("5000 crashes in ~p ms: ~p events delivered, ~p dropped (~p told), ~p messages",
           [Span, Got, Dropped, Told, Msgs]),
    %% Every message, the notices of drops included, comes out of a burst
    %% of 1000 and then 1000 a second.
    ?assert(Msgs =< 1000 + Span + 50, {msgs, Msgs, span, Span}),
    ?assert(Dropped > 0),
    ?assertEqual(5000, Got + Dropped),
    %% Once the budget allows, the next event is followed by the count of
    %% what was dropped and not told yet.
    timer:sleep(1100), %% the budget refills with time: nothing to await
    P = worker(N, <<"last">>, []),
    gen_server:cast(P, {crash, last}),
    ?assertMatch(#{id := <<"last">>}, event(N, crash)),
    case Dropped - Told of
        0 -> no_event(N, 300);
        Rest -> ?assertEqual(#{count => Rest}, event(N, dropped))
    end.

%% {crash events, dropped ones told, messages} until quiet.
count_flood(N, {C, D, K} = Acc, Quiet) ->
    receive
        {tarearbol_cnode, {?M, N}, crash, _} -> count_flood(N, {C + 1, D, K + 1}, Quiet);
        {tarearbol_cnode, {?M, N}, dropped, #{count := X}} -> count_flood(N, {C, D + X, K + 1}, Quiet)
    after Quiet -> Acc
    end.

bad_subscribe_forms_get_clear_errors(Config) ->
    N = ?config(node, Config),
    Me = self(),
    #{pid := Local} = call(N, {get, <<"c1">>}),
    Bad = [{{subscribe, not_a_pid, all}, {error, {bad_pid, not_a_pid}}},
           {{subscribe, Local, all}, {error, {bad_pid, Local}}},
           {{subscribe, Me, [crash, bogus]}, {error, {bad_events, bogus}}},
           {{subscribe, Me, []}, {error, {bad_events, []}}},
           {{subscribe, Me, nope}, {error, {bad_events, nope}}},
           {{subscribe, Me, "crash"}, {error, {bad_events, "crash"}}},
           {{subscribe, Me, [crash | late]}, {error, {bad_events, [crash | late]}}},
           {{subscribe, Me, [{late, 0}]}, {error, {bad_events, {late, 0}}}},
           {{subscribe, Me, [{late, 10, 1}]}, {error, {bad_events, {late, 10, 1}}}},
           {{subscribe, Me, [{late, -5}]}, {error, {bad_events, {late, -5}}}},
           {{subscribe, Me, [{late, 1 bsl 70}]}, {error, {bad_events, {late, 1 bsl 70}}}},
           {{subscribe, Me, [{late, x, y, z}]}, {error, {bad_events, {late, x, y, z}}}},
           {{subscribe, Me, [{crash}]}, {error, {bad_events, {crash}}}},
           {{unsubscribe, <<"pid">>}, {error, {bad_pid, <<"pid">>}}},
           {{subscribe, Me}, {error, {unknown_request, {subscribe, Me}}}}],
    [?assertEqual(Want, call(N, Req)) || {Req, Want} <- Bad],
    ?assertEqual({error, {bad_events, bogus}}, tarearbol_cnode:subscribe({?M, N}, [bogus])),
    ?assertEqual({error, {bad_opts, x}}, tarearbol_cnode:subscribe({?M, N}, all, x)),
    Deep = lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 5000)),
    ?assertEqual({error, {bad_events, [[]]}},
                 call(N, {subscribe, Me, [crash, [[]]]})),
    ?assertEqual({error, {bad_events, Deep}}, call(N, {subscribe, Me, [Deep]})),
    ?assertEqual(0, subscribers(N)),
    %% The node goes on: a good one is taken.
    ok = tarearbol_cnode:subscribe({?M, N}, all),
    ?assertEqual(1, subscribers(N)).

subscribing_again_replaces_the_events(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"w">>, []),
    ok = tarearbol_cnode:subscribe({?M, N}, [crash]),
    ok = tarearbol_cnode:subscribe({?M, N}, [restart]),
    ?assertEqual(1, subscribers(N)),
    gen_server:cast(P, {crash, x}),
    ?assertMatch(#{id := <<"w">>}, event(N, restart)),
    no_event(N, 300).

unsubscribe_stops_the_events(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"w">>, []),
    ok = tarearbol_cnode:subscribe({?M, N}, all),
    ?assertEqual(1, subscribers(N)),
    ok = tarearbol_cnode:unsubscribe({?M, N}),
    ok = tarearbol_cnode:unsubscribe({?M, N}), %% again: still ok
    ?assertEqual(0, subscribers(N)),
    gen_server:cast(P, {crash, x}),
    cnode_test:wait_until(fun() -> maps:get(restarts, call(N, stats)) =:= 1 end, 5000),
    no_event(N, 300).

a_dead_subscriber_is_dropped(Config) ->
    N = ?config(node, Config),
    Me = self(),
    Subs = [spawn(fun() ->
                          ok = tarearbol_cnode:subscribe({?M, N}, all),
                          Me ! {subscribed, self()},
                          receive stop -> ok end
                  end) || _ <- lists:seq(1, 5)],
    [receive {subscribed, S} -> ok after 5000 -> ct:fail(not_subscribed) end || S <- Subs],
    ?assertEqual(5, subscribers(N)),
    [S ! stop || S <- Subs],
    cnode_test:wait_until(fun() -> subscribers(N) =:= 0 end, 5000),
    %% One already dead when it subscribes is dropped as soon as its node
    %% says so.
    Dead = spawn(fun() -> ok end),
    MRef = monitor(process, Dead),
    receive {'DOWN', MRef, _, _, _} -> ok end,
    ok = tarearbol_cnode:subscribe({?M, N}, all, #{pid => Dead}),
    cnode_test:wait_until(fun() -> subscribers(N) =:= 0 end, 5000),
    %% Events after that go to nobody and cost nothing.
    #{pid := P} = call(N, {get, <<"c1">>}),
    gen_server:cast(P, {crash, x}),
    cnode_test:wait_until(fun() -> maps:get(restarts, call(N, stats)) =:= 1 end, 5000),
    ?assertEqual(0, maps:get(events_sent, call(N, stats))).

a_subscriber_on_a_peer_gets_events_and_goes_with_its_node(Config) ->
    N = ?config(node, Config),
    {Peer, PN} = cnode_test:start_peer("events"),
    Me = self(),
    Relay = erpc:call(PN, fun() ->
                                  spawn(fun() ->
                                                %% The wire request: the peer
                                                %% has no tarearbol_cnode app.
                                                ok = gen_server:call({?M, N},
                                                                     {subscribe, self(), [crash]}),
                                                Me ! subscribed,
                                                relay(Me)
                                        end)
                          end),
    receive subscribed -> ok after 10000 -> ct:fail(peer_not_subscribed) end,
    ?assertEqual(PN, node(Relay)),
    #{pid := P} = call(N, {get, <<"c1">>}),
    gen_server:cast(P, {crash, from_peer}),
    receive {relayed, {tarearbol_cnode, {?M, N}, crash, #{reason := from_peer}}} -> ok
    after 5000 -> ct:fail(peer_got_no_event)
    end,
    ?assertEqual(1, subscribers(N)),
    peer:stop(Peer),
    cnode_test:wait_until(fun() -> subscribers(N) =:= 0 end, 10000).

relay(To) ->
    receive M -> To ! {relayed, M}, relay(To) end.

subscribers_are_bounded(Config) ->
    N = ?config(node, Config),
    Me = self(),
    Spawn = fun() ->
                    spawn(fun() ->
                                  Me ! {self(), tarearbol_cnode:subscribe({?M, N}, [crash])},
                                  receive stop -> ok end
                          end)
            end,
    Subs = [Spawn() || _ <- lists:seq(1, 64)],
    [receive {S, R} -> ?assertEqual(ok, R) after 5000 -> ct:fail(no_answer) end || S <- Subs],
    ?assertEqual(64, subscribers(N)),
    Extra = Spawn(),
    receive {Extra, R} -> ?assertEqual({error, too_many_subscribers}, R)
    after 5000 -> ct:fail(no_answer)
    end,
    %% One already there may change its events.
    ?assertEqual(ok, call(N, {subscribe, hd(Subs), all})),
    ?assertEqual(64, subscribers(N)),
    [S ! stop || S <- [Extra | Subs]],
    cnode_test:wait_until(fun() -> subscribers(N) =:= 0 end, 5000).

%% ---- telemetry --------------------------------------------------------------

%% The fake telemetry of the data dir, compiled and on the code path.
load_fake_telemetry(Config) ->
    Priv = ?config(priv_dir, Config),
    %% Kept as .erl.src so that rebar3 does not compile it onto every
    %% suite's code path.
    Src = filename:join(Priv, "telemetry.erl"),
    {ok, _} = file:copy(filename:join(?config(data_dir, Config), "telemetry.erl.src"), Src),
    {ok, telemetry} = compile:file(Src, [{outdir, Priv}, report]),
    true = code:add_patha(Priv),
    {module, telemetry} = code:ensure_loaded(telemetry),
    ok.

telemetry_gets_the_same_events_when_it_is_loaded(Config) ->
    load_fake_telemetry(Config),
    register(telemetry_recorder, self()),
    Opts = cnode_test:launcher_opts("tele", ["counters=counter,children=2,timeout=0"], #{}),
    {ok, N} = tarearbol_cnode:start_node(Opts),
    %% The launcher told the forwarder; it subscribed to everything.
    cnode_test:wait_until(fun() -> lists:member({?M, N}, tarearbol_cnode_telemetry:forwarded()) end,
                          10000),
    cnode_test:wait_until(fun() -> subscribers(N) =:= 1 end, 10000),
    #{pid := P} = call(N, {get, <<"c1">>}),
    gen_server:cast(P, {crash, telemetry_test}),
    receive
        {telemetry, [tarearbol_cnode, crash], Measurements, Metadata} ->
            ?assertEqual(#{count => 1}, Measurements),
            ?assertMatch(#{manager := ?M, node := N, id := <<"c1">>, pid := P,
                           reason := telemetry_test}, Metadata)
    after 5000 -> ct:fail(no_telemetry_crash)
    end,
    receive
        {telemetry, [tarearbol_cnode, restart], #{count := 1}, #{id := <<"c1">>}} -> ok
    after 5000 -> ct:fail(no_telemetry_restart)
    end,
    ok = tarearbol_cnode:restart({?M, N}),
    [receive
         {telemetry, [tarearbol_cnode, state], _, #{state := S}} -> ok
     after 5000 -> ct:fail({no_telemetry_state, S})
     end || S <- [starting, started]],
    unregister(telemetry_recorder).

without_telemetry_nothing_is_forwarded(_Config) ->
    ?assertEqual(non_existing, code:which(telemetry)),
    Opts = cnode_test:launcher_opts("notele", ["counters=counter,children=1,timeout=0"], #{}),
    {ok, N} = tarearbol_cnode:start_node(Opts),
    ?assertEqual({error, no_telemetry}, tarearbol_cnode_telemetry:forward({?M, N})),
    ?assertEqual([], tarearbol_cnode_telemetry:forwarded()),
    ?assertEqual(0, subscribers(N)).
