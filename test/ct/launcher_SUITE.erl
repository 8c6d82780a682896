%% @doc The launcher as a state machine: it never holds its caller's
%% start, it gives a flapping binary up to its supervisor after a bound,
%% its stop ends the OS process by closing the port, and it leaves
%% distribution alone unless asked.
-module(launcher_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [application_start_returns_before_the_node_is_ready,
     start_node_returns_once_the_node_is_ready,
     a_binary_that_keeps_dying_escalates_to_its_supervisor,
     stopping_the_launcher_closes_the_port_and_the_node_exits,
     distribution_is_not_started_unless_asked,
     node_logs_reach_the_default_handler_once_with_their_metadata].

init_per_suite(Config) -> cnode_test:app_init_suite(Config).
end_per_suite(Config) -> cnode_test:app_end_suite(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> cnode_test:app_end_case(Config).

opts(Extra) -> cnode_test:launcher_opts("launcher", ["counters=counter,children=1,timeout=100"], Extra).

%% A binary that waits for the file Gate before it execs the real one: the
%% node cannot print READY before the test lets it. It gives up after
%% about 30 s so that no script outlives a failed test for long.
gated_binary(Config, Gate) ->
    script(Config, "gated",
           "i=0\n"
           "while [ ! -e '" ++ Gate ++ "' ]; do\n"
           "  i=$((i+1)); [ $i -gt 1500 ] && exit 2; sleep 0.02\n"
           "done\n"
           "exec '" ++ cnode_test:bin() ++ "' \"$@\"\n").

script(Config, Prefix, Body) ->
    Path = filename:join(?config(priv_dir, Config), cnode_test:unique(Prefix) ++ ".sh"),
    ok = file:write_file(Path, "#!/bin/sh\n" ++ Body),
    ok = file:change_mode(Path, 8#755),
    Path.

launcher_of(Name) ->
    [L] = [P || {{launcher, N}, P, _, _} <- supervisor:which_children(tarearbol_cnode_sup), N =:= Name],
    L.

alive(OsPid) -> filelib:is_dir("/proc/" ++ integer_to_list(OsPid)).

%% ---------------------------------------------------------------------------

application_start_returns_before_the_node_is_ready(Config) ->
    Gate = filename:join(?config(priv_dir, Config), cnode_test:unique("gate")),
    O = opts(#{binary => gated_binary(Config, Gate)}),
    ok = application:stop(tarearbol_cnode),
    ok = application:set_env(tarearbol_cnode, nodes, [O]),
    try
        %% Were init to wait for READY, this would hang until the gate
        %% opens, which only happens below.
        {ok, _} = application:ensure_all_started(tarearbol_cnode),
        L = launcher_of(maps:get(name, O)),
        ?assertMatch(#{state := launching, node := undefined, restarts := 0},
                     tarearbol_cnode_launcher:info(L)),
        ok = file:write_file(Gate, <<>>),
        {ok, N} = tarearbol_cnode_launcher:await_ready(L, 20000),
        ?assertMatch(#{state := ready, node := N}, tarearbol_cnode_launcher:info(L)),
        ?assertMatch(#{node := N}, tarearbol_cnode:info(N))
    after
        ok = application:stop(tarearbol_cnode),
        ok = application:unset_env(tarearbol_cnode, nodes),
        {ok, _} = application:ensure_all_started(tarearbol_cnode)
    end.

start_node_returns_once_the_node_is_ready(Config) ->
    Gate = filename:join(?config(priv_dir, Config), cnode_test:unique("gate")),
    #{name := Name} = O = opts(#{binary => gated_binary(Config, Gate)}),
    Self = self(),
    Caller = spawn_link(fun() -> Self ! {started, self(), tarearbol_cnode:start_node(O)} end),
    %% The launcher answers while its node is still launching: it is not
    %% blocked, and the caller of start_node is the one who waits.
    L = cnode_test:wait_until(fun() ->
            case [P || {{launcher, N}, P, _, _} <- supervisor:which_children(tarearbol_cnode_sup), N =:= Name] of
                [P] -> {true, P};
                [] -> false
            end end, 5000),
    ?assertMatch(#{state := launching}, tarearbol_cnode_launcher:info(L)),
    receive {started, Caller, Early} -> ct:fail({start_node_returned_before_ready, Early})
    after 0 -> ok
    end,
    ok = file:write_file(Gate, <<>>),
    receive
        {started, Caller, Result} ->
            {ok, N} = Result,
            ?assertEqual(Name, hd(string:split(atom_to_list(N), "@"))),
            ?assertMatch(#{state := ready, node := N}, tarearbol_cnode_launcher:info(L)),
            ?assertMatch(#{node := N}, tarearbol_cnode:info(N))
    after 20000 ->
        ct:fail(start_node_did_not_return)
    end.

a_binary_that_keeps_dying_escalates_to_its_supervisor(Config) ->
    Dying = script(Config, "dying", "exit 1\n"),
    {ok, Sup} = supervisor:start_link(?MODULE, test_sup),
    O = opts(#{binary => Dying, max_restarts => 3, restart_window_s => 10,
               backoff_ms => 200, max_backoff_ms => 1000}),
    Spec = tarearbol_cnode_sup:launcher_spec(O),
    {ok, L} = supervisor:start_child(Sup, Spec),
    Ref = monitor(process, L),
    {Reason, Seen} = watch(L, Ref, [], erlang:monotonic_time(millisecond) + 20000),
    ?assertMatch({too_many_restarts, #{max_restarts := 3, within_s := 10,
                                       last_exit := {exit_status, 1, _}}}, Reason),
    %% Each restart in the window was visible while the launcher backed
    %% off, and it never went past the bound.
    Restarts = lists:usort([R || {backoff, R} <- Seen]),
    ?assertEqual(3, lists:max(Restarts), Seen),
    ?assert(lists:all(fun(R) -> R >= 1 andalso R =< 3 end, Restarts), Seen),
    %% The supervisor saw the exit: it started a new launcher.
    cnode_test:wait_until(fun() ->
        case supervisor:which_children(Sup) of
            [{_, P, _, _}] when is_pid(P) -> P =/= L;
            _ -> false
        end end, 5000),
    unlink(Sup),
    SupRef = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', SupRef, process, Sup, _} -> ok after 15000 -> ct:fail(sup_did_not_stop) end.

%% Polls the launcher's info until it stops or the deadline passes;
%% returns its exit reason and the {State, Restarts} seen, in order.
watch(L, Ref, Seen, Deadline) ->
    receive
        {'DOWN', Ref, process, L, Reason} -> {Reason, lists:reverse(Seen)}
    after 5 ->
        case erlang:monotonic_time(millisecond) > Deadline of
            true -> ct:fail({launcher_did_not_give_up, lists:reverse(Seen)});
            false ->
                Seen1 = try tarearbol_cnode_launcher:info(L) of
                            #{state := S, restarts := R} -> [{S, R} | Seen]
                        catch exit:_ -> Seen
                        end,
                watch(L, Ref, Seen1, Deadline)
        end
    end.

%% supervisor callback for the test above: restarts are allowed, so a
%% launcher that exits is started again.
init(test_sup) ->
    {ok, {#{strategy => one_for_one, intensity => 10, period => 60}, []}}.

stopping_the_launcher_closes_the_port_and_the_node_exits(_Config) ->
    #{name := Name} = O = opts(#{}),
    {ok, N} = tarearbol_cnode:start_node(O),
    L = launcher_of(Name),
    #{state := ready, os_pid := OsPid, port := Port} = tarearbol_cnode_launcher:info(L),
    ?assert(alive(OsPid)),
    ?assertEqual(pong, net_adm:ping(N)),
    ok = tarearbol_cnode:stop_node(Name),
    ?assertEqual(undefined, erlang:port_info(Port)),
    cnode_test:wait_until(fun() -> not alive(OsPid) end, 10000),
    ?assertNot(lists:member(Name, cnode_test:epmd_names())).

distribution_is_not_started_unless_asked(_Config) ->
    %% A peer with no node name, driven over stdio, that does not ask for
    %% distribution: start_node fails clearly, leaves no launcher behind
    %% and the peer stays undistributed.
    Ebin = filename:dirname(code:which(tarearbol_cnode)),
    {ok, P, nonode@nohost} = peer:start(#{connection => standard_io, args => ["-pa", Ebin]}),
    try
        {ok, _} = peer:call(P, application, ensure_all_started, [tarearbol_cnode]),
        ?assertEqual({error, not_distributed},
                     peer:call(P, tarearbol_cnode, start_node,
                               [#{name => cnode_test:unique("nd"), binary => cnode_test:bin()}], 30000)),
        ?assertEqual(false, peer:call(P, erlang, is_alive, [])),
        ?assertEqual([], peer:call(P, supervisor, which_children, [tarearbol_cnode_sup]))
    after
        peer:stop(P)
    end.

%% A handler configured as OTP's default one (its filters drop events of
%% an unknown domain) receives the node's lines, each with one time and
%% one level (logger's), and the node, manager, worker and C source
%% location as metadata.
node_logs_reach_the_default_handler_once_with_their_metadata(Config) ->
    Path = filename:join(?config(priv_dir, Config), "default_handler.log"),
    Template = [level, "|", {node, [node], ["-"]}, "|", {manager, [manager], ["-"]}, "|",
                {worker, [worker], ["-"]}, "|", {file, [file, ":", line], ["-"]}, "|", msg, "\n"],
    ok = logger:add_handler(default_like, logger_std_h,
                            #{config => #{type => {file, Path}},
                              filter_default => stop,
                              filters => [{remote_gl, {fun logger_filters:remote_gl/2, stop}},
                                          {domain, {fun logger_filters:domain/2, {log, super, [otp, sasl]}}},
                                          {no_domain, {fun logger_filters:domain/2, {log, undefined, []}}}],
                              formatter => {logger_formatter, #{template => Template, single_line => true}}}),
    #{level := Primary} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, info),
    try
        {ok, N} = tarearbol_cnode:start_node(opts(#{})),
        cnode_test:wait_started({counters, N}, 5000),
        ok = tarearbol_cnode:put({counters, N}, w1, [{payload, 0}, {timeout, 0}]),
        _ = tarearbol_cnode:synch_call({counters, N}, w1, {crash, boom}),
        NodeS = atom_to_list(N),
        Crash = "warning|" ++ NodeS ++ "|counters|w1|supervisor.c:",
        Read = fun() -> {ok, B} = file:read_file(Path), B end,
        cnode_test:wait_until(fun() -> binary:match(Read(), list_to_binary(Crash)) =/= nomatch end, 5000),
        Log = Read(),
        ct:log("~s", [Log]),
        [SName, _] = string:split(NodeS, "@"),
        Lines = [L || L <- binary:split(Log, <<"\n">>, [global]), binary:match(L, list_to_binary(SName)) =/= nomatch],
        ?assertMatch([_, _ | _], Lines),
        %% The manager's line from manager.c comes before READY: the node
        %% is known by its short name then.
        ?assert(lists:any(fun(L) -> nomatch =/= string:find(L, "info|-|counters|-|manager.c:") end, Lines)),
        ?assert(lists:any(fun(L) -> nomatch =/= string:find(L, "info|" ++ NodeS ++ "|-|-|handshake.c:") end, Lines)),
        %% No line carries the node's own time and level in its message.
        ?assertEqual([], [L || L <- Lines,
                               re:run(L, "[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} (debug|info|warning|error) ") =/= nomatch])
    after
        ok = logger:set_primary_config(level, Primary),
        ok = logger:remove_handler(default_like)
    end.
