%% @doc The C node as seen from BEAM: registration, ping, the node service,
%% name and pid dispatch, links, peers, cookies, ticks, epmd and shutdown.
-module(node_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([ping_gives_pong/1,
         info_describes_the_node/1,
         creation_differs_at_every_start/1,
         stats_count_traffic/1,
         requests_read_together_raise_the_mark_a_lone_one_is_still_answered/1,
         unknown_request_gets_error/1,
         call_to_unregistered_name_fails_with_noproc_at_once/1,
         call_by_pid_reaches_the_service/1,
         call_to_dead_local_pid_fails_with_noproc/1,
         link_to_missing_pid_gets_noproc_exit/1,
         link_and_unlink_to_service/1,
         casts_and_plain_messages_are_survived/1,
         a_message_to_an_alias_is_dropped_and_counted/1,
         wrong_cookie_gives_pang_right_one_still_served/1,
         several_peers_at_once/1,
         peer_reconnects_after_disconnect/1,
         silent_peer_is_dropped_after_net_ticktime/1,
         epmd_restart_registers_again/1,
         sigterm_stops_cleanly_and_unregisters/1,
         bad_command_lines_are_refused/1,
         node_stops_when_its_stdin_closes/1,
         cookie_from_home_file/1,
         a_taken_name_exits_1_with_a_clear_message/1,
         a_missing_epmd_is_waited_for_then_the_node_exits_1/1]).

all() ->
    [ping_gives_pong, info_describes_the_node, creation_differs_at_every_start,
     stats_count_traffic,
     requests_read_together_raise_the_mark_a_lone_one_is_still_answered,
     unknown_request_gets_error,
     call_to_unregistered_name_fails_with_noproc_at_once,
     call_by_pid_reaches_the_service, call_to_dead_local_pid_fails_with_noproc,
     link_to_missing_pid_gets_noproc_exit, link_and_unlink_to_service,
     casts_and_plain_messages_are_survived,
     a_message_to_an_alias_is_dropped_and_counted,
     wrong_cookie_gives_pang_right_one_still_served, several_peers_at_once,
     peer_reconnects_after_disconnect,
     silent_peer_is_dropped_after_net_ticktime, epmd_restart_registers_again,
     sigterm_stops_cleanly_and_unregisters, bad_command_lines_are_refused,
     node_stops_when_its_stdin_closes,
     cookie_from_home_file,
     a_taken_name_exits_1_with_a_clear_message,
     a_missing_epmd_is_waited_for_then_the_node_exits_1].

init_per_suite(Config) ->
    true = is_alive(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) -> cnode_test:init_case(Config, []).

%% A test may have stopped the node itself.
end_per_testcase(_Case, Config) -> cnode_test:end_case(Config, if_running).

node_of(Config) -> cnode_test:node(?config(cnode, Config)).

%% ---------------------------------------------------------------------------

ping_gives_pong(Config) ->
    ?assertEqual(pong, net_adm:ping(node_of(Config))).

info_describes_the_node(Config) ->
    N = node_of(Config),
    Info = cnode_test:call(N, info),
    ?assertMatch(#{node := N, version := <<_/binary>>, creation := Cr,
                   uptime_ms := U, port := P, pid := Pid, peers := Peers,
                   managers := []}
                   when is_integer(Cr) andalso Cr >= 4 andalso is_integer(U)
                        andalso is_integer(P) andalso is_pid(Pid)
                        andalso is_list(Peers),
                 Info),
    ?assert(lists:member(node(), maps:get(peers, Info))),
    ?assertEqual(N, node(maps:get(pid, Info))),
    Info2 = tarearbol_cnode:info(N),
    ?assertEqual(maps:get(creation, Info), maps:get(creation, Info2)).

