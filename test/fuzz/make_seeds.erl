%% Writes seed inputs for the fuzzer: real frames of the kinds peers send.
-module(make_seeds).
-export([main/1]).
main([Dir]) ->
    P = list_to_pid("<0.1.0>"),
    Ref = make_ref(),
    Frame = fun(Ctl, Msg) ->
                Body = [112, term_to_binary(Ctl) | case Msg of none -> []; _ -> [term_to_binary(Msg)] end],
                iolist_to_binary([0, <<(iolist_size(Body)):32>>, Body])
            end,
    Seeds = [Frame({6, P, '', counters}, {'$gen_call', {P, [alias | Ref]}, {put, <<"id">>, [{payload, 1}, {timeout, 100}]}}),
             Frame({6, P, '', counters}, {'$gen_call', {P, Ref}, {put, #{a => 1, b => "str"}, #{lull => 1.5, restart => transient}}}),
             Frame({6, P, '', counters}, {'$gen_cast', {del, {tuple, 1.0, -5, 123456789012345678901234567890}}}),
             Frame({2, '', P}, {'$gen_call', {P, Ref}, {synch_call, nil, {respond, {replace, <<"x">>, 7}}}}),
             Frame({2, '', P}, {'$gen_call', {P, Ref}, {respond, {{timeout, 10}, ok}}}),
             Frame({1, P, P}, none),
             Frame({35, 99, P, P}, none),
             Frame({3, P, P, killed}, none),
             Frame({19, P, nobody, Ref}, none),
             <<0, 0, 0, 0, 0>>],
    [ok = file:write_file(filename:join(Dir, "seed" ++ integer_to_list(I)), S)
     || {I, S} <- lists:zip(lists:seq(1, length(Seeds)), Seeds)],
    halt(0).
