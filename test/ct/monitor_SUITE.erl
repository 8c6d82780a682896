%% @doc Monitors on C-node processes. BEAM sends MONITOR_P only to peers
%% whose handshake advertised DFLAG_DIST_MONITOR, which ei's handshake does
%% not, so a raw peer (raw_dist) sends the control messages an OTP peer
%% would send: the monitor fires with the real reason when the worker is
%% deleted, crashes or halts; DEMONITOR_P takes it back; a pid or name that
%% is not there gives noproc at once; a peer's monitors go with it. And,
%% from a real BEAM caller: a call that runs while its worker is deleted
%% exits the caller at once.
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
     a_reply_after_the_caller_timed_out_is_not_delivered].

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