creation_differs_at_every_start(Config) ->
    Dir = ?config(priv_dir, Config),
    Name = cnode_test:unique("again"),
    C1 = cnode_test:start(Name, #{dir => Dir}),
    #{creation := Cr1, pid := P1} = cnode_test:call(C1, info),
    ok = cnode_test:stop(C1),
    C2 = cnode_test:start(Name, #{dir => Dir}),
    #{creation := Cr2, pid := P2} = cnode_test:call(C2, info),
    ok = cnode_test:stop(C2),
    ?assertNotEqual(Cr1, Cr2),
    %% Same node name, same local id: still different pids to BEAM.
    ?assertNotEqual(P1, P2).

stats_count_traffic(Config) ->
    N = node_of(Config),
    S1 = cnode_test:stats(N),
    [_ = cnode_test:call(N, info) || _ <- lists:seq(1, 10)],
    S2 = cnode_test:stats(N),
    ?assert(maps:get(packets_in, S2) >= maps:get(packets_in, S1) + 11),
    ?assert(maps:get(packets_out, S2) >= maps:get(packets_out, S1) + 11),
    ?assert(maps:get(bytes_in, S2) > maps:get(bytes_in, S1)),
    ?assert(maps:get(bytes_out, S2) > maps:get(bytes_out, S1)),
    ?assertEqual(1, maps:get(connections_accepted, S2)),
    Keys = [connections_accepted, connections_closed, packets_in, packets_out,
            bytes_in, bytes_out, ticks_in, ticks_out, bad_packets,
            oversized_packets, unknown_control, unknown_requests,
            handshake_failures, undeliverable, peers_timed_out, reads, monitors,
            lowat_releases],
    [?assert(is_integer(maps:get(K, S2))) || K <- Keys].

%% Requests that reach the node together are read together, and the node
%% then asks the kernel to wake it only for a batch as large (SO_RCVLOWAT).
%% A request that arrives alone afterwards, below that mark, is still
%% answered: the mark drops back once the peer has been quiet.
requests_read_together_raise_the_mark_a_lone_one_is_still_answered(Config) ->
    N = node_of(Config),
    %% One caller: a call is a monitor and a message; the mark never rises.
    Quiet = maps:get(lowat_releases, cnode_test:stats(N)),
    [#{} = cnode_test:call(N, info) || _ <- lists:seq(1, 20)],
    ?assertEqual(Quiet, maps:get(lowat_releases, cnode_test:stats(N))),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    Released0 = maps:get(lowat_releases, cnode_test:stats(N)),
    Reads0 = maps:get(reads, cnode_test:stats(N)),
    Refs = [make_ref() || _ <- lists:seq(1, 4)],
    ok = raw_dist:send_raw(S, [raw_dist:frame({6, From, '', tarearbol_cnode}, {'$gen_call', {From, R}, info})
                               || R <- Refs]),
    [?assertMatch({ok, {_, {R, #{}}}}, raw_dist:recv_until(S, fun({_, {R1, _}}) -> R1 =:= R; (_) -> false end, 5000))
     || R <- Refs],
    ?assertMatch({ok, #{node := N}}, raw_dist:gen_call(S, From, tarearbol_cnode, info, 5000)),
    cnode_test:wait_until(fun() -> maps:get(lowat_releases, cnode_test:stats(N)) > Released0 end, 5000),
    ?assert(maps:get(reads, cnode_test:stats(N)) > Reads0),
    raw_dist:close(S).

unknown_request_gets_error(Config) ->
    N = node_of(Config),
    ?assertEqual({error, {unknown_request, {what, [1, 2], #{a => <<"b">>}}}},
                 cnode_test:call(N, {what, [1, 2], #{a => <<"b">>}})),
    ?assertEqual({error, {unknown_request, 42}}, cnode_test:call(N, 42)),
    ?assertEqual(2, maps:get(unknown_requests, cnode_test:stats(N))).

call_to_unregistered_name_fails_with_noproc_at_once(Config) ->
    N = node_of(Config),
    %% With a 60 s timeout, only an immediate noproc lets this return.
    ?assertExit({noproc, {gen_server, call, [{nobody, N}, x, 60000]}},
                gen_server:call({nobody, N}, x, 60000)),
    ?assertEqual({error, noproc}, gen_server_call_api(N)),
    ?assertEqual(pong, net_adm:ping(N)).

gen_server_call_api(N) ->
    try gen_server:call({nobody_either, N}, x, 60000)
    catch exit:{noproc, _} -> {error, noproc}
    end.

call_by_pid_reaches_the_service(Config) ->
    N = node_of(Config),
    #{pid := Pid} = cnode_test:call(N, info),
    ?assertMatch(#{node := N}, gen_server:call(Pid, info)),
    ?assertMatch(#{packets_in := _}, gen_server:call(Pid, stats)).

call_to_dead_local_pid_fails_with_noproc(Config) ->
    N = node_of(Config),
    #{pid := Pid} = cnode_test:call(N, info),
    Dead = other_pid(Pid, 7777),
    ?assertExit({noproc, _}, gen_server:call(Dead, info, 60000)).

link_to_missing_pid_gets_noproc_exit(Config) ->
    N = node_of(Config),
    #{pid := Pid} = cnode_test:call(N, info),
    Dead = other_pid(Pid, 7778),
    process_flag(trap_exit, true),
    true = link(Dead),
    receive {'EXIT', Dead, R} -> ?assertEqual(noproc, R)
    after 5000 -> ct:fail(no_exit_signal)
    end.

link_and_unlink_to_service(Config) ->
    N = node_of(Config),
    #{pid := Pid} = cnode_test:call(N, info),
    process_flag(trap_exit, true),
    true = link(Pid),
    true = unlink(Pid),
    true = link(Pid),
    %% The service survives exit signals from linked processes.
    exit(Pid, kill_me),
    ?assertMatch(#{node := N}, gen_server:call(Pid, info)),
    receive {'EXIT', Pid, R} -> ct:fail({unexpected_exit, R})
    after 100 -> ok
    end.

casts_and_plain_messages_are_survived(Config) ->
    N = node_of(Config),
    gen_server:cast({tarearbol_cnode, N}, anything),
    {tarearbol_cnode, N} ! {plain, message, lists:seq(1, 100)},
    {net_kernel, N} ! hello,
    {nobody, N} ! hello,
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertMatch(#{undeliverable := U} when U >= 1, cnode_test:stats(N)).

%% The node takes aliases (for its replies) but makes none: BEAM sends a
%% message to a reference of the node as ALIAS_SEND, and it is dropped,
%% as BEAM drops one to an alias that is not active.
a_message_to_an_alias_is_dropped_and_counted(Config) ->
    N = node_of(Config),
    #{creation := Cr} = cnode_test:call(N, info),
    Name = atom_to_binary(N),
    Alias = binary_to_term(<<131, 90, 3:16, 119, (byte_size(Name)), Name/binary,
                             Cr:32, 1:32, 2:32, 3:32>>),
    ?assertEqual(N, node(Alias)),
    #{undeliverable := U0, unknown_control := C0} = cnode_test:stats(N),
    erlang:send(Alias, hello),
    %% From this process too, so it comes after the alias's message.
    #{undeliverable := U1, unknown_control := C1} = cnode_test:stats(N),
    ?assertEqual({U0 + 1, C0}, {U1, C1}).

wrong_cookie_gives_pang_right_one_still_served(Config) ->
    N = node_of(Config),
    {Peer, _} = cnode_test:start_peer("wrongcookie", ["-setcookie", "not_the_cookie"]),
    ?assertEqual(pang, peer:call(Peer, net_adm, ping, [N])),
    ?assertEqual(pang, peer:call(Peer, net_adm, ping, [N])),
    peer:stop(Peer),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertMatch(#{node := N}, cnode_test:call(N, info)),
    ?assert(maps:get(handshake_failures, cnode_test:stats(N)) >= 1).

several_peers_at_once(Config) ->
    N = node_of(Config),
    Peers = [cnode_test:start_peer("many") || _ <- lists:seq(1, 4)],
    Self = self(),
    [spawn_link(fun() -> Self ! {done, P, peer:call(P, cnode_test, info_calls, [N, 200], 30000)} end)
     || {P, _} <- Peers],
    Counts = [receive {done, P, C} -> C after 30000 -> timeout end || {P, _} <- Peers],
    ?assertEqual([200, 200, 200, 200], Counts),
    #{peers := Connected} = cnode_test:call(N, info),
    [?assert(lists:member(PN, Connected)) || {_, PN} <- Peers],
    [peer:stop(P) || {P, _} <- Peers],
    cnode_test:wait_until(fun() ->
        #{peers := Now} = cnode_test:call(N, info),
        Now =:= [node()]
    end, 10000),
    ?assert(maps:get(connections_closed, cnode_test:stats(N)) >= 4).

peer_reconnects_after_disconnect(Config) ->
    N = node_of(Config),
    pong = net_adm:ping(N),
    true = erlang:disconnect_node(N),
    cnode_test:wait_until(fun() -> not lists:member(N, nodes(hidden)) end, 5000),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertMatch(#{connections_accepted := 2}, cnode_test:stats(N)).

silent_peer_is_dropped_after_net_ticktime(Config) ->
    %% A node with a 2 s tick time, and two peers that tick at that rate.
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--net-ticktime", "2"]}),
    N = cnode_test:node(C),
    Tick = ["-kernel", "net_ticktime", "2"],
    {Frozen, _} = cnode_test:start_peer("frozen", Tick),
    {Watcher, _} = cnode_test:start_peer("watcher", Tick),
    pong = peer:call(Frozen, net_adm, ping, [N]),
    pong = peer:call(Watcher, net_adm, ping, [N]),
    FrozenOs = peer:call(Frozen, os, getpid, []),
    Stats = fun() -> peer:call(Watcher, gen_server, call, [{tarearbol_cnode, N}, stats]) end,
    %% A stopped peer left behind would hold the whole run up.
    try
        _ = os:cmd("kill -STOP " ++ FrozenOs),
        #{ticks_in := Ticks0} = Stats(),
        %% BEAM ticks a connection only after a tick period (net_ticktime
        %% / 4, here 500 ms) in which it wrote nothing to it, or read
        %% nothing from a hidden node such as this one. A watcher asking
        %% more often than that never ticks: it looks once a second.
        cnode_test:wait_until(fun() ->
            S = Stats(),
            maps:get(peers_timed_out, S) >= 1 andalso maps:get(ticks_in, S) > Ticks0
        end, 15000, 1000),
        %% The healthy, ticking peer stayed connected throughout.
        S = Stats(),
        ?assertEqual(2, maps:get(connections_accepted, S)),
        ?assertEqual(1, maps:get(connections_closed, S)),
        ?assertEqual(1, maps:get(peers_timed_out, S)),
        ?assert(maps:get(ticks_out, S) >= 1)
    after
        _ = os:cmd("kill -KILL " ++ FrozenOs),
        peer:stop(Watcher),
        catch peer:stop(Frozen)
    end,
    cnode_test:stop(C).

epmd_restart_registers_again(Config) ->
    Port = 4300 + erlang:unique_integer([positive]) rem 60,
    PortS = integer_to_list(Port),
    _ = os:cmd("epmd -port " ++ PortS ++ " -relaxed_command_check -daemon"),
    cnode_test:wait_until(fun() -> cnode_test:epmd_names(Port) =/= down end, 5000),
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      env => [{"ERL_EPMD_PORT", PortS}]}),
    Name = maps:get(name, C),
    try
        ?assert(lists:member(Name, cnode_test:epmd_names(Port))),
        _ = os:cmd("epmd -port " ++ PortS ++ " -kill"),
        cnode_test:wait_until(fun() -> cnode_test:epmd_names(Port) =:= down end, 5000),
        _ = os:cmd("epmd -port " ++ PortS ++ " -relaxed_command_check -daemon"),
        cnode_test:wait_until(fun() ->
            lists:member(Name, cnode_test:epmd_names(Port)) end, 10000)
    after
        cnode_test:stop(C),
        _ = os:cmd("epmd -port " ++ PortS ++ " -kill")
    end,
    ?assert(binary:match(cnode_test:log(C), <<"epmd went away">>) =/= nomatch).

sigterm_stops_cleanly_and_unregisters(Config) ->
    C = ?config(cnode, Config),
    N = cnode_test:node(C),
    Name = maps:get(name, C),
    pong = net_adm:ping(N),
    true = erlang:monitor_node(N, true),
    ?assert(lists:member(Name, cnode_test:epmd_names())),
    ok = cnode_test:stop(C),
    receive {nodedown, N} -> ok after 5000 -> ct:fail(no_nodedown) end,
    ?assertNot(lists:member(Name, cnode_test:epmd_names())),
    ?assert(binary:match(cnode_test:log(C), <<"stopped">>) =/= nomatch).

bad_command_lines_are_refused(_Config) ->
    Bin = cnode_test:bin(),
    Run = fun(Args) ->
              Cmd = "TAREARBOL_CNODE_COOKIE=x " ++ Bin ++ " " ++ Args ++ " 2>&1; echo \"exit=$?\"",
              os:cmd(Cmd)
          end,
    Cases = [{"", "usage"},
             {"--sname", "usage"},
             {"--sname a --name b@h.example", "once"},
             {"--sname a --net-ticktime 0", "net-ticktime"},
             {"--sname a --net-ticktime abc", "net-ticktime"},
             {"--sname a --max-packet -5", "max-packet"},
             {"--sname a --log-level loud", "log level"},
             {"--sname a --bogus", "usage"},
             {"--sname a extra", "unexpected"},
             {"--sname a --listen not.an.ip", "IPv4"},
             {"--sname a --read-coalescing -1", "read-coalescing"},
             {"--sname a --read-coalescing 1048577", "read-coalescing"},
             {"--sname a --read-coalescing 16k", "read-coalescing"},
             {"--sname a --epmd-retry-s soon", "epmd-retry-s"}],
    [begin
         Out = Run(Args),
         ?assert(string:find(Out, Want) =/= nomatch, {Args, Out}),
         ?assertEqual(nomatch, string:find(Out, "exit=0"), {Args, Out})
     end || {Args, Want} <- Cases],
    %% No cookie anywhere: a clear error, not a node with an empty cookie.
    Out = os:cmd("env -u TAREARBOL_CNODE_COOKIE HOME=/nonexistent " ++ Bin ++
                 " --sname nocookie 2>&1; echo \"exit=$?\""),
    ?assert(string:find(Out, "erlang.cookie") =/= nomatch, Out),
    ?assertEqual(nomatch, string:find(Out, "exit=0")).

cookie_from_home_file(Config) ->
    Home = filename:join(?config(priv_dir, Config), "home"),
    ok = filelib:ensure_dir(filename:join(Home, "x")),
    ok = file:write_file(filename:join(Home, ".erlang.cookie"), cnode_test:cookie() ++ "\n"),
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      cookie => "",
                                      env => [{"HOME", Home}]}),
    ?assertEqual(pong, net_adm:ping(cnode_test:node(C))),
    %% The cookie never reaches argv.
    Cmdline = os:cmd("tr '\\0' ' ' < /proc/" ++ integer_to_list(cnode_test:os_pid(C)) ++ "/cmdline"),
    ?assertEqual(nomatch, string:find(Cmdline, cnode_test:cookie())),
    cnode_test:stop(C).

%% A pid of the same node with another id: one that does not exist there.
other_pid(Pid, Id) ->
    <<131, 88, Rest/binary>> = term_to_binary(Pid),
    NodeLen = node_atom_len(Rest),
    <<NodeAtom:NodeLen/binary, _Id:32, Serial:32, Creation:32>> = Rest,
    binary_to_term(<<131, 88, NodeAtom/binary, Id:32, Serial:32, Creation:32>>).

node_atom_len(<<119, L, _/binary>>) -> 2 + L;
node_atom_len(<<118, L:16, _/binary>>) -> 3 + L;
node_atom_len(<<100, L:16, _/binary>>) -> 3 + L.

node_stops_when_its_stdin_closes(Config) ->
    %% The owner of the port dies: the node must not outlive it.
    Self = self(),
    Dir = ?config(priv_dir, Config),
    Pid = spawn(fun() ->
                    C = cnode_test:start(undefined, #{dir => Dir}),
                    Self ! {started, C},
                    receive never -> ok end
                end),
    C = receive {started, X} -> X after 20000 -> ct:fail(not_started) end,
    N = cnode_test:node(C),
    pong = net_adm:ping(N),
    exit(Pid, kill),
    OsPid = integer_to_list(cnode_test:os_pid(C)),
    cnode_test:wait_until(fun() -> os:cmd("kill -0 " ++ OsPid ++ " 2>&1") =/= "" end, 10000),
    ?assertNotEqual(nomatch, binary:match(cnode_test:log(C), <<"standard input closed">>)),
    ?assertNotEqual(nomatch, binary:match(cnode_test:log(C), <<"stopped">>)),
    cnode_test:assert_clean_log(C).

%% A second node under the name of a running one: epmd refuses the name, and
%% the newcomer says so and exits 1 at once (before, it retried for ever);
%% the node that has the name goes on.
a_taken_name_exits_1_with_a_clear_message(Config) ->
    C = ?config(cnode, Config),
    Name = maps:get(name, C),
    Out = os:cmd("TAREARBOL_CNODE_COOKIE=x timeout 20 " ++ cnode_test:bin() ++
                 " --sname " ++ Name ++ " 2>&1; echo \"exit=$?\""),
    ?assert(string:find(Out, "the name " ++ Name) =/= nomatch, Out),
    ?assert(string:find(Out, "is taken") =/= nomatch, Out),
    ?assert(string:find(Out, "exit=1") =/= nomatch, Out),
    ?assertEqual(nomatch, string:find(Out, "READY"), Out),
    ?assertEqual(pong, net_adm:ping(cnode_test:node(C))).

%% No epmd on the port the node is told to use: it says so, waits
%% --epmd-retry-s, then exits 1.
a_missing_epmd_is_waited_for_then_the_node_exits_1(_Config) ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    ok = gen_tcp:close(L), % nothing listens there now
    T0 = erlang:monotonic_time(millisecond),
    Out = os:cmd("ERL_EPMD_PORT=" ++ integer_to_list(Port) ++
                 " TAREARBOL_CNODE_COOKIE=x timeout 30 " ++ cnode_test:bin() ++
                 " --sname " ++ cnode_test:unique("noepmd") ++
                 " --epmd-retry-s 2 2>&1; echo \"exit=$?\""),
    Took = erlang:monotonic_time(millisecond) - T0,
    ?assert(string:find(Out, "epmd is not reachable") =/= nomatch, Out),
    ?assert(string:find(Out, "--epmd-retry-s") =/= nomatch, Out),
    ?assert(string:find(Out, "exit=1") =/= nomatch, Out),
    %% It waited for epmd before giving up (a bound, not a timing target).
    ?assert(Took >= 2000, {Took, Out}).
