%% Writes seed inputs for fuzz_handshake: each is the byte stream of one
%% would-be peer of fuzz@localhost, whose cookie (fuzzcookie) and fixed
%% challenge (16#5eed1234) are those of fuzz_handshake.c. Full handshakes
%% carry the right digest, so they complete and go on to the connection's
%% packets; the rest stop at some point of the handshake.
%%   erlc make_hs_seeds.erl && erl -noshell -run make_hs_seeds main corpus_hs
-module(make_hs_seeds).
-export([main/1]).

-define(COOKIE, "fuzzcookie").
-define(CHALLENGE, 16#5eed1234).
-define(PEER, <<"fuzzpeer@localhost">>).
%% The flags of an OTP 25 node (raw_dist:flags/0), and the shorthand that
%% stands for every mandatory one.
-define(FLAGS, (16#04 bor 16#08 bor 16#10 bor 16#80 bor 16#100 bor 16#200 bor
                16#400 bor 16#800 bor 16#4000 bor 16#10000 bor 16#20000 bor
                16#40000 bor 16#01000000 bor 16#02000000 bor 16#04000000 bor
                (16#04 bsl 32))).
-define(DIGEST_25, 16#04000000).
-define(MAP_TAG, 16#20000).

msg(Body) -> [<<(iolist_size(Body)):16>>, Body].

send_name(Flags, Name) ->
    msg(<<$N, Flags:64, 77:32, (byte_size(Name)):16, Name/binary>>).

digest(Challenge) -> erlang:md5([?COOKIE, integer_to_list(Challenge)]).

reply() -> msg(<<$r, 42:32, (digest(?CHALLENGE))/binary>>).

pid(Node, Num) ->
    N = atom_to_binary(Node, utf8),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary, Num:32, 0:32, 77:32>>).

frame(Ctl, Msg) ->
    Body = [112, term_to_binary(Ctl) | case Msg of none -> []; _ -> [term_to_binary(Msg)] end],
    [<<(iolist_size(Body)):32>>, Body].

main([Dir]) ->
    P = pid('fuzzpeer@localhost', 1),
    Ref = make_ref(),
    Call = fun(To, Req) -> frame({6, P, '', To}, {'$gen_call', {P, [alias | Ref]}, Req}) end,
    Full = [send_name(?FLAGS, ?PEER), reply()],
    Seeds =
        [%% Complete, then what a BEAM peer sends first.
         Full ++ [<<0:32>>, Call(net_kernel, {is_auth, 'fuzzpeer@localhost'})],
         Full ++ [Call(tarearbol_cnode, info), Call(tarearbol_cnode, stats),
                  frame({19, P, tarearbol_cnode, Ref}, none),
                  frame({1, P, pid('fuzz@localhost', 1)}, none)],
         %% Complete, with only the shorthand flag among the mandatory ones.
         [send_name(?DIGEST_25 bor 16#08, ?PEER), reply(), <<0:32>>],
         %% Complete, with a packet cut short and one too long.
         Full ++ [<<100:32, 112, 131>>],
         Full ++ [<<(1 bsl 30):32>>],
         %% Only the send_name: the node answers, then the peer goes.
         send_name(?FLAGS, ?PEER),
         %% A peer lacking MAP_TAG, without the shorthand: refused.
         send_name(?FLAGS band bnot (?MAP_TAG bor ?DIGEST_25), ?PEER),
         send_name(0, ?PEER),
         %% The old send_name 'n' (before OTP 23).
         msg(<<$n, 5:16, 16#7ffff:32, ?PEER/binary>>),
         %% Bad send_names: no '@', an empty name, a name with a NUL, a
         %% name length that is not the message's, not 'N', too short.
         send_name(?FLAGS, <<"nohost">>),
         send_name(?FLAGS, <<>>),
         send_name(?FLAGS, <<"a", 0, "b@c">>),
         msg(<<$N, ?FLAGS:64, 77:32, 40:16, ?PEER/binary>>),
         msg(<<"GET / HTTP/1.1">>),
         msg(<<$N, 1, 2>>),
         %% Bad lengths: zero, past the largest message, cut short.
         <<0:16>>,
         <<65535:16, $N>>,
         <<0, 20, $N>>,
         <<0>>,
         %% A challenge_reply with the wrong digest, of the wrong size, or
         %% not a reply at all.
         [send_name(?FLAGS, ?PEER), msg(<<$r, 42:32, 0:128>>)],
         [send_name(?FLAGS, ?PEER), msg(<<$r, 42:32, (digest(?CHALLENGE))/binary, 0>>)],
         [send_name(?FLAGS, ?PEER), msg(<<$a, (digest(42))/binary>>)],
         %% A second send_name where the reply should be.
         [send_name(?FLAGS, ?PEER), send_name(?FLAGS, ?PEER)]],
    ok = filelib:ensure_path(Dir),
    [ok = file:write_file(filename:join(Dir, "seed" ++ integer_to_list(I)), iolist_to_binary(S))
     || {I, S} <- lists:zip(lists:seq(1, length(Seeds)), Seeds)],
    halt(0).
