%% @doc Outbound connections: the node connects to other nodes by itself
%% (a worker's send to a node not connected yet) and when asked
%% ({connect, N}, {ping, N}, {call, N, To, Req[, Ms]} of tarearbol_cnode),
%% with the epmd lookup and the handshake as the initiator, the cookie
%% checked both ways; two C nodes call each other. The peers are real: C
%% nodes, BEAM peers, and a fake node registered with the real epmd that
%% answers the handshake wrongly on purpose.
-module(connect_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([two_c_nodes_connect_ping_and_call_each_other/1,
         a_call_reaches_a_manager_and_a_pid_on_the_other_node/1,
         a_workers_send_to_a_node_not_connected_yet_is_delivered/1,
         a_send_to_a_node_that_is_gone_is_dropped_and_counted/1,
         a_send_to_a_node_still_handshaking_with_us_waits_for_that_handshake/1,
         connecting_both_ways_at_once_leaves_one_connection/1,
         a_call_to_a_missing_name_answers_noproc_at_once/1,
         a_call_answers_timeout_noconnection_or_the_callee_exit/1,
         our_wrong_cookie_is_refused_by_a_beam_node/1,
         a_peer_with_a_wrong_digest_is_refused/1,
         a_peer_lacking_a_mandatory_flag_is_refused_when_connecting_out/1,
         an_unknown_or_unreachable_node_is_pang/1,
         a_node_connecting_again_under_its_name_replaces_the_old_connection/1,
         malformed_remote_requests_get_a_clear_error/1]).

all() ->
    [two_c_nodes_connect_ping_and_call_each_other,
     a_call_reaches_a_manager_and_a_pid_on_the_other_node,
     a_workers_send_to_a_node_not_connected_yet_is_delivered,
     a_send_to_a_node_that_is_gone_is_dropped_and_counted,
     a_send_to_a_node_still_handshaking_with_us_waits_for_that_handshake,
     connecting_both_ways_at_once_leaves_one_connection,
     a_call_to_a_missing_name_answers_noproc_at_once,
     a_call_answers_timeout_noconnection_or_the_callee_exit,
     our_wrong_cookie_is_refused_by_a_beam_node,
     a_peer_with_a_wrong_digest_is_refused,
     a_peer_lacking_a_mandatory_flag_is_refused_when_connecting_out,
     an_unknown_or_unreachable_node_is_pang,
     a_node_connecting_again_under_its_name_replaces_the_old_connection,
     malformed_remote_requests_get_a_clear_error].

init_per_suite(Config) ->
    true = is_alive(),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(_Case, Config) ->
    cnode_test:init_case(Config, ["--manager", "pingpong=pingpong",
                                  "--handshake-timeout", "3000"]).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config, if_running).

node_of(Config) -> cnode_test:node(?config(cnode, Config)).

%% What node A is asked to do on another node.
ask(A, Req) -> gen_server:call({tarearbol_cnode, A}, Req, 15000).

second(Config) ->
    cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                  args => ["--manager", "counters=counter,children=3"]}).

peers(N) -> maps:get(peers, cnode_test:call(N, info)).

%% ---------------------------------------------------------------------------

