%% Writes seed inputs for fuzz_node: each is the byte stream of one peer,
%% fuzzpeer@localhost, several frames in a row. Its pids name that node so
%% that replies go back over the connection; pids of the node itself
%% (fuzz@localhost, creation 1234 as fuzz_node.c fixes it) let a seed
%% reach workers and managers by pid.
%%   erlc make_node_seeds.erl && erl -noshell -run make_node_seeds main corpus_node
-module(make_node_seeds).
-export([main/1]).

pid(Node, Num, Creation) ->
    N = atom_to_binary(Node, utf8),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary,
                     Num:32, 0:32, Creation:32>>).

frame(Ctl, Msg) ->
    Body = [112, term_to_binary(Ctl) | case Msg of none -> []; _ -> [term_to_binary(Msg)] end],
    [<<(iolist_size(Body)):32>>, Body].

main([Dir]) ->
    P = pid('fuzzpeer@localhost', 1, 1),
    Ref = make_ref(),
    Call = fun(To, Req) -> frame({6, P, '', To}, {'$gen_call', {P, [alias | Ref]}, Req}) end,
    Cast = fun(To, Req) -> frame({6, P, '', To}, {'$gen_cast', Req}) end,
    Mon = fun(To) -> frame({19, P, To, Ref}, none) end,
    Local = fun(Num) -> pid('fuzz@localhost', Num, 1234) end,
    ToPid = fun(Num, Req) -> frame({2, '', Local(Num)}, {'$gen_call', {P, Ref}, Req}) end,
    Seeds =
        [[Mon(counters), Call(counters, {put, <<"a">>, [{payload, 1}, {timeout, 20}]}),
          Call(counters, {get, <<"a">>}), Call(counters, {synch_call, <<"a">>, get})],
         [Call(counters, state), Call(counters, stats), Call(hooks, state), Call(pp, stats)],
         [Call(counters, {put, {id, 1}, #{payload => 5, lull => 1.5, restart => transient}}),
          Call(counters, {put_new, {id, 1}, #{}}), Call(counters, {synch_call, {id, 1}, {add, 2}}),
          Call(counters, {asynch_call, {id, 1}, get}), Call(counters, {del, {id, 1}})],
         [Call(hooks, {put, <<"h">>, [{payload, 0}, {timeout, 10}]}),
          Call(hooks, {synch_call, <<"h">>, {crash, boom}}),
          Call(hooks, {synch_call, <<"h">>, {respond, {replace, <<"x">>, 7}}}),
          Call(hooks, {get, <<"x">>}), Cast(hooks, {del, <<"x">>})],
         [Call(pp, {put, 1, [{payload, #{value => 1, pid => P}}, {timeout, 10}]}),
          Call(pp, {synch_call, 1, ping}), Call(pp, {get, 1})],
         [Call(counters, restart), Cast(counters, restart), Call(counters, nonsense)],
         [Call(tarearbol_cnode, info), Call(tarearbol_cnode, stats),
          Call(net_kernel, {is_auth, 'fuzzpeer@localhost'}), Call(nobody, state)],
         [frame({1, P, Local(N)}, none) || N <- lists:seq(1, 8)]
         ++ [frame({3, P, Local(4), killed}, none)],
         [ToPid(N, get) || N <- lists:seq(1, 12)]
         ++ [frame({2, '', Local(N)}, {payload, 42}) || N <- lists:seq(1, 12)],
         [Call(counters, {put, <<"b">>, [{timeout, 5}]}), frame({35, 99, P, Local(5)}, none),
          frame({20, P, counters, Ref}, none), <<0, 0, 0, 0>>]],
    ok = filelib:ensure_path(Dir),
    [ok = file:write_file(filename:join(Dir, "seed" ++ integer_to_list(I)), iolist_to_binary(S))
     || {I, S} <- lists:zip(lists:seq(1, length(Seeds)), Seeds)],
    halt(0).
