%% @doc Hostile input from raw sockets and hand-made distribution frames:
%% the node logs, counts and survives it, and keeps serving everyone else.
-module(hostile_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [garbage_before_handshake_is_refused_and_counted,
     half_open_handshake_is_closed_after_the_timeout,
     wrong_cookie_from_a_raw_client_is_refused,
     oversized_length_prefix_closes_only_that_connection,
     truncated_packet_then_silence_is_dropped,
     undecodable_control_is_counted_and_survived,
     unknown_control_tag_is_counted_and_survived,
     control_with_wrong_shapes_is_counted_and_survived,
     deeply_nested_request_is_answered_without_recursion,
     unlink_id_is_acknowledged,
     link_from_raw_peer_to_missing_pid_gets_noproc,
     signals_claiming_a_sender_on_another_node_are_refused,
     many_connects_and_disconnects,
     stalled_handshakes_do_not_hold_up_real_peers,
     past_max_pending_handshakes_the_oldest_is_dropped,
     a_silent_handshake_times_out_and_is_counted,
     a_peer_lacking_a_mandatory_flag_is_refused_and_the_flag_logged,
     out_of_file_descriptors_accepting_backs_off_and_resumes
     | mistakes()].

%% A user's mistakes on the command line: each is refused at start, exit
%% status 1, in one line that says what to fix, and nothing after it. No
%% node is started for them.
mistakes() ->
    [a_misspelt_behaviour_option_is_refused_by_name,
     an_option_of_a_behaviour_that_takes_none_is_refused,
     a_shared_object_behaviour_declares_its_options_too,
     a_failed_shared_object_load_prints_one_line,
     a_shared_object_named_without_a_slash_suggests_dot_slash,
     a_shared_object_built_against_the_old_header_still_loads].

%% The open files the node may have in out_of_file_descriptors_...: about
%% a dozen are its own (stdio, the loop, the listen and epmd sockets).
-define(NOFILE, 32).

%% This node talks to the C node through raw connections or short-lived
%% calls; its own 60 s tick would outlive the C node's 4 s one.
%% Stalled handshakes are held for as long as the test needs them, and the
%% BEAM peers tick at their own 60 s pace.
init_per_testcase(stalled_handshakes_do_not_hold_up_real_peers, Config) ->
    cnode_test:init_case(Config, ["--handshake-timeout", "60000"]);
init_per_testcase(past_max_pending_handshakes_the_oldest_is_dropped, Config) ->
    cnode_test:init_case(Config, ["--handshake-timeout", "60000",
                                  "--max-pending-handshakes", "5"]);
init_per_testcase(out_of_file_descriptors_accepting_backs_off_and_resumes, Config) ->
    %% Held connections stay pending handshakes; this node's own
    %% connection ticks at the default 60 s, like the node's.
    #{node := N} = C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                                     args => ["--handshake-timeout", "60000"],
                                                     nofile => ?NOFILE}),
    [{cnode, C}, {node, N} | Config];
init_per_testcase(Case, Config) ->
    case lists:member(Case, mistakes()) of
        true -> Config;
        false -> init_noisy_case(Config)
    end.

init_noisy_case(Config) ->
    cnode_test:init_case(Config, ["--max-packet", "65536",
                                  "--handshake-timeout", "1000",
                                  "--net-ticktime", "4"]).

end_per_testcase(Case, Config) ->
    case lists:member(Case, mistakes()) of
        true -> ok;
        false -> cnode_test:end_case(Config)
    end.

port(N) ->
    [Alive, Host] = string:split(atom_to_list(N), "@"),
    {port, P, _} = erl_epmd:port_please(Alive, Host),
    P.

%% Stats over a fresh raw connection, so the test node's own connection
%% never needs to tick.
stats(N) ->
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    {ok, R} = raw_dist:gen_call(S, raw_dist:fake_pid(S, 1), tarearbol_cnode, stats, 5000),
    raw_dist:close(S),
    R.

