%% @doc Monitors on C-node processes, from real BEAM processes and from a
%% raw peer. The node advertises DIST_MONITOR and DIST_MONITOR_NAME, so
%% erlang:monitor/2 on a worker, a manager's name or any pid of the node
%% reaches it as MONITOR_P: the 'DOWN' carries the real reason when the
%% worker is deleted (shutdown), crashes (the crash reason) or halts
%% (normal); a pid or name that is not there gives noproc at once; a
%% manager's name is kept across a restart, which keeps the manager; a
%% demonitor takes the monitor back on the node too. Each 'DOWN' is timed
%% from the event and the figure logged (ct:pal). The raw peer (raw_dist)
%% sends the control messages themselves, so the node's side is seen as
%% it is on the wire: the monitor exits it sends, and that a peer's
%% monitors go with it. And a call that runs while its worker is deleted
%% exits the caller at once; a reply after the caller timed out is dropped.
-module(monitor_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(M, counters).

all() ->
    [monitor_then_del_fires_with_shutdown,
     monitor_then_crash_fires_with_the_crash_reason,
     monitor_then_halt_fires_with_normal,
     monitor_on_a_pid_of_an_old_incarnation_fires_noproc_at_once,
     monitor_by_registered_name_is_kept_and_names_it_when_it_fires,
     demonitor_then_crash_fires_nothing,
     a_lost_peers_monitors_are_dropped,
     ten_thousand_monitors_all_fire_when_the_manager_restarts,
     a_call_running_when_its_worker_is_deleted_exits_the_caller_at_once,
     a_reply_after_the_caller_timed_out_is_not_delivered,
     beam_monitor_on_a_deleted_worker_gets_shutdown,
     beam_monitor_on_a_crashed_worker_gets_the_crash_reason,
     beam_monitor_on_a_halted_worker_gets_normal,
     beam_monitor_on_the_pid_of_a_worker_deleted_and_put_again_gets_noproc,
     beam_monitor_on_a_missing_name_gets_noproc,
     beam_monitor_by_name_outlives_a_restart_and_goes_with_the_node,
     beam_demonitor_takes_the_monitor_back_on_the_node,
     beam_process_monitoring_ten_thousand_workers_gets_every_down_on_restart,
     beam_calls_leave_no_monitor_behind].

init_per_testcase(_Case, Config) ->
    cnode_test:init_case(Config, ["--threads", "2",
                                  "--manager", "counters=counter,timeout=0"],
                         ?M).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config).

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).

%% A worker of its own for the case, and its pid.
worker(N, Id) ->
    ok = call(N, {put, Id, [{payload, 0}, {timeout, 0}]}),
    #{pid := P} = call(N, {get, Id}),
    P.

peer(N) ->
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    {S, raw_dist:fake_pid(S, 1)}.

%% MONITOR_P from the raw peer. The node serves each connection in order,
%% but the test's own requests (del, casts) come over another one: a call
%% on the raw connection after the monitor makes sure it is in first.
watch(S, From, Target) ->
    Ref = make_ref(),
    ok = raw_dist:send_frame(S, {19, From, Target, Ref}, none),
    sync(S, From),
    Ref.

unwatch(S, From, Target, Ref) ->
    ok = raw_dist:send_frame(S, {20, From, Target, Ref}, none),
    sync(S, From).

%% MONITOR_P alone, for a target that is not there: its noproc comes back
%% at once, and a sync would read past it.
watch_missing(S, From, Target) ->
    Ref = make_ref(),
    ok = raw_dist:send_frame(S, {19, From, Target, Ref}, none),
    Ref.

sync(S, From) ->
    {ok, _} = raw_dist:gen_call(S, From, tarearbol_cnode, info, 10000),
    ok.

%% The MONITOR_P_EXIT of Ref: {Proc, Reason}.
fired(S, Ref) ->
    case raw_dist:recv_until(S, fun({{21, _, _, R, _}, _}) -> R =:= Ref;
                                   (_) -> false end, 10000) of
        {ok, {{21, Proc, _, Ref, Reason}, none}} -> {Proc, Reason};
        Error -> Error
    end.