two_c_nodes_connect_ping_and_call_each_other(Config) ->
    A = node_of(Config),
    CB = second(Config),
    B = cnode_test:node(CB),
    ?assertNot(lists:member(B, peers(A))),
    ?assertEqual(true, ask(A, {connect, B})),
    ?assert(lists:member(B, peers(A))),
    ?assert(lists:member(A, peers(B))),
    ?assertEqual(true, ask(A, {connect, B})),         % already: at once
    ?assertEqual(pong, ask(A, {ping, B})),
    ?assertEqual(pong, tarearbol_cnode:ping(B, A)),
    ?assertEqual(true, tarearbol_cnode:connect(B, A)),
    ?assertMatch({ok, #{node := A}}, tarearbol_cnode:remote_call(B, A, tarearbol_cnode, info)),
    ?assertMatch({ok, #{node := B}}, ask(A, {call, B, tarearbol_cnode, info})),
    ?assertMatch({ok, #{node := A}}, ask(B, {call, A, tarearbol_cnode, info})),
    #{connections_initiated := 1, connections_accepted := AccA} = cnode_test:stats(A),
    #{connections_initiated := 0} = cnode_test:stats(B),
    ?assert(AccA >= 1),
    %% One connection between them, made by A, used both ways.
    ?assertEqual(1, length([P || P <- peers(A), P =:= B])),
    ?assertEqual(1, length([P || P <- peers(B), P =:= A])),
    ok = cnode_test:stop(CB),
    cnode_test:wait_until(fun() -> not lists:member(B, peers(A)) end, 5000),
    ?assertEqual(pang, ask(A, {ping, B})).

a_call_reaches_a_manager_and_a_pid_on_the_other_node(Config) ->
    A = node_of(Config),
    CB = second(Config),
    B = cnode_test:node(CB),
    cnode_test:wait_started({counters, B}, 5000),
    {ok, State} = ask(A, {call, B, counters, state}),
    ?assertMatch(#{children := #{}}, State),
    ?assertEqual(3, maps:size(maps:get(children, State))),
    #{pid := BPid} = cnode_test:call(B, info),
    ?assertMatch({ok, #{node := B}}, ask(A, {call, B, BPid, info, 5000})),
    ?assertMatch({ok, {error, {unknown_request, nonsense}}},
                 ask(A, {call, B, tarearbol_cnode, nonsense, infinity})),
    ok = cnode_test:stop(CB).

%% pingpong's perform sends <<"pong">> to the pid its id holds: a pid of
%% a BEAM node the C node has never talked to.
a_workers_send_to_a_node_not_connected_yet_is_delivered(Config) ->
    N = node_of(Config),
    {Peer, PeerNode} = cnode_test:start_peer("target"),
    Sink = peer:call(Peer, erlang, spawn, [timer, sleep, [infinity]]),
    ?assertNot(lists:member(PeerNode, peers(N))),
    ok = gen_server:call({pingpong, N}, {put, term_to_binary(Sink), [{timeout, 100}]}),
    Got = fun() ->
              {messages, Ms} = peer:call(Peer, erlang, process_info, [Sink, messages]),
              lists:member(<<"pong">>, Ms)
          end,
    cnode_test:wait_until(Got, 10000),
    ?assert(lists:member(PeerNode, peers(N))),
    #{connections_initiated := I, connect_queued := Q} = cnode_test:stats(N),
    ?assertEqual(1, I),
    ?assert(Q >= 1),
    %% The connection is hidden on the BEAM side, as the node is.
    ?assert(lists:member(N, peer:call(Peer, erlang, nodes, [hidden]))),
    peer:stop(Peer).

a_send_to_a_node_that_is_gone_is_dropped_and_counted(Config) ->
    N = node_of(Config),
    {Peer, _PeerNode} = cnode_test:start_peer("gone"),
    Sink = peer:call(Peer, erlang, spawn, [timer, sleep, [infinity]]),
    peer:stop(Peer),
    ok = gen_server:call({pingpong, N}, {put, term_to_binary(Sink), [{timeout, 100}]}),
    cnode_test:wait_until(fun() ->
                                  #{connect_dropped := D, connects_failed := F} = cnode_test:stats(N),
                                  D >= 2 andalso F >= 2
                          end, 10000),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assert(binary:match(cnode_test:log(?config(cnode, Config)),
                         <<"epmd at its host does not know">>) =/= nomatch).

%% A node (raw here) is half-way through its handshake with the C node
%% when a worker sends to one of its pids: the message waits on that
%% handshake and arrives on that connection once it is through; no
%% second connection is tried (it would find no such node in epmd).
a_send_to_a_node_still_handshaking_with_us_waits_for_that_handshake(Config) ->
    N = node_of(Config),
    Cookie = cnode_test:cookie(),
    Host = cnode_test:host(),
    Name = list_to_atom("midway_" ++ integer_to_list(erlang:unique_integer([positive])) ++ "@" ++ Host),
    [Alive, _] = string:split(atom_to_list(N), "@"),
    {port, Port, _} = erl_epmd:port_please(Alive, Host),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {packet, 2}]),
    NB = atom_to_binary(Name),
    Creation = 77,
    ok = gen_tcp:send(S, <<$N, (raw_dist:flags()):64, Creation:32, (byte_size(NB)):16, NB/binary>>),
    {ok, <<"sok">>} = gen_tcp:recv(S, 0, 5000),
    {ok, <<$N, _:64, Ch:32, _/binary>>} = gen_tcp:recv(S, 0, 5000),
    Pid = binary_to_term(<<131, 88, 119, (byte_size(NB)), NB/binary, 5:32, 0:32, Creation:32>>),
    ok = gen_server:call({pingpong, N}, {put, term_to_binary(Pid), [{timeout, 100}]}),
    cnode_test:wait_until(fun() -> maps:get(connect_queued, cnode_test:stats(N)) >= 1 end, 5000),
    ok = gen_tcp:send(S, <<$r, 4242:32, (erlang:md5([Cookie, integer_to_list(Ch)]))/binary>>),
    {ok, <<$a, _:16/binary>>} = gen_tcp:recv(S, 0, 5000),
    ok = inet:setopts(S, [{packet, raw}]),
    ?assertMatch({ok, {{2, _, Pid}, <<"pong">>}},
                 raw_dist:recv_until(S, fun({{2, _, P}, <<"pong">>}) -> P =:= Pid;
                                           (_) -> false end, 5000)),
    #{connects_failed := 0, connections_initiated := 0, connect_dropped := 0} = cnode_test:stats(N),
    ok = gen_server:call({pingpong, N}, {del, term_to_binary(Pid)}),
    gen_tcp:close(S).

%% Each asks to connect to the other at the same moment: the handshakes
%% cross, the greater name's goes on (as between BEAM nodes), and both
%% calls answer true over the one connection left.
connecting_both_ways_at_once_leaves_one_connection(Config) ->
    A = node_of(Config),
    CB = second(Config),
    B = cnode_test:node(CB),
    Self = self(),
    [spawn_link(fun() -> Self ! {X, ask(X, {connect, Y})} end) || {X, Y} <- [{A, B}, {B, A}]],
    Rs = [receive {X, R} -> R after 15000 -> error({no_answer, X}) end || X <- [A, B]],
    ?assertEqual([true, true], Rs),
    cnode_test:wait_until(fun() ->
                                  [B] =:= [P || P <- peers(A), P =:= B] andalso
                                      [A] =:= [P || P <- peers(B), P =:= A]
                          end, 5000),
    ?assertMatch({ok, #{node := B}}, ask(A, {call, B, tarearbol_cnode, info})),
    ?assertMatch({ok, #{node := A}}, ask(B, {call, A, tarearbol_cnode, info})),
    ok = cnode_test:stop(CB).

a_call_to_a_missing_name_answers_noproc_at_once(Config) ->
    A = node_of(Config),
    CB = second(Config),
    B = cnode_test:node(CB),
    ?assertEqual({error, noproc}, ask(A, {call, B, no_such_process, hello, 60000})),
    ?assertEqual({error, noproc}, ask(A, {call, node(), no_such_process, hello, 60000})),
    ok = cnode_test:stop(CB).

a_call_answers_timeout_noconnection_or_the_callee_exit(Config) ->
    A = node_of(Config),
    %% A BEAM process that never answers.
    Quiet = spawn_link(fun() -> receive never -> ok end end),
    register(quiet_callee, Quiet),
    ?assertEqual({error, timeout}, ask(A, {call, node(), quiet_callee, hello, 200})),
    %% It dies while the call waits: the call's monitor answers.
    Self = self(),
    spawn_link(fun() -> Self ! {r1, ask(A, {call, node(), quiet_callee, hello, 60000})} end),
    %% The first call's message is still there: the second's makes two.
    cnode_test:wait_until(fun() -> {message_queue_len, L} = process_info(Quiet, message_queue_len),
                                   L >= 2 end, 5000),
    unlink(Quiet),
    exit(Quiet, kill),
    ?assertEqual({error, killed}, receive {r1, R1} -> R1 after 10000 -> no_answer end),
    %% Its node goes while the call waits.
    {Peer, PeerNode} = cnode_test:start_peer("callee"),
    Sleeper = peer:call(Peer, erlang, spawn, [timer, sleep, [infinity]]),
    true = peer:call(Peer, erlang, register, [sleeper, Sleeper]),
    spawn_link(fun() -> Self ! {r2, ask(A, {call, PeerNode, sleeper, hello, 60000})} end),
    cnode_test:wait_until(fun() ->
                                  {messages, M} = peer:call(Peer, erlang, process_info, [Sleeper, messages]),
                                  M =/= []
                          end, 10000),
    peer:stop(Peer),
    ?assertEqual({error, noconnection}, receive {r2, R2} -> R2 after 10000 -> no_answer end).

our_wrong_cookie_is_refused_by_a_beam_node(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config), cookie => "not_the_cookie"}),
    Odd = cnode_test:node(C),
    {Peer, PeerNode} = cnode_test:start_peer("strict"),
    %% The test node cannot talk to Odd (other cookie): a raw client with
    %% Odd's cookie asks it.
    {ok, S} = raw_dist:connect(Odd, "not_the_cookie", #{}),
    ?assertEqual({ok, false}, raw_dist:gen_call(S, raw_dist:fake_pid(S, 1), tarearbol_cnode,
                                          {connect, PeerNode}, 15000)),
    ?assertEqual({ok, pang}, raw_dist:gen_call(S, raw_dist:fake_pid(S, 2), tarearbol_cnode,
                                         {ping, PeerNode}, 15000)),
    {ok, #{connects_failed := F}} = raw_dist:gen_call(S, raw_dist:fake_pid(S, 3), tarearbol_cnode,
                                                stats, 5000),
    ?assert(F >= 2),
    ?assertNot(lists:member(Odd, peer:call(Peer, erlang, nodes, [hidden]))),
    raw_dist:close(S),
    peer:stop(Peer),
    ok = cnode_test:stop(C),
    ?assert(binary:match(cnode_test:log(C), <<"wrong cookie?">>) =/= nomatch).

a_peer_with_a_wrong_digest_is_refused(Config) ->
    N = node_of(Config),
    {Fake, Done} = fake_node(wrong_digest),
    ?assertEqual(false, ask(N, {connect, Fake})),
    ?assertEqual(reached_ack, receive {Done, R} -> R after 10000 -> no_report end),
    ?assertNot(lists:member(Fake, peers(N))),
    ?assert(binary:match(cnode_test:log(?config(cnode, Config)),
                         <<"wrong cookie (the peer's digest does not match)">>) =/= nomatch).

a_peer_lacking_a_mandatory_flag_is_refused_when_connecting_out(Config) ->
    N = node_of(Config),
    {Fake, Done} = fake_node(no_flags),
    ?assertEqual(false, ask(N, {connect, Fake})),
    ?assertEqual(closed, receive {Done, R} -> R after 10000 -> no_report end),
    ?assert(binary:match(cnode_test:log(?config(cnode, Config)),
                         <<"lacks mandatory flags DFLAG_EXTENDED_REFERENCES">>) =/= nomatch).

an_unknown_or_unreachable_node_is_pang(Config) ->
    N = node_of(Config),
    Host = cnode_test:host(),
    ?assertEqual(pang, ask(N, {ping, list_to_atom("nobody_here@" ++ Host)})),
    ?assertEqual(false, ask(N, {connect, 'nobody@no-such-host.invalid'})),
    ?assertEqual({error, noconnection}, ask(N, {call, 'nobody@no-such-host.invalid', x, y})),
    ?assertEqual(false, ask(N, {connect, not_a_node_name})),
    ?assertEqual(false, ask(N, {connect, N})),                % itself
    ?assertEqual(pong, net_adm:ping(N)).

%% A node that restarted comes back under its name while the C node still
%% holds the old connection: asked "alive", it says true, and the old
%% connection goes (its links fire), as between BEAM nodes.
a_node_connecting_again_under_its_name_replaces_the_old_connection(Config) ->
    N = node_of(Config),
    Name = list_to_atom("again_" ++ integer_to_list(erlang:unique_integer([positive]))
                        ++ "@" ++ cnode_test:host()),
    Cookie = cnode_test:cookie(),
    {ok, S1} = raw_dist:connect(N, Cookie, #{name => Name}),
    ?assertMatch({ok, #{node := N}}, raw_dist:gen_call(S1, raw_dist:fake_pid(S1, 1), tarearbol_cnode,
                                                 info, 5000)),
    ?assertEqual({error, {status, <<"alive">>}}, raw_dist:connect(N, Cookie, #{name => Name})),
    {ok, S2} = raw_dist:connect(N, Cookie, #{name => Name, alive => true}),
    ?assertEqual({error, closed}, gen_tcp:recv(S1, 0, 5000)),
    ?assertMatch({ok, #{node := N}}, raw_dist:gen_call(S2, raw_dist:fake_pid(S2, 1), tarearbol_cnode,
                                                 info, 5000)),
    raw_dist:close(S2).

malformed_remote_requests_get_a_clear_error(Config) ->
    N = node_of(Config),
    Bad = [{connect, 123}, {connect, <<"a@b">>}, {ping, "x@y"}, {connect, a, b},
           {call, N}, {call, N, "name", req}, {call, N, name, req, -5},
           {call, N, name, req, soon}, {call, x@y, self(), req}, {call, 1, 2, 3}],
    [?assertEqual({error, {unknown_request, R}}, ask(N, R)) || R <- Bad],
    ?assertEqual(pong, net_adm:ping(N)).

%% ---------------------------------------------------------------------------
%% A fake node: registered with the real epmd, it accepts one connection
%% and answers the handshake as Mode says: wrong_digest (all well until its
%% challenge_ack, whose digest is wrong) or no_flags (its challenge
%% advertises no flags). It reports how far the C node went.

fake_node(Mode) ->
    Self = self(),
    Alive = "fake_" ++ integer_to_list(erlang:unique_integer([positive])),
    Node = list_to_atom(Alive ++ "@" ++ cnode_test:host()),
    Ref = make_ref(),
    Pid = spawn_link(fun() -> fake_serve(Self, Ref, Alive, Node, Mode) end),
    receive {Ref, registered} -> ok after 5000 -> error(fake_not_registered) end,
    {Node, Pid}.

fake_serve(Parent, Ref, Alive, Node, Mode) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {packet, 2}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    {ok, E} = gen_tcp:connect({127, 0, 0, 1}, 4369, [binary, {active, false}]),
    AB = list_to_binary(Alive),
    Req = <<120, Port:16, 77, 0, 6:16, 6:16, (byte_size(AB)):16, AB/binary, 0:16>>,
    ok = gen_tcp:send(E, <<(byte_size(Req)):16, Req/binary>>),
    {ok, <<R, 0, _/binary>>} = gen_tcp:recv(E, 0, 5000),
    true = lists:member(R, [118, 121]),
    Parent ! {Ref, registered},
    {ok, S} = gen_tcp:accept(L, 10000),
    {ok, <<$N, _Flags:64, _Cr:32, NL:16, _Peer:NL/binary>>} = gen_tcp:recv(S, 0, 5000),
    ok = gen_tcp:send(S, <<"sok">>),
    Flags = case Mode of no_flags -> 0; wrong_digest -> raw_dist:flags() end,
    NB = atom_to_binary(Node),
    ok = gen_tcp:send(S, <<$N, Flags:64, 12345:32, 99:32, (byte_size(NB)):16, NB/binary>>),
    Result = case gen_tcp:recv(S, 0, 5000) of
                 {ok, <<$r, _Ch:32, _Digest:16/binary>>} ->
                     ok = gen_tcp:send(S, <<$a, 0:128>>),
                     reached_ack;
                 {error, closed} ->
                     closed;
                 Other ->
                     {unexpected, Other}
             end,
    Parent ! {self(), Result},
    gen_tcp:close(S),
    gen_tcp:close(E),
    gen_tcp:close(L).