assert_serving(N) ->
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    ?assertMatch({ok, #{node := N}},
                 raw_dist:gen_call(S, raw_dist:fake_pid(S, 1), tarearbol_cnode, info, 5000)),
    raw_dist:close(S).

closed(Sock, Timeout) ->
    case gen_tcp:recv(Sock, 0, Timeout) of
        {error, closed} -> true;
        {ok, _} -> closed(Sock, Timeout);
        Other -> Other
    end.

%% ---------------------------------------------------------------------------

garbage_before_handshake_is_refused_and_counted(Config) ->
    N = ?config(node, Config),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, port(N), [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"GET / HTTP/1.1\r\nHost: x\r\n\r\n">>),
    ?assertEqual(true, closed(S, 5000)),
    assert_serving(N),
    ?assert(maps:get(handshake_failures, stats(N)) >= 1).

half_open_handshake_is_closed_after_the_timeout(Config) ->
    N = ?config(node, Config),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, port(N), [binary, {active, false}]),
    ok = gen_tcp:send(S, <<0, 20, $N>>), % a send_name cut short, then silence
    ?assertEqual(true, closed(S, 5000)),
    assert_serving(N).

wrong_cookie_from_a_raw_client_is_refused(Config) ->
    N = ?config(node, Config),
    ?assertMatch({error, _}, raw_dist:connect(N, not_the_cookie, #{})),
    assert_serving(N),
    ?assert(maps:get(handshake_failures, stats(N)) >= 1).

oversized_length_prefix_closes_only_that_connection(Config) ->
    N = ?config(node, Config),
    {ok, Other} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    ok = raw_dist:send_raw(S, <<65537:32, 112>>),
    ?assertEqual(true, closed(S, 5000)),
    ?assertMatch({ok, #{node := N}},
                 raw_dist:gen_call(Other, raw_dist:fake_pid(Other, 1), tarearbol_cnode, info, 5000)),
    raw_dist:close(Other),
    ?assertEqual(1, maps:get(oversized_packets, stats(N))).

truncated_packet_then_silence_is_dropped(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    ok = raw_dist:send_raw(S, <<1000:32, 112, 131, 104>>),
    %% Silent past net_ticktime (4 s): dropped, the half packet freed.
    ?assertEqual(true, closed(S, 10000)),
    assert_serving(N),
    ?assert(maps:get(peers_timed_out, stats(N)) >= 1).

undecodable_control_is_counted_and_survived(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    Bad = [<<112, 131, 255, 1, 2>>,                        % unknown tag
           <<112, 131, 104, 3, 97, 2>>,                    % tuple cut short
           <<112, 131, 108, 255, 255, 255, 255, 106>>,     % list longer than the packet
           <<112>>,                                        % nothing after 112
           <<113, 131, 106>>,                              % not a pass-through packet
           <<112, 131, 80, 0, 0, 0, 10, 1, 2, 3>>],        % compressed term
    [ok = raw_dist:send_raw(S, <<(byte_size(B)):32, B/binary>>) || B <- Bad],
    ?assertMatch({ok, #{node := N}},
                 raw_dist:gen_call(S, raw_dist:fake_pid(S, 1), tarearbol_cnode, info, 5000)),
    raw_dist:close(S),
    ?assert(maps:get(bad_packets, stats(N)) >= length(Bad)).

unknown_control_tag_is_counted_and_survived(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    ok = raw_dist:send_frame(S, {99, whatever}, none),
    ok = raw_dist:send_frame(S, {29, a, b, c, d, e, f}, none), % spawn request
    ?assertMatch({ok, #{node := N}},
                 raw_dist:gen_call(S, raw_dist:fake_pid(S, 1), tarearbol_cnode, info, 5000)),
    raw_dist:close(S),
    ?assertEqual(2, maps:get(unknown_control, stats(N))).

control_with_wrong_shapes_is_counted_and_survived(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    Frames = [{{6, not_a_pid, '', tarearbol_cnode}, hello},
              {{6, From, '', <<"name as binary">>}, hello},
              {{2, '', From}, none},                % SEND without a message
              {{1, From}, none},                    % LINK of the wrong arity
              {{35, not_an_id, From, From}, none},
              {{3, From, From}, none}],             % EXIT without a reason
    [ok = raw_dist:send_frame(S, Ctl, Msg) || {Ctl, Msg} <- Frames],
    %% Right shapes, wrong targets: messages to nobody are dropped.
    ok = raw_dist:send_frame(S, {6, From, '', nobody_here}, hello),
    ok = raw_dist:send_frame(S, {2, '', From}, {'$gen_cast', x}),
    ?assertMatch({ok, #{node := N}}, raw_dist:gen_call(S, From, tarearbol_cnode, info, 5000)),
    raw_dist:close(S),
    St = stats(N),
    ?assert(maps:get(bad_packets, St) >= length(Frames), St),
    ?assert(maps:get(undeliverable, St) >= 2, St).

deeply_nested_request_is_answered_without_recursion(Config) ->
    N = ?config(node, Config),
    Deep = lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 10000)),
    %% 10k levels fit the 64 KiB limit of this node; ei's recursive decoders
    %% would still be at risk, the node's bounded walker is not.
    ?assertEqual({error, {unknown_request, Deep}},
                 gen_server:call({tarearbol_cnode, N}, Deep, 10000)),
    erlang:disconnect_node(N),
    assert_serving(N).

unlink_id_is_acknowledged(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    {ok, #{pid := Service}} = raw_dist:gen_call(S, From, tarearbol_cnode, info, 5000),
    ok = raw_dist:send_frame(S, {1, From, Service}, none),
    ok = raw_dist:send_frame(S, {35, 4242, From, Service}, none),
    ?assertMatch({ok, {{36, 4242, Service, From}, none}},
                 raw_dist:recv_until(S, fun({{36, _, _, _}, _}) -> true; (_) -> false end, 5000)),
    raw_dist:close(S).

link_from_raw_peer_to_missing_pid_gets_noproc(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    {ok, #{pid := Service}} = raw_dist:gen_call(S, From, tarearbol_cnode, info, 5000),
    Missing = other_pid(Service, 31000),
    ok = raw_dist:send_frame(S, {1, From, Missing}, none),
    ?assertMatch({ok, {{3, Missing, From, noproc}, none}},
                 raw_dist:recv_until(S, fun({{3, _, _, _}, _}) -> true; (_) -> false end, 5000)),
    raw_dist:close(S).

%% A peer sends links, unlinks and exit signals from pids of 300 made-up
%% nodes: each is refused and counted (the node would otherwise keep every
%% such node name for ever), and a link from the peer's own pid is served
%% as before, after them.
signals_claiming_a_sender_on_another_node_are_refused(Config) ->
    N = ?config(node, Config),
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
    From = raw_dist:fake_pid(S, 1),
    {ok, #{pid := Service}} = raw_dist:gen_call(S, From, tarearbol_cnode, info, 5000),
    #{foreign_senders := Before} = stats(N),
    Missing = other_pid(Service, 31000),
    Foreign = [foreign_pid(K) || K <- lists:seq(1, 300)],
    [ok = raw_dist:send_frame(S, Control, none)
     || F <- Foreign,
        Control <- [{1, F, Missing}, {4, F, Service}, {8, F, Service, kill}]],
    ok = raw_dist:send_frame(S, {1, From, Missing}, none),
    %% The first exit that comes back answers the peer's own link.
    ?assertMatch({ok, {{3, Missing, From, noproc}, none}},
                 raw_dist:recv_until(S, fun({{3, _, _, _}, _}) -> true; (_) -> false end, 5000)),
    ?assertEqual(Before + 900, maps:get(foreign_senders, stats(N))),
    assert_serving(N),
    raw_dist:close(S).

foreign_pid(K) ->
    Name = list_to_binary("elsewhere" ++ integer_to_list(K) ++ "@nohost"),
    binary_to_term(<<131, 88, 119, (byte_size(Name)), Name/binary, 1:32, 0:32, 1:32>>).

many_connects_and_disconnects(Config) ->
    N = ?config(node, Config),
    [begin
         {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{}),
         raw_dist:close(S)
     end || _ <- lists:seq(1, 1000)],
    assert_serving(N),
    St = stats(N),
    ?assert(maps:get(connections_accepted, St) >= 1001),
    #{peers := Peers} = cnode_test:call(N, info),
    ?assert(length(Peers) =< 2, Peers).

other_pid(Pid, Id) ->
    <<131, 88, Rest/binary>> = term_to_binary(Pid),
    L = case Rest of
            <<119, L0, _/binary>> -> 2 + L0;
            <<T, L0:16, _/binary>> when T =:= 118; T =:= 100 -> 3 + L0
        end,
    <<NodeAtom:L/binary, _:32, Serial:32, Creation:32>> = Rest,
    binary_to_term(<<131, 88, NodeAtom/binary, Id:32, Serial:32, Creation:32>>).

%% ---------------------------------------------------------------------------
%% Handshakes run side by side, on the loop.

silent(N) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, port(N), [binary, {active, false}]),
    S.

%% A connection that sends a send_name's length prefix and then one byte a
%% second, for ever: each byte keeps it alive, none completes it.
trickler(N) ->
    Parent = self(),
    spawn_link(fun() ->
                       S = silent(N),
                       Parent ! {self(), connected},
                       trickle(S, [0, 200, $N])
               end).

trickle(S, Bytes) ->
    {B, Rest} = case Bytes of [H | T] -> {H, T}; [] -> {0, []} end,
    _ = gen_tcp:send(S, <<B>>),
    receive stop -> gen_tcp:close(S)
    after 1000 -> trickle(S, Rest)
    end.

pending(N) -> maps:get(handshakes_pending, stats(N)).

%% 100 silent and 100 trickling connections hold handshakes open while 10
%% BEAM peers connect: each ping pongs at once. With one handshake at a
%% time, each stalled connection held every later one for the whole
%% handshake timeout (60 s here).
stalled_handshakes_do_not_hold_up_real_peers(Config) ->
    N = ?config(node, Config),
    Silent = [silent(N) || _ <- lists:seq(1, 100)],
    Tricklers = [trickler(N) || _ <- lists:seq(1, 100)],
    [receive {T, connected} -> ok after 5000 -> error(trickler_not_connected) end
     || T <- Tricklers],
    cnode_test:wait_until(fun() -> pending(N) >= 200 end, 10000),
    Peers = [cnode_test:start_peer("hs_peer") || _ <- lists:seq(1, 10)],
    Self = self(),
    [spawn_link(fun() ->
                        T0 = erlang:monotonic_time(millisecond),
                        R = peer:call(Peer, net_adm, ping, [N], 30000),
                        Self ! {pinged, PeerNode, R, erlang:monotonic_time(millisecond) - T0}
                end) || {Peer, PeerNode} <- Peers],
    Results = [receive {pinged, PN, R, Ms} -> {R, Ms} after 40000 -> error({no_ping, PN}) end
               || {_, PN} <- Peers],
    ct:pal("pings: ~p", [Results]),
    [?assertEqual(pong, R) || {R, _} <- Results],
    [?assert(Ms < 10000, {slow_ping, Ms}) || {_, Ms} <- Results],
    %% The stalled ones were still pending all along.
    ?assert(pending(N) >= 200),
    [peer:stop(Peer) || {Peer, _} <- Peers],
    [gen_tcp:close(S) || S <- Silent],
    [T ! stop || T <- Tricklers],
    cnode_test:wait_until(fun() -> pending(N) =:= 0 end, 10000),
    ?assert(maps:get(handshakes_completed, stats(N)) >= 10),
    assert_serving(N).

%% The limit is 5. Every stats call is a handshake too: it is made while
%% at most 4 are pending, so it drops none, until the end.
past_max_pending_handshakes_the_oldest_is_dropped(Config) ->
    N = ?config(node, Config),
    First = silent(N),
    cnode_test:wait_until(fun() -> pending(N) =:= 1 end, 5000),
    [R1, R2, R3] = [silent(N) || _ <- lists:seq(1, 3)],
    cnode_test:wait_until(fun() -> pending(N) =:= 4 end, 5000),
    R4 = silent(N),
    Sixth = silent(N),
    ?assertEqual(true, closed(First, 5000)),
    [?assertEqual({error, timeout}, gen_tcp:recv(S, 0, 100)) || S <- [R1, R2, R3, R4, Sixth]],
    %% The stats call is the sixth now: it drops R1, the oldest.
    #{handshakes_pending := 4, handshakes_failed := Failed} = stats(N),
    ?assertEqual(2, Failed),
    ?assertEqual(true, closed(R1, 5000)),
    [gen_tcp:close(S) || S <- [R2, R3, R4, Sixth]].

a_silent_handshake_times_out_and_is_counted(Config) ->
    N = ?config(node, Config),
    S = silent(N),
    ?assertEqual(true, closed(S, 5000)),
    #{handshakes_timed_out := T, handshake_failures := F} = stats(N),
    ?assert(T >= 1, T),
    ?assert(F >= 1, F).

a_peer_lacking_a_mandatory_flag_is_refused_and_the_flag_logged(Config) ->
    N = ?config(node, Config),
    MapTag = 16#20000,
    Digest = 16#04000000,
    Flags = raw_dist:flags() band bnot (MapTag bor Digest),
    ?assertEqual({error, {status, <<"not_allowed">>}},
                 raw_dist:connect(N, erlang:get_cookie(), #{flags => Flags})),
    C = ?config(cnode, Config),
    cnode_test:wait_until(fun() -> binary:match(cnode_test:log(C), <<"DFLAG_MAP_TAG">>) =/= nomatch end,
                          5000),
    %% The shorthand alone stands for every mandatory flag.
    {ok, S} = raw_dist:connect(N, erlang:get_cookie(), #{flags => Flags bor Digest}),
    raw_dist:close(S),
    assert_serving(N).

%% ---------------------------------------------------------------------------
%% Out of file descriptors.

%% CPU time (user and system) of an OS process, in ms.
cpu_ms(OsPid) ->
    {ok, Stat} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    [_, AfterName] = binary:split(Stat, <<") ">>),
    %% Fields 14 and 15 of stat(5); the name, field 2, is cut off above.
    Fields = binary:split(AfterName, <<" ">>, [global]),
    Ticks = binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)),
    Hz = list_to_integer(string:trim(os:cmd("getconf CLK_TCK"))),
    Ticks * 1000 div Hz.

backoffs(N) -> maps:get(accept_backoffs, cnode_test:stats(N)).

occurrences(Log, Pattern) -> length(binary:matches(Log, Pattern)).

%% More connections than the node has descriptors for: accept fails with
%% EMFILE while the listen socket stays readable. The node stops watching
%% it and tries again after a pause, longer each time, instead of spinning;
%% it logs the first failure only and keeps serving the connection it has.
%% Once the held connections are closed, new peers connect again.
out_of_file_descriptors_accepting_backs_off_and_resumes(Config) ->
    N = ?config(node, Config),
    #{os_pid := OsPid} = C = ?config(cnode, Config),
    %% This node's own connection, made while descriptors are left.
    ?assertEqual(0, backoffs(N)),
    Held = [silent(N) || _ <- lists:seq(1, ?NOFILE + 8)],
    cnode_test:wait_until(fun() -> backoffs(N) >= 1 end, 10000),
    {Cpu0, T0} = {cpu_ms(OsPid), erlang:monotonic_time(millisecond)},
    %% Pauses of 100, 200, 400 and 800 ms: the fifth starts 1.5 s later,
    %% where a node that spins would count thousands.
    B = cnode_test:wait_until(fun() -> B = backoffs(N), B >= 5 andalso {true, B} end, 10000),
    {Cpu1, T1} = {cpu_ms(OsPid), erlang:monotonic_time(millisecond)},
    ct:pal("backing off: ~b pauses, ~b ms of CPU in ~b ms", [B, Cpu1 - Cpu0, T1 - T0]),
    ?assert(B < 8, {too_many_pauses, B}),
    ?assert(Cpu1 - Cpu0 < (T1 - T0) div 2, {spinning, Cpu1 - Cpu0, T1 - T0}),
    ?assertEqual(1, occurrences(cnode_test:log(C), <<"pausing accepting">>)),
    ?assertMatch(#{node := N}, cnode_test:call(N, info)),
    [gen_tcp:close(S) || S <- Held],
    cnode_test:wait_until(
      fun() ->
              case raw_dist:connect(N, erlang:get_cookie(), #{timeout => 2000}) of
                  {ok, S} -> raw_dist:close(S), true;
                  Error -> Error
              end
      end, 10000),
    ?assertEqual(1, occurrences(cnode_test:log(C), <<"accepting again">>)),
    assert_serving(N).

%% ---------------------------------------------------------------------------
%% Mistakes on the command line

%% Every key a manager takes whatever its behaviour, as the refusal lists them.
-define(MANAGER_KEYS, "every manager takes timeout, lull, payload, instant_perform, restart, "
                      "pickup, threads, max_mailbox, max_restarts, max_seconds").

a_misspelt_behaviour_option_is_refused_by_name(_Config) ->
    assert_refused(["--manager", "c=counter,childern=5"],
                   "--manager c: unknown option 'childern' (did you mean 'children'?); "
                   "behaviour counter takes children, specs_delay_ms, starting_delay_ms; "
                   ?MANAGER_KEYS),
    %% A manager key misspelt is caught the same way.
    assert_refused(["--manager", "c=counter,tmeout=5"],
                   "--manager c: unknown option 'tmeout' (did you mean 'timeout'?); "
                   "behaviour counter takes children, specs_delay_ms, starting_delay_ms; "
                   ?MANAGER_KEYS).

an_option_of_a_behaviour_that_takes_none_is_refused(_Config) ->
    [assert_refused(["--manager", "m=" ++ B ++ ",children=5"],
                    "--manager m: unknown option 'children'; behaviour " ++ B ++
                    " takes no options of its own; " ?MANAGER_KEYS)
     || B <- ["probe", "pingpong"]].

a_shared_object_behaviour_declares_its_options_too(_Config) ->
    assert_refused(["--manager", "t=" ++ tick_so() ++ ",every=5"],
                   "--manager t: unknown option 'every'; behaviour tick takes no options "
                   "of its own; " ?MANAGER_KEYS).

%% One line, the loader's, and not a second "unknown behaviour" one.
a_failed_shared_object_load_prints_one_line(_Config) ->
    assert_refused(["--manager", "x=/nonexistent/lib.so"],
                   "--manager x: cannot load behaviour /nonexistent/lib.so: /nonexistent/lib.so: "
                   "cannot open shared object file: No such file or directory").

%% dlopen looks up a name without a slash in the system's library
%% directories, so mine.so in the current directory is not found; the line
%% says what to write instead, and what it says works.
a_shared_object_named_without_a_slash_suggests_dot_slash(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "here"),
    ok = filelib:ensure_path(Dir),
    {ok, _} = file:copy(tick_so(), filename:join(Dir, "mine.so")),
    assert_refused(["--manager", "x=mine.so"], Dir,
                   "--manager x: cannot load behaviour mine.so: mine.so: cannot open shared "
                   "object file: No such file or directory (a name without a slash is looked "
                   "up in the system's library directories: for a file here, give ./mine.so)"),
    {ready, _} = run_until_ready(["--manager", "x=./mine.so"], Dir).

%% An object built before dm_behaviour had `options` exports
%% dm_behaviour_get and a shorter struct: it still loads and runs, its
%% options go unchecked, and the node says so.
a_shared_object_built_against_the_old_header_still_loads(Config) ->
    Dir = ?config(priv_dir, Config),
    Src = filename:join(Dir, "legacy.c"),
    So = filename:join(Dir, "legacy.so"),
    ok = file:write_file(Src, legacy_source()),
    Ei = code:lib_dir(erl_interface),
    Cc = "cc -std=c11 -Wall -Werror -fPIC -shared -I" ++ cnode_test:root() ++ "/c_src/include"
         " -I" ++ Ei ++ "/include " ++ Src ++ " -o " ++ So ++ " 2>&1; echo rc=$?",
    Out = os:cmd(Cc),
    ?assertEqual("rc=0", string:trim(lists:last(string:split(string:trim(Out), "\n", all))), Out),
    C = cnode_test:start(undefined, #{dir => Dir, args => ["--manager", "old=" ++ So ++ ",anything=1"]}),
    N = cnode_test:node(C),
    ok = gen_server:call({old, N}, {put, a, [{payload, 7}, {timeout, 0}]}),
    ?assertEqual({ok, 7}, gen_server:call({old, N}, {synch_call, a, get})),
    ?assertMatch(#{managers := [#{name := old, behaviour := legacy}]}, cnode_test:call(N, info)),
    ?assertNotEqual(nomatch, binary:match(cnode_test:log(C),
        <<"was built against an older dm.h (it exports dm_behaviour_get, not "
          "dm_behaviour_get_v1): its options are not checked">>)),
    cnode_test:stop(C).

%% dm_behaviour as it was before `options`: a name and eight callbacks.
legacy_source() ->
    <<"#include \"dm.h\"\n"
      "#undef dm_behaviour_get\n"
      "static int answer(dm_ctx *c, const dm_term *msg, const erlang_pid *from,\n"
      "                  const dm_term *id, const dm_term *p, ei_x_buff *out) {\n"
      "  (void)c; (void)msg; (void)from; (void)id;\n"
      "  ei_x_encode_tuple_header(out, 2);\n"
      "  ei_x_encode_atom(out, \"ok\");\n"
      "  return ei_x_append_buf(out, p->data, (int)p->len) < 0 ? DM_CB_CRASH : DM_CB_OK;\n"
      "}\n"
      "static int perform(dm_ctx *c, const dm_term *id, const dm_term *p, ei_x_buff *out) {\n"
      "  return answer(c, NULL, NULL, id, p, out);\n"
      "}\n"
      "static const struct {\n"
      "  const char *name;\n"
      "  void *children_specs, *init;\n"
      "  int (*perform)(dm_ctx *, const dm_term *, const dm_term *, ei_x_buff *);\n"
      "  int (*call)(dm_ctx *, const dm_term *, const erlang_pid *, const dm_term *,\n"
      "              const dm_term *, ei_x_buff *);\n"
      "  void *cast, *terminate, *handle_state_change, *handle_timeout;\n"
      "} old = {\"legacy\", NULL, NULL, perform, answer, NULL, NULL, NULL, NULL};\n"
      "const void *dm_behaviour_get(void) { return &old; }\n">>.

tick_so() -> filename:join([cnode_test:root(), "priv", "tick.so"]).

assert_refused(Args, Want) -> assert_refused(Args, "/tmp", Want).

%% The node exits 1 and prints exactly one line, Want after the log
%% prefix: nothing before it, and nothing after it (no "cannot start", no
%% "stopped", no sanitizer report) that could mislead.
assert_refused(Args, Dir, Want) ->
    {exit, Status, Lines} = run_until_ready(Args, Dir),
    ?assertEqual(1, Status, Lines),
    ?assertMatch([_], Lines, Lines),
    [Line] = Lines,
    ?assertMatch({match, _}, re:run(Line, "^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} error [a-z_]+\\.c:\\d+: "), Line),
    [_, Text] = binary:split(Line, <<": ">>),
    ?assertEqual(list_to_binary(Want), Text).

run_until_ready(Args, Dir) -> cnode_test:run_until_ready("mistake", Args, Dir).