%% ---------------------------------------------------------------------------

monitor_then_del_fires_with_shutdown(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    P = worker(N, <<"d">>),
    Ref = watch(S, From, P),
    ok = call(N, {del, <<"d">>}),
    ?assertEqual({P, shutdown}, fired(S, Ref)),
    raw_dist:close(S).

monitor_then_crash_fires_with_the_crash_reason(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    P = worker(N, <<"c">>),
    Ref = watch(S, From, P),
    gen_server:cast(P, {crash, {boom, 42}}),
    ?assertEqual({P, {boom, 42}}, fired(S, Ref)),
    raw_dist:close(S).

monitor_then_halt_fires_with_normal(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    P = worker(N, <<"h">>),
    Ref = watch(S, From, P),
    gen_server:cast(P, halt),
    ?assertEqual({P, normal}, fired(S, Ref)),
    raw_dist:close(S).

%% A C node of its own starts again under the same name: a pid of the old
%% one names a process that is gone for good.
monitor_on_a_pid_of_an_old_incarnation_fires_noproc_at_once(Config) ->
    Args = ["--manager", "counters=counter,timeout=0"],
    Dir = ?config(priv_dir, Config),
    #{node := N, name := Name} = C1 = cnode_test:start(undefined, #{dir => Dir, args => Args}),
    cnode_test:wait_started({?M, N}, 10000),
    Old = worker(N, <<"o">>),
    ok = cnode_test:stop(C1),
    C2 = cnode_test:start(Name, #{dir => Dir, args => Args}),
    try
        cnode_test:wait_started({?M, N}, 10000),
        _ = worker(N, <<"o">>),
        {S, From} = peer(N),
        Ref = watch_missing(S, From, Old),
        ?assertEqual({Old, noproc}, fired(S, Ref)),
        raw_dist:close(S)
    after
        cnode_test:stop(C2)
    end.

%% By name: a live manager's monitor is kept (nothing fires while it
%% serves), DEMONITOR_P takes it back, and a missing name fires noproc
%% naming it.
monitor_by_registered_name_is_kept_and_names_it_when_it_fires(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    Kept = watch(S, From, ?M),
    {ok, #{state := started}} = raw_dist:gen_call(S, From, ?M, state, 10000),
    unwatch(S, From, ?M, Kept),
    Missing = watch_missing(S, From, nobody_here),
    ?assertEqual({nobody_here, noproc}, fired(S, Missing)),
    raw_dist:close(S).

%% DEMONITOR_P, then the worker crashes: nothing fires. A second worker
%% monitored and crashed after it is the barrier: the node sends in order,
%% so the first would have come before the second's.
demonitor_then_crash_fires_nothing(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    A = worker(N, <<"a">>),
    B = worker(N, <<"b">>),
    RefA = watch(S, From, A),
    unwatch(S, From, A, RefA),
    RefB = watch(S, From, B),
    gen_server:cast(A, {crash, first}),
    gen_server:cast(B, {crash, second}),
    {ok, Frame} = raw_dist:recv_until(S, fun({{21, _, _, _, _}, _}) -> true;
                                            (_) -> false end, 10000),
    ?assertMatch({{21, B, From, RefB, second}, none}, Frame),
    raw_dist:close(S).

%% A peer monitors a worker and goes; the worker is deleted after: the
%% node sends nothing for it (counted: no undeliverable packet).
a_lost_peers_monitors_are_dropped(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    P = worker(N, <<"l">>),
    _ = watch(S, From, P),
    raw_dist:close(S),
    cnode_test:wait_until(fun() ->
        #{peers := Peers} = cnode_test:call(N, info),
        length(Peers) =:= 1 end, 5000),
    #{undeliverable := U0} = cnode_test:stats(N),
    ok = call(N, {del, <<"l">>}),
    #{} = call(N, {get, <<"l">>}),
    ?assertEqual(U0, maps:get(undeliverable, cnode_test:stats(N))).

ten_thousand_monitors_all_fire_when_the_manager_restarts(Config) ->
    N = ?config(node, Config),
    {S, From} = peer(N),
    [ok = call(N, {put, integer_to_binary(I), [{timeout, 0}]}) || I <- lists:seq(1, 10000)],
    #{children := Children} = call(N, state),
    Pids = [P || #{pid := P} <- maps:values(Children)],
    ?assertEqual(10000, length(Pids)),
    Refs = [begin
                Ref = make_ref(),
                ok = raw_dist:send_frame(S, {19, From, P, Ref}, none),
                Ref
            end || P <- Pids],
    sync(S, From),
    ok = call(N, restart),
    Want = sets:from_list(Refs),
    Deadline = erlang:monotonic_time(millisecond) + 60000,
    ?assertEqual({0, [shutdown]}, collect(S, Want, Deadline, #{})),
    raw_dist:close(S).

%% Reads monitor exits until every ref in Want has fired or the deadline
%% passes: {refs that did not fire, the reasons seen}.
collect(S, Want, Deadline, Reasons) ->
    case sets:size(Want) of
        0 -> {0, maps:keys(Reasons)};
        Left ->
            T = max(0, Deadline - erlang:monotonic_time(millisecond)),
            case raw_dist:recv_until(S, fun({{21, _, _, _, _}, _}) -> true;
                                           (_) -> false end, T) of
                {ok, {{21, _, _, Ref, Why}, none}} ->
                    collect(S, sets:del_element(Ref, Want), Deadline, Reasons#{Why => true});
                _ -> {Left, maps:keys(Reasons)}
            end
    end.

%% A BEAM caller's call sleeps 5 s on the worker, which is deleted
%% meanwhile: the caller exits with shutdown when the del is served, not
%% when the sleep ends, and no late reply comes.
a_call_running_when_its_worker_is_deleted_exits_the_caller_at_once(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"s">>),
    Self = self(),
    Caller = spawn(fun() -> Self ! {result, catch gen_server:call(P, {sleep, 5000}, 20000)} end),
    cnode_test:wait_until(fun() ->
        maps:get('busy?', call(N, {get, <<"s">>})) =/= nil end, 5000),
    T0 = erlang:monotonic_time(millisecond),
    ok = call(N, {del, <<"s">>}),
    receive
        {result, R} ->
            Took = erlang:monotonic_time(millisecond) - T0,
            ct:pal("a running call's caller exited ~p ms after the del was asked", [Took]),
            ?assertMatch({'EXIT', {shutdown, {gen_server, call, _}}}, R),
            %% Well before the end of the 5 s sleep: the exit came with the del.
            ?assert(Took < 4000, Took)
    after 20000 -> ct:fail({no_result, Caller})
    end.

%% OTP 24+ callers tag a call [alias | Mref] and give the alias up when
%% they time out; the node, whose peer takes aliases, sends the reply to
%% the alias, and BEAM drops it: no stray {Tag, Reply} in the mailbox.
a_reply_after_the_caller_timed_out_is_not_delivered(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"late">>),
    ?assertExit({timeout, {gen_server, call, _}}, gen_server:call(P, {sleep, 300}, 50)),
    %% The worker serves this request after the sleeping one, and its
    %% plain reference tag has it answered by SEND, as a late reply sent
    %% to this process's pid would be: one node's SENDs to one process
    %% arrive in order, so once this answer is in, such a reply is too.
    Ref = make_ref(),
    P ! {'$gen_call', {self(), Ref}, get},
    receive {Ref, 0} -> ok after 10000 -> ct:fail(no_answer) end,
    ?assertEqual({messages, []}, process_info(self(), messages)).

%% ---- erlang:monitor/2 from BEAM ---------------------------------------------

%% The monitors remote processes hold on the node now. Asked with a plain
%% tag: a gen_server:call would hold a monitor of its own meanwhile. From
%% this process, so it comes after this process's monitors and demonitors.
held(N) ->
    Ref = make_ref(),
    {tarearbol_cnode, N} ! {'$gen_call', {self(), Ref}, stats},
    receive {Ref, #{monitors := M}} -> M after 10000 -> error(no_stats) end.

now_us() -> erlang:monotonic_time(microsecond).

%% The 'DOWN' of Ref, and how long after T0 (us) it came, logged as What.
down(Ref, T0, What) ->
    receive
        {'DOWN', Ref, process, Object, Reason} ->
            Ms = (now_us() - T0) / 1000,
            ct:pal("'DOWN' ~s: ~.2f ms (~p)", [What, Ms, Reason]),
            %% The figure to quote is in the log; this bound only catches a
            %% 'DOWN' that waited for something else (a timeout, a tick).
            ?assert(Ms < 2000, Ms),
            {Object, Reason}
    after 10000 -> ct:fail({no_down, What})
    end.

beam_monitor_on_a_deleted_worker_gets_shutdown(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"bd">>),
    Ref = erlang:monitor(process, P),
    T0 = now_us(),
    gen_server:cast({?M, N}, {del, <<"bd">>}),
    ?assertEqual({P, shutdown}, down(Ref, T0, "del")).

beam_monitor_on_a_crashed_worker_gets_the_crash_reason(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"bc">>),
    Ref = erlang:monitor(process, P),
    T0 = now_us(),
    gen_server:cast(P, {crash, {boom, 42}}),
    ?assertEqual({P, {boom, 42}}, down(Ref, T0, "crash")).

beam_monitor_on_a_halted_worker_gets_normal(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"bh">>),
    Ref = erlang:monitor(process, P),
    T0 = now_us(),
    gen_server:cast(P, halt),
    ?assertEqual({P, normal}, down(Ref, T0, "halt")).

%% Deleted and put again, the id has a new worker with a new pid: the old
%% pid names a process that is gone for good.
beam_monitor_on_the_pid_of_a_worker_deleted_and_put_again_gets_noproc(Config) ->
    N = ?config(node, Config),
    Old = worker(N, <<"bo">>),
    ok = call(N, {del, <<"bo">>}),
    New = worker(N, <<"bo">>),
    ?assertNotEqual(Old, New),
    T0 = now_us(),
    Ref = erlang:monitor(process, Old),
    ?assertEqual({Old, noproc}, down(Ref, T0, "old incarnation")),
    %% The new one is monitored as any other.
    Ref2 = erlang:monitor(process, New),
    T1 = now_us(),
    gen_server:cast(New, halt),
    ?assertEqual({New, normal}, down(Ref2, T1, "halt of the new incarnation")).

beam_monitor_on_a_missing_name_gets_noproc(Config) ->
    N = ?config(node, Config),
    T0 = now_us(),
    Ref = erlang:monitor(process, {nobody_here, N}),
    ?assertEqual({{nobody_here, N}, noproc}, down(Ref, T0, "missing name")),
    ?assertEqual(0, held(N)).

%% A restart gives the manager a clean state, but the manager (its pid,
%% its name) stays: a monitor on the name is kept, while its workers'
%% fire. The manager ends with the node, and the monitor then fires as
%% BEAM fires every monitor on a node it loses.
beam_monitor_by_name_outlives_a_restart_and_goes_with_the_node(Config) ->
    Args = ["--manager", "counters=counter,timeout=0"],
    #{node := N} = C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config), args => Args}),
    cnode_test:wait_started({?M, N}, 10000),
    P = worker(N, <<"w">>),
    Ref = erlang:monitor(process, {?M, N}),
    RefW = erlang:monitor(process, P),
    ?assertEqual(2, held(N)),
    TR = now_us(),
    ok = call(N, restart),
    ?assertEqual({P, shutdown}, down(RefW, TR, "restart, for a worker")),
    cnode_test:wait_started({?M, N}, 10000),
    %% Had the name's monitor fired, its 'DOWN' would have come before the
    %% answer to held/1: the node sends in order.
    ?assertEqual(1, held(N)),
    ?assertEqual({messages, []}, process_info(self(), messages)),
    %% stop/1 waits for the exit: another process runs it, this one times
    %% the 'DOWN' from the moment the stop was asked for.
    Self = self(),
    T0 = now_us(),
    spawn_link(fun() -> Self ! {stopped, cnode_test:stop(C)} end),
    ?assertEqual({{?M, N}, noconnection}, down(Ref, T0, "node stop, by name")),
    receive {stopped, R} -> ?assertEqual(ok, R) after 30000 -> ct:fail(not_stopped) end.

%% A demonitor reaches the node (DEMONITOR_P) and the node lets the
%% monitor go. BEAM alone already keeps a 'DOWN' from a monitor taken
%% back out of the mailbox, so the node's side is read from its gauge;
%% the worker's crash is still followed by a barrier: another worker's
%% 'DOWN', which the node sends after anything the crash made it send.
beam_demonitor_takes_the_monitor_back_on_the_node(Config) ->
    N = ?config(node, Config),
    A = worker(N, <<"da">>),
    Base = held(N),
    RefA = erlang:monitor(process, A),
    ?assertEqual(Base + 1, held(N)),
    true = erlang:demonitor(RefA),
    ?assertEqual(Base, held(N)),
    gen_server:cast(A, {crash, first}),
    %% Restarted (a permanent worker): the crash has been dealt with.
    cnode_test:wait_until(fun() ->
        case call(N, {get, <<"da">>}) of
            #{pid := A2} -> A2 =/= A;
            _ -> false
        end end, 5000),
    B = worker(N, <<"db">>),
    RefB = erlang:monitor(process, B),
    gen_server:cast({?M, N}, {del, <<"db">>}),
    receive
        {'DOWN', R, process, _, _} = Down ->
            ?assertEqual(RefB, R, Down)
    after 10000 -> ct:fail(no_down)
    end,
    ?assertEqual(Base, held(N)).

beam_process_monitoring_ten_thousand_workers_gets_every_down_on_restart(Config) ->
    N = ?config(node, Config),
    [ok = call(N, {put, integer_to_binary(I), [{timeout, 0}]}) || I <- lists:seq(1, 10000)],
    #{children := Children} = call(N, state),
    Pids = [P || #{pid := P} <- maps:values(Children)],
    ?assertEqual(10000, length(Pids)),
    Refs = [erlang:monitor(process, P) || P <- Pids],
    ?assertEqual(10000, held(N)),
    T0 = now_us(),
    ok = call(N, restart),
    Want = maps:from_list([{R, true} || R <- Refs]),
    {Left, Reasons, LastUs} = collect_downs(Want, #{}, T0, erlang:monotonic_time(millisecond) + 60000),
    ct:pal("10000 'DOWN' on restart: the last ~.1f ms after the restart was asked", [LastUs / 1000]),
    ?assertEqual({0, [shutdown]}, {Left, Reasons}),
    ?assertEqual(0, held(N)).

collect_downs(Want, Reasons, T0, _Deadline) when map_size(Want) =:= 0 ->
    {0, maps:keys(Reasons), now_us() - T0};
collect_downs(Want, Reasons, T0, Deadline) ->
    T = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {'DOWN', Ref, process, _, Why} when is_map_key(Ref, Want) ->
            collect_downs(maps:remove(Ref, Want), Reasons#{Why => true}, T0, Deadline)
    after T -> {map_size(Want), maps:keys(Reasons), now_us() - T0}
    end.

%% Every gen_server call from BEAM monitors its callee (a worker by pid,
%% a manager by name) and takes the monitor back after the answer, or
%% when it times out: none is left on the node.
beam_calls_leave_no_monitor_behind(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"lc">>),
    Base = held(N),
    [0 = gen_server:call(P, get) || _ <- lists:seq(1, 50)],
    [#{} = call(N, {get, <<"lc">>}) || _ <- lists:seq(1, 50)],
    {error, {unknown_request, x}} = call(N, x),
    ?assertExit({timeout, _}, gen_server:call(P, {sleep, 200}, 20)),
    %% Served after the sleeping call: the caller that timed out has long
    %% taken its monitor back.
    0 = gen_server:call(P, get),
    ?assertEqual(Base, held(N)).
