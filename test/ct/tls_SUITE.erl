%% @doc TLS distribution against OTP's own: the C node started with
%% --tls-cert/--tls-key/--tls-ca, and BEAM peers started with
%% `-proto_dist inet_tls -ssl_dist_optfile F' (driven over stdio, since
%% this node is plain TCP and cannot reach them). The CA and every
%% certificate are made with the openssl command when the suite starts.
%% A TLS peer pings, calls, links and monitors a worker, over TLS 1.2 (OTP
%% 25's default) and 1.3; the C node connects out to a TLS node; a plain
%% TCP peer, and peers whose certificate is untrusted, expired or for
%% another name, are refused, counted and logged with the reason, both
%% ways; a stalled TLS handshake times out and is counted; a hundred
%% stalled ones do not hold a fresh peer back; inside TLS the cookie and
%% the handshake's bounds still apply; verification can be switched off,
%% plain TCP let in beside TLS, and the launcher starts a TLS node.
-module(tls_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([a_tls_beam_node_pings_calls_links_and_monitors_a_worker/1,
         tls_1_3_works_as_well_as_1_2/1,
         the_c_node_connects_out_to_a_tls_beam_node/1,
         a_plain_tcp_peer_is_refused_counted_and_logged/1,
         untrusted_expired_and_misnamed_peers_are_refused/1,
         connecting_out_the_c_node_refuses_a_bad_server_certificate/1,
         a_beam_node_refuses_an_untrusted_c_node/1,
         a_stalled_tls_handshake_times_out_and_is_counted/1,
         a_hundred_stalled_tls_handshakes_do_not_hold_up_a_fresh_peer/1,
         inside_tls_the_cookie_and_the_handshake_bounds_still_hold/1,
         with_verification_off_any_certificate_is_taken/1,
         tls_only_false_takes_plain_and_tls_peers/1,
         the_launcher_starts_a_tls_c_node/1,
         bad_tls_options_are_refused_in_one_line/1]).

%% Helpers run on the TLS peers.
-export([link_and_monitor/2, launch/2]).

all() ->
    [a_tls_beam_node_pings_calls_links_and_monitors_a_worker,
     tls_1_3_works_as_well_as_1_2,
     the_c_node_connects_out_to_a_tls_beam_node,
     a_plain_tcp_peer_is_refused_counted_and_logged,
     untrusted_expired_and_misnamed_peers_are_refused,
     connecting_out_the_c_node_refuses_a_bad_server_certificate,
     a_beam_node_refuses_an_untrusted_c_node,
     a_stalled_tls_handshake_times_out_and_is_counted,
     a_hundred_stalled_tls_handshakes_do_not_hold_up_a_fresh_peer,
     inside_tls_the_cookie_and_the_handshake_bounds_still_hold,
     with_verification_off_any_certificate_is_taken,
     tls_only_false_takes_plain_and_tls_peers,
     the_launcher_starts_a_tls_c_node,
     bad_tls_options_are_refused_in_one_line].

%% ---- certificates ---------------------------------------------------------

init_per_suite(Config) ->
    true = is_alive(),
    Dir = filename:join(?config(priv_dir, Config), "pki"),
    ok = filelib:ensure_path(Dir),
    make_pki(Dir),
    [{pki, Dir} | Config].

end_per_suite(_Config) -> ok.

%% Runs an openssl command in Dir; fails the suite with its output.
openssl(Dir, Args) ->
    Out = os:cmd("cd '" ++ Dir ++ "' && openssl " ++ Args ++ " 2>&1; echo \"rc=$?\""),
    case lists:last(string:lexemes(Out, "\n")) of
        "rc=0" -> ok;
        _ -> ct:fail({openssl, Args, Out})
    end.

%% ca signs node (for localhost, this host and 127.0.0.1), other (for
%% elsewhere.example only) and expired (2020); rogueca, which no one
%% trusts, signs rogue. EC P-256 keys.
make_pki(Dir) ->
    Host = cnode_test:host(),
    San = "subjectAltName=DNS:localhost,DNS:" ++ Host ++ ",IP:127.0.0.1",
    ok = file:write_file(filename:join(Dir, "good.ext"), San ++ "\n"),
    ok = file:write_file(filename:join(Dir, "other.ext"), "subjectAltName=DNS:elsewhere.example\n"),
    [begin
         openssl(Dir, "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
                 ++ Ca ++ ".key -out " ++ Ca ++ ".pem -days 30 -subj /CN=" ++ Ca),
         ok = file:write_file(filename:join(Dir, Ca ++ ".index"), <<>>),
         ok = file:write_file(filename:join(Dir, Ca ++ ".serial"), <<"01\n">>),
         ok = file:write_file(filename:join(Dir, Ca ++ ".cnf"),
                              ["[ca]\ndefault_ca = d\n[d]\n",
                               "database = ", Dir, "/", Ca, ".index\n",
                               "new_certs_dir = ", Dir, "\n",
                               "serial = ", Dir, "/", Ca, ".serial\n",
                               "default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"])
     end || Ca <- ["ca", "rogueca"]],
    Sign = fun(Name, Ca, Ext, Dates) ->
                   openssl(Dir, "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
                           ++ Name ++ ".key -out " ++ Name ++ ".csr -subj /CN=" ++ Name),
                   openssl(Dir, "ca -batch -notext -config " ++ Ca ++ ".cnf -cert " ++ Ca ++ ".pem -keyfile "
                           ++ Ca ++ ".key -in " ++ Name ++ ".csr -out " ++ Name ++ ".pem -extfile "
                           ++ Ext ++ ".ext " ++ Dates)
           end,
    Sign("node", "ca", "good", "-days 30"),
    Sign("other", "ca", "other", "-days 30"),
    Sign("expired", "ca", "good", "-startdate 20200101000000Z -enddate 20200102000000Z"),
    Sign("rogue", "rogueca", "good", "-days 30"),
    ok.

pem(Config, Name) -> filename:join(?config(pki, Config), Name).

%% The C node's TLS argv with certificate Name and the good CA.
tls_args(Config, Name) ->
    ["--tls-cert", pem(Config, Name ++ ".pem"), "--tls-key", pem(Config, Name ++ ".key"),
     "--tls-ca", pem(Config, "ca.pem")].

%% An optfile for a BEAM peer: its certificate Name, the CA it trusts,
%% both sides verifying (as a deployment that means it does), the TLS
%% versions it offers.
optfile(Config, Name, Ca, Verify, Versions) ->
    File = pem(Config, lists:flatten(io_lib:format("~s_~s_~s_~p.conf", [Name, Ca, Verify, length(Versions)]))),
    Common = [{certfile, pem(Config, Name ++ ".pem")}, {keyfile, pem(Config, Name ++ ".key")},
              {cacertfile, pem(Config, Ca ++ ".pem")}, {verify, Verify},
              {versions, Versions}, {secure_renegotiate, true}],
    Server = case Verify of
                 verify_peer -> [{fail_if_no_peer_cert, true} | Common];
                 verify_none -> Common
             end,
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Server}, {client, Common}]])),
    File.

%% A BEAM peer with TLS distribution, over stdio.
tls_peer(Config, Prefix, Name) -> tls_peer(Config, Prefix, Name, "ca", verify_peer, ['tlsv1.2']).
tls_peer(Config, Prefix, Name, Ca, Verify, Versions) ->
    Opt = optfile(Config, Name, Ca, Verify, Versions),
    Code = filename:dirname(code:which(tarearbol_cnode)),
    cnode_test:start_peer(Prefix, ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Opt, "-pa", Code]).

%% ---- cases ------------------------------------------------------------------

init_per_testcase(bad_tls_options_are_refused_in_one_line, Config) ->
    Config;
init_per_testcase(the_launcher_starts_a_tls_c_node, Config) ->
    Config;
init_per_testcase(Case, Config) ->
    Extra = case Case of
                a_stalled_tls_handshake_times_out_and_is_counted -> ["--handshake-timeout", "1000"];
                a_hundred_stalled_tls_handshakes_do_not_hold_up_a_fresh_peer -> ["--handshake-timeout", "60000"];
                inside_tls_the_cookie_and_the_handshake_bounds_still_hold -> ["--handshake-timeout", "2000"];
                with_verification_off_any_certificate_is_taken -> ["--tls-verify", "none"];
                tls_only_false_takes_plain_and_tls_peers -> ["--tls-only=false"];
                _ -> []
            end,
    cnode_test:init_case(Config, ["--manager", "counters=counter,children=3,timeout=1000"
                                  | tls_args(Config, "node") ++ Extra]).

end_per_testcase(Case, _Config) when Case =:= bad_tls_options_are_refused_in_one_line;
                                    Case =:= the_launcher_starts_a_tls_c_node ->
    ok;
end_per_testcase(_Case, Config) ->
    cnode_test:end_case(Config).

cnode(Config) -> ?config(node, Config).

pcall(P, M, F, A) -> peer:call(P, M, F, A, 30000).

%% What the C node's tarearbol_cnode service answers, asked from peer P.
stats(P, N) -> pcall(P, gen_server, call, [{tarearbol_cnode, N}, stats, 10000]).

log_has(Config, Text) ->
    binary:match(cnode_test:log(?config(cnode, Config)), list_to_binary(Text)) =/= nomatch.

await_log(Config, Text) ->
    cnode_test:wait_until(fun() -> log_has(Config, Text) end, 10000).

%% Stats counters of the C node, read over the TLS peer P, once Pred holds.
await_stats(P, N, Pred) ->
    cnode_test:wait_until(fun() -> S = stats(P, N), case Pred(S) of true -> {true, S}; false -> false end end,
                          10000).

a_tls_beam_node_pings_calls_links_and_monitors_a_worker(Config) ->
    N = cnode(Config),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    true = pcall(P, cnode_test, wait_until,
                 [fun() -> maps:get(state, gen_server:call({counters, N}, state)) =:= started end, 10000]),
    ?assertEqual(ok, pcall(P, gen_server, call, [{counters, N}, {put, a, [{payload, 41}, {timeout, 0}]}])),
    ?assertEqual({ok, 41}, pcall(P, gen_server, call, [{counters, N}, {synch_call, a, get}])),
    %% A payload of 8 MB goes both ways through TLS records of 16 KB.
    Big = binary:copy(<<"tarearbol">>, 1000000),
    ?assertEqual(ok, pcall(P, gen_server, call, [{counters, N}, {put, big, [{payload, Big}, {timeout, 0}]}])),
    #{opts := Opts} = pcall(P, gen_server, call, [{counters, N}, {get, big}]),
    ?assertEqual(Big, proplists:get_value(payload, Opts)),
    ?assertEqual({shutdown, shutdown}, pcall(P, ?MODULE, link_and_monitor, [N, a])),
    S = stats(P, N),
    ?assertMatch(#{tls_handshakes := 1, tls_failed := 0, tls_cert_refused := 0}, S),
    ?assert(log_has(Config, "over TLSv1.2")),
    peer:stop(P).

%% On a TLS peer: links to worker Id and monitors it, deletes it, and
%% returns the reasons of the 'DOWN' and of the exit signal.
link_and_monitor(N, Id) ->
    process_flag(trap_exit, true),
    #{pid := Pid} = gen_server:call({counters, N}, {get, Id}),
    true = link(Pid),
    Ref = erlang:monitor(process, Pid),
    ok = gen_server:call({counters, N}, {del, Id}),
    Down = receive {'DOWN', Ref, process, Pid, R1} -> R1 after 5000 -> no_down end,
    Exit = receive {'EXIT', Pid, R2} -> R2 after 5000 -> no_exit end,
    {Down, Exit}.

tls_1_3_works_as_well_as_1_2(Config) ->
    N = cnode(Config),
    %% Offered both, as OTP 26 does by default: the newer is chosen.
    {P, _} = tls_peer(Config, "tls13", "node", "ca", verify_peer, ['tlsv1.3', 'tlsv1.2']),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    ?assertMatch(#{children := #{}}, pcall(P, gen_server, call, [{counters, N}, state])),
    ?assert(log_has(Config, "over TLSv1.3")),
    peer:stop(P).

the_c_node_connects_out_to_a_tls_beam_node(Config) ->
    N = cnode(Config),
    {A, _} = tls_peer(Config, "tlsa", "node"),
    {B, BNode} = tls_peer(Config, "tlsb", "node"),
    ?assertEqual(pong, pcall(A, net_adm, ping, [N])),
    ?assertNot(lists:member(BNode, pcall(B, erlang, nodes, [hidden]))),
    %% Asked by A, the C node looks B up with epmd and connects over TLS.
    ?assertEqual(pong, pcall(A, gen_server, call, [{tarearbol_cnode, N}, {ping, BNode}, 15000])),
    ?assertEqual({ok, yes}, pcall(A, gen_server, call,
                                  [{tarearbol_cnode, N}, {call, BNode, net_kernel, {is_auth, N}}, 15000])),
    ?assert(lists:member(N, pcall(B, erlang, nodes, [hidden]))),
    ?assertMatch(#{connections_initiated := 1, tls_handshakes := 2}, stats(A, N)),
    ?assert(log_has(Config, "connection to " ++ atom_to_list(BNode) ++ " over TLSv1.2")),
    peer:stop(A),
    peer:stop(B).

a_plain_tcp_peer_is_refused_counted_and_logged(Config) ->
    N = cnode(Config),
    %% This node itself speaks plain TCP.
    ?assertEqual(pang, net_adm:ping(N)),
    %% A raw plain handshake: no answer but a close.
    {error, Why} = raw_dist:connect(N, cnode_test:cookie(), #{timeout => 5000}),
    ct:pal("a raw plain handshake: ~p", [Why]),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    S = await_stats(P, N, fun(S) -> maps:get(tls_plain_refused, S) >= 2 end),
    ?assertMatch(#{tls_handshakes := 1}, S),
    ?assert(log_has(Config, "refused: a plain TCP peer, and this node takes TLS only (--tls-only)")),
    peer:stop(P).

%% Each peer's certificate fails in its own way; the C node refuses it
%% during the TLS handshake (untrusted, expired) or at send_name, once the
%% peer names a host its certificate is not for.
untrusted_expired_and_misnamed_peers_are_refused(Config) ->
    N = cnode(Config),
    Cases = [{"rogue", "unable to get local issuer certificate"},
             {"expired", "certificate has expired"},
             {"other", "it is for another name than the peer's host " ++ cnode_test:host()}],
    [begin
         %% The peer trusts the C node (its client checks the C node's
         %% certificate against the good CA), so only its own is at fault.
         Opt = optfile(Config, Name, "ca", verify_peer, ['tlsv1.2']),
         {B, _} = cnode_test:start_peer("bad", ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Opt]),
         ?assertEqual(pang, pcall(B, net_adm, ping, [N])),
         peer:stop(B),
         await_log(Config, Reason)
     end || {Name, Reason} <- Cases],
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    S = await_stats(P, N, fun(S) -> maps:get(tls_cert_refused, S) >= 3 end),
    %% Only P's connection was made: the misnamed peer's TLS session came
    %% up, and its distribution handshake was refused at send_name.
    ?assertMatch(#{tls_cert_refused := 3, tls_handshakes := 1, tls_plain_refused := 0,
                   tls_failed := 0}, S),
    ?assert(log_has(Config, "failed: TLS: certificate refused: certificate has expired")),
    peer:stop(P).

connecting_out_the_c_node_refuses_a_bad_server_certificate(Config) ->
    N = cnode(Config),
    {A, _} = tls_peer(Config, "tlsa", "node"),
    ?assertEqual(pong, pcall(A, net_adm, ping, [N])),
    %% B's certificate is signed by the CA but names elsewhere.example, not
    %% B's host: the C node, verifying as OTP's client does, says no.
    {B, BNode} = tls_peer(Config, "misnamed", "other"),
    ?assertEqual(pang, pcall(A, gen_server, call, [{tarearbol_cnode, N}, {ping, BNode}, 15000])),
    %% C's certificate is from a CA the C node does not trust.
    OptC = optfile(Config, "rogue", "ca", verify_peer, ['tlsv1.2']),
    {C, CNode} = cnode_test:start_peer("rogue", ["-proto_dist", "inet_tls", "-ssl_dist_optfile", OptC]),
    ?assertEqual(pang, pcall(A, gen_server, call, [{tarearbol_cnode, N}, {ping, CNode}, 15000])),
    S = await_stats(A, N, fun(S) -> maps:get(tls_cert_refused, S) >= 2 end),
    ?assertMatch(#{connects_failed := 2}, S),
    ?assert(log_has(Config, "connecting to " ++ atom_to_list(BNode) ++
                        " failed: TLS: certificate refused: hostname mismatch")),
    ?assert(log_has(Config, "connecting to " ++ atom_to_list(CNode) ++
                        " failed: TLS: certificate refused: unable to get local issuer certificate")),
    [peer:stop(X) || X <- [A, B, C]].

%% The other way round: a BEAM node that does not trust the C node's CA
%% refuses it, as a client connecting in and as a server the C node
%% connects to; the C node counts the peer's refusal as a TLS failure (its
%% alert), not as a certificate it refused itself.
a_beam_node_refuses_an_untrusted_c_node(Config) ->
    N = cnode(Config),
    %% B shows a certificate the C node trusts, and trusts only rogueca.
    Opt = optfile(Config, "node", "rogueca", verify_peer, ['tlsv1.2']),
    {B, BNode} = cnode_test:start_peer("distrust", ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Opt]),
    ?assertEqual(pang, pcall(B, net_adm, ping, [N])),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    ?assertEqual(pang, pcall(P, gen_server, call, [{tarearbol_cnode, N}, {ping, BNode}, 15000])),
    S = await_stats(P, N, fun(S) -> maps:get(tls_failed, S) >= 2 end),
    ?assertMatch(#{tls_cert_refused := 0, tls_handshakes := 1, connects_failed := 1}, S),
    ?assert(log_has(Config, "connecting to " ++ atom_to_list(BNode) ++ " failed: TLS: ")),
    ?assert(log_has(Config, "(an alert from the peer)")),
    peer:stop(B),
    peer:stop(P).

port(N) ->
    [Alive, Host] = string:split(atom_to_list(N), "@"),
    {port, Port, _} = erl_epmd:port_please(Alive, Host),
    Port.

%% The first bytes of a TLS ClientHello: a record header announcing more
%% than ever comes.
-define(HELLO_HEAD, <<16#16, 3, 1, 0, 200, 1, 0, 0>>).

stall(Port) -> stall(Port, ?HELLO_HEAD).

%% A connection that sends Bytes and then nothing.
stall(Port, Bytes) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    ok = gen_tcp:send(S, Bytes),
    S.

%% A whole ClientHello, as this node's ssl client sends it (caught on a
%% socket of our own): the C node answers it, with a key exchange and a
%% signature, and then waits for a client that never goes on.
client_hello(Config) ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    Client = spawn(fun() ->
                           _ = ssl:connect({127, 0, 0, 1}, Port,
                                           [{certfile, pem(Config, "node.pem")},
                                            {keyfile, pem(Config, "node.key")},
                                            {cacertfile, pem(Config, "ca.pem")},
                                            {verify, verify_peer}, {versions, ['tlsv1.2']},
                                            {server_name_indication, "localhost"}], 5000)
                   end),
    {ok, S} = gen_tcp:accept(L, 5000),
    {ok, <<16#16, _:16, Len:16>> = Head} = gen_tcp:recv(S, 5, 5000),
    {ok, Body} = gen_tcp:recv(S, Len, 5000),
    exit(Client, kill),
    gen_tcp:close(S),
    gen_tcp:close(L),
    <<Head/binary, Body/binary>>.

%% Open, whatever the node said on it (its answer to a whole ClientHello).
still_open(S) ->
    case gen_tcp:recv(S, 0, 0) of
        {ok, _} -> still_open(S);
        {error, timeout} -> true;
        {error, closed} -> false
    end.

a_stalled_tls_handshake_times_out_and_is_counted(Config) ->
    N = cnode(Config),
    S = stall(port(N)),
    %% The node closes it at --handshake-timeout (1 s).
    ?assertEqual({error, closed}, gen_tcp:recv(S, 0, 10000)),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    ?assertMatch(#{tls_timed_out := 1, handshakes_timed_out := 1}, stats(P, N)),
    ?assert(log_has(Config, "failed: timed out in the TLS handshake (--handshake-timeout)")),
    peer:stop(P).

a_hundred_stalled_tls_handshakes_do_not_hold_up_a_fresh_peer(Config) ->
    N = cnode(Config),
    Port = port(N),
    %% Half stop inside their ClientHello, half after a whole one, once
    %% the node has done its share of the key exchange.
    Hello = client_hello(Config),
    Held = [stall(Port, case K rem 2 of 0 -> ?HELLO_HEAD; 1 -> Hello end) || K <- lists:seq(1, 100)],
    %% A fresh TLS peer: its TCP connect, TLS and distribution handshakes
    %% must all end within its net_setuptime (7 s), while the hundred are
    %% held for a minute.
    {P, _} = tls_peer(Config, "fresh", "node"),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    ct:pal("a fresh TLS peer's ping beside 100 stalled: ~p ms", [erlang:monotonic_time(millisecond) - T0]),
    ?assert(lists:all(fun still_open/1, Held)),
    ?assertMatch(#{handshakes_pending := 100, tls_handshakes := 1, tls_timed_out := 0}, stats(P, N)),
    [gen_tcp:close(S) || S <- Held],
    peer:stop(P).

%% A TLS client of this node's own ssl application: the TLS handshake
%% succeeds, then it speaks the distribution handshake (4-byte lengths)
%% wrongly on purpose.
tls_client(Config, N) ->
    {ok, S} = ssl:connect({127, 0, 0, 1}, port(N),
                          [binary, {active, false}, {packet, 4}, {verify, verify_peer},
                           {certfile, pem(Config, "node.pem")}, {keyfile, pem(Config, "node.key")},
                           {cacertfile, pem(Config, "ca.pem")},
                           {server_name_indication, "localhost"}], 10000),
    S.

send_name(Name) ->
    Flags = raw_dist:flags(),
    <<$N, Flags:64, 1:32, (byte_size(Name)):16, Name/binary>>.

inside_tls_the_cookie_and_the_handshake_bounds_still_hold(Config) ->
    N = cnode(Config),
    {ok, _} = application:ensure_all_started(ssl),
    Me = list_to_binary("raw@" ++ cnode_test:host()),
    %% The right steps with a wrong cookie: refused at challenge_reply.
    S1 = tls_client(Config, N),
    ok = ssl:send(S1, send_name(Me)),
    {ok, <<"sok">>} = ssl:recv(S1, 0, 5000),
    {ok, <<$N, _:64, _Challenge:32, _/binary>>} = ssl:recv(S1, 0, 5000),
    ok = ssl:send(S1, <<$r, 7:32, (erlang:md5(<<"wrong cookie">>))/binary>>),
    ?assertMatch({error, closed}, ssl:recv(S1, 0, 5000)),
    %% A length prefix no handshake message has.
    S2 = tls_client(Config, N),
    ok = ssl:setopts(S2, [{packet, raw}]),
    ok = ssl:send(S2, <<16#7fffffff:32, "N">>),
    ?assertMatch({error, closed}, ssl:recv(S2, 0, 5000)),
    %% Not a send_name at all.
    S3 = tls_client(Config, N),
    ok = ssl:send(S3, <<"garbage">>),
    ?assertMatch({error, closed}, ssl:recv(S3, 0, 5000)),
    %% A TLS session that then says nothing: the deadline (2 s) holds.
    S4 = tls_client(Config, N),
    ?assertMatch({error, closed}, ssl:recv(S4, 0, 10000)),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    %% Four TLS sessions came up and their distribution handshakes failed;
    %% only P's connection was made.
    ?assertMatch(#{tls_handshakes := 1, handshakes_timed_out := 1, handshakes_failed := 3,
                   tls_timed_out := 0}, stats(P, N)),
    ?assert(log_has(Config, "wrong cookie (digest mismatch)")),
    ?assert(log_has(Config, "bad message length")),
    peer:stop(P).

%% With --tls-verify none the node asks a client for no certificate and
%% takes any server's: a peer whose certificate is from a CA it does not
%% trust connects in, and it connects out to another such peer.
with_verification_off_any_certificate_is_taken(Config) ->
    N = cnode(Config),
    {B, _} = tls_peer(Config, "rogue", "rogue", "rogueca", verify_none, ['tlsv1.2']),
    ?assertEqual(pong, pcall(B, net_adm, ping, [N])),
    ?assertEqual(ok, pcall(B, gen_server, call, [{counters, N}, {put, r, [{payload, 1}]}])),
    {C, CNode} = tls_peer(Config, "rogue2", "rogue", "rogueca", verify_none, ['tlsv1.2']),
    ?assertEqual(pong, pcall(B, gen_server, call, [{tarearbol_cnode, N}, {ping, CNode}, 15000])),
    ?assertMatch(#{tls_cert_refused := 0, tls_failed := 0, tls_handshakes := 2}, stats(B, N)),
    peer:stop(C),
    peer:stop(B).

tls_only_false_takes_plain_and_tls_peers(Config) ->
    N = cnode(Config),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertEqual(ok, gen_server:call({counters, N}, {put, plain, []})),
    {P, _} = tls_peer(Config, "tls", "node"),
    ?assertEqual(pong, pcall(P, net_adm, ping, [N])),
    ?assertMatch(#{plain := _}, maps:get(children, pcall(P, gen_server, call, [{counters, N}, state]))),
    ?assertMatch(#{tls_handshakes := 1, tls_plain_refused := 0}, stats(P, N)),
    erlang:disconnect_node(N),
    peer:stop(P).

the_launcher_starts_a_tls_c_node(Config) ->
    {P, _} = tls_peer(Config, "launcher", "node"),
    Tls = #{cert => pem(Config, "node.pem"), key => pem(Config, "node.key"),
            ca => pem(Config, "ca.pem"), verify => peer, only => true},
    Opts = #{name => cnode_test:unique("launched"), binary => cnode_test:bin(),
             managers => ["counters=counter,children=2"], tls => Tls},
    ?assertMatch({ok, 2}, pcall(P, ?MODULE, launch, [Opts, fun(N) ->
        cnode_test:wait_until(fun() ->
            maps:get(state, gen_server:call({counters, N}, state)) =:= started end, 10000),
        {ok, map_size(maps:get(children, gen_server:call({counters, N}, state)))}
    end])),
    %% Options the launcher refuses before it starts anything.
    ?assertMatch({error, {bad_tls_option, verify, maybe}},
                 pcall(P, ?MODULE, launch, [Opts#{tls => Tls#{verify => maybe}}, fun(_) -> unused end])),
    ?assertMatch({error, {bad_tls_option, cert, missing}},
                 pcall(P, ?MODULE, launch, [Opts#{tls => maps:remove(cert, Tls)}, fun(_) -> unused end])),
    peer:stop(P).

%% On a TLS peer: a launcher with Opts, unlinked from the peer's call
%% process; Fun's result on the node once it is ready; then stopped.
launch(Opts, Fun) ->
    Self = self(),
    Holder = spawn(fun() ->
                           process_flag(trap_exit, true),
                           case tarearbol_cnode_launcher:start_link(Opts) of
                               {ok, L} ->
                                   R = case tarearbol_cnode_launcher:await_ready(L, 15000) of
                                           {ok, N} -> Fun(N);
                                           Error -> Error
                                       end,
                                   unlink(L),
                                   gen_statem:stop(L),
                                   Self ! {self(), R};
                               Error ->
                                   Self ! {self(), Error}
                           end
                   end),
    receive {Holder, R} -> R after 30000 -> timeout end.

bad_tls_options_are_refused_in_one_line(Config) ->
    Pem = fun(F) -> pem(Config, F) end,
    Good = ["--tls-cert", Pem("node.pem"), "--tls-key", Pem("node.key"), "--tls-ca", Pem("ca.pem")],
    Refused = [{["--tls-cert", Pem("missing.pem"), "--tls-key", Pem("node.key"), "--tls-ca", Pem("ca.pem")],
                "--tls-cert " ++ Pem("missing.pem") ++ ": cannot read it: No such file or directory"},
               {["--tls-cert", Pem("node.pem"), "--tls-key", Pem("other.key"), "--tls-ca", Pem("ca.pem")],
                "--tls-key " ++ Pem("other.key") ++ ": not the key of the certificate in " ++ Pem("node.pem")},
               {["--tls-cert", Pem("node.key"), "--tls-key", Pem("node.key"), "--tls-ca", Pem("ca.pem")],
                "--tls-cert " ++ Pem("node.key") ++ ": not a PEM certificate (no start line)"},
               {["--tls-cert", Pem("node.pem"), "--tls-key", Pem("node.key"), "--tls-ca", Pem("node.key")],
                "--tls-ca " ++ Pem("node.key") ++ ": no PEM certificate in it (no certificate or crl found)"},
               {["--tls-cert", Pem("node.pem")], "TLS needs all of --tls-cert, --tls-key and --tls-ca"}],
    [begin
         {exit, 1, Lines} = run(Args),
         ?assertMatch([_], Lines, Lines),
         [_, Text] = binary:split(hd(Lines), <<": ">>),
         ?assertEqual(list_to_binary(Want), Text)
     end || {Args, Want} <- Refused],
    Usage = [{["--tls-verify", "none"], "--tls-verify is a TLS option, and TLS is on only with --tls-cert, --tls-key and --tls-ca"},
             {Good ++ ["--tls-verify", "sometimes"], "--tls-verify wants peer or none, got 'sometimes'"},
             {Good ++ ["--tls-only=maybe"], "--tls-only takes =true or =false, got 'maybe'"}],
    [begin
         {exit, 2, Lines} = run(Args),
         ?assertEqual(<<"tarearbol_cnode: ", (list_to_binary(Want))/binary>>, hd(Lines))
     end || {Args, Want} <- Usage],
    %% An expired certificate of its own: the node starts, and says why
    %% peers will refuse it.
    {ready, Lines} = run(["--tls-cert", Pem("expired.pem"), "--tls-key", Pem("expired.key"),
                          "--tls-ca", Pem("ca.pem")]),
    ?assert(lists:any(fun(L) -> binary:match(L, <<"the certificate has expired">>) =/= nomatch end, Lines)).

run(Args) -> cnode_test:run_until_ready("tlsopt", Args, "/tmp").
