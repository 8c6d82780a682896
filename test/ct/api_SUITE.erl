%% @doc The Erlang application: the launcher runs and restarts the real
%% binary, and the tarearbol_cnode API answers as Tarearbol does.
-module(api_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [every_api_function_against_a_real_node,
     dump_pages_through_every_child_once_with_its_payload,
     dump_refuses_bad_cursors_and_limits_and_says_when_the_table_moved,
     node_errors_are_error_tuples,
     launcher_restarts_a_killed_node,
     missing_binary_is_a_clear_error,
     bad_manager_spec_is_a_clear_error,
     node_log_lines_reach_logger,
     probe_reports_up_down_and_timeouts,
     a_node_that_is_not_distributed_becomes_so].

init_per_suite(Config) -> cnode_test:app_init_suite(Config).
end_per_suite(Config) -> cnode_test:app_end_suite(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> cnode_test:app_end_case(Config).

opts(Extra) -> cnode_test:launcher_opts("api", ["counters=counter,children=2,timeout=100"], Extra).

every_api_function_against_a_real_node(_Config) ->
    {ok, N} = tarearbol_cnode:start_node(opts(#{})),
    M = {counters, N},
    cnode_test:wait_until(fun() -> maps:get(state, tarearbol_cnode:state(M)) =:= started end, 5000),
    ?assertEqual(ok, tarearbol_cnode:put(M, <<"a">>, [{payload, 1}, {timeout, 0}])),
    ?assertEqual(ok, tarearbol_cnode:put_new(M, <<"a">>, [{payload, 2}])),
    ?assertMatch(#{pid := P} when is_pid(P), tarearbol_cnode:get(M, <<"a">>)),
    ?assertEqual(#{}, tarearbol_cnode:get(M, <<"none">>)),
    ?assertEqual({ok, 1}, tarearbol_cnode:synch_call(M, <<"a">>, get)),
    ?assertEqual(error, tarearbol_cnode:synch_call(M, <<"none">>, get)),
    ?assertEqual(ok, tarearbol_cnode:asynch_call(M, <<"a">>, {add, 4})),
    cnode_test:wait_until(fun() -> tarearbol_cnode:synch_call(M, <<"a">>, get) =:= {ok, 5} end, 5000),
    ?assertEqual(ok, tarearbol_cnode:del(M, <<"a">>)),
    ?assertEqual({error, not_found}, tarearbol_cnode:del(M, <<"a">>)),
    ?assertMatch({error, {bad_opts, _}}, tarearbol_cnode:put(M, <<"b">>, [{timeout, -1}])),
    ?assertEqual(ok, tarearbol_cnode:restart(M)),
    cnode_test:wait_until(fun() -> maps:get(state, tarearbol_cnode:state(M)) =:= started end, 5000),
    ?assertMatch(#{performs := _, workers := 2}, tarearbol_cnode:stats(M)),
    ?assertMatch(#{node := N, managers := [#{name := counters}]}, tarearbol_cnode:info(N)),
    ?assertMatch(#{connections_accepted := _}, tarearbol_cnode:node_stats(N)).

dump_pages_through_every_child_once_with_its_payload(_Config) ->
    {ok, N} = tarearbol_cnode:start_node(opts(#{})),
    M = {counters, N},
    cnode_test:wait_until(fun() -> maps:get(state, tarearbol_cnode:state(M)) =:= started end, 5000),
    Ids = lists:seq(1, 2500),
    [ok = tarearbol_cnode:put(M, {id, I}, [{payload, I * 10}, {timeout, 0}]) || I <- Ids],
    Pages = walk(M, 0, 333, []),
    All = lists:append(Pages),
    ?assert(length(Pages) >= 2500 div 333),
    ?assert(lists:all(fun(P) -> length(P) =< 333 end, Pages)),
    Mine = [{I, P, O} || {{id, I}, O, P, _V} <- All],
    %% Every id once, with the payload and opts it was put with; the two
    %% spec children are there too.
    ?assertEqual(Ids, lists:sort([I || {I, _, _} <- Mine])),
    ?assertEqual([], [I || {I, P, _} <- Mine, P =/= I * 10]),
    ?assertEqual([], [I || {I, _, O} <- Mine, O =/= [{payload, I * 10}, {timeout, 0}]]),
    ?assertEqual(2502, length(All)).

walk(M, Cursor, Limit, Acc) ->
    case tarearbol_cnode:dump(M, Cursor, Limit) of
        {ok, Page, done} -> lists:reverse([Page | Acc]);
        {ok, Page, Next} -> walk(M, Next, Limit, [Page | Acc])
    end.

dump_refuses_bad_cursors_and_limits_and_says_when_the_table_moved(_Config) ->
    {ok, N} = tarearbol_cnode:start_node(opts(#{})),
    M = {counters, N},
    cnode_test:wait_until(fun() -> maps:get(state, tarearbol_cnode:state(M)) =:= started end, 5000),
    [?assertMatch({error, {bad_cursor, C}}, tarearbol_cnode:dump(M, C, 10))
     || C <- [1, -1, foo, {1}, {1, 2, 3}, {a, 0}, {4, 5}, <<"x">>, [0]]],
    [?assertMatch({error, {bad_limit, L}}, tarearbol_cnode:dump(M, 0, L))
     || L <- [0, -5, 10001, 1 bsl 70, x, 1.5]],
    {ok, [_], Next} = tarearbol_cnode:dump(M, 0, 1),
    %% Enough children to grow the table: the cursor of before is stale.
    [ok = tarearbol_cnode:put(M, I, [{timeout, 0}]) || I <- lists:seq(1, 5000)],
    ?assertEqual({error, moved}, tarearbol_cnode:dump(M, Next, 1)),
    ?assertMatch({ok, [_ | _], _}, tarearbol_cnode:dump(M, 0, 10000)),
    ?assertEqual(pong, net_adm:ping(N)).

node_errors_are_error_tuples(_Config) ->
    {ok, N} = tarearbol_cnode:start_node(opts(#{})),
    ?assertEqual({error, noproc}, tarearbol_cnode:state({nobody, N})),
    ?assertEqual({error, nodedown}, tarearbol_cnode:state({counters, 'nonode_here@nowhere'})),
    ?assertEqual({error, {bad_manager, counters}}, tarearbol_cnode:state(counters)).

launcher_restarts_a_killed_node(_Config) ->
    O = opts(#{}),
    {ok, N} = tarearbol_cnode:start_node(O),
    M = {counters, N},
    #{creation := C1} = tarearbol_cnode:info(N),
    [{_, L, _, _}] = [X || {{launcher, Name}, _, _, _} = X <- supervisor:which_children(tarearbol_cnode_sup),
                           Name =:= maps:get(name, O)],
    OsPid = tarearbol_cnode_launcher:os_pid(L),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    cnode_test:wait_until(fun() ->
        case tarearbol_cnode:info(N) of
            #{creation := C2} -> C2 =/= C1;
            _ -> false
        end end, 15000),
    ?assertNotEqual(OsPid, tarearbol_cnode_launcher:os_pid(L)),
    cnode_test:wait_until(fun() -> maps:get(state, tarearbol_cnode:state(M)) =:= started end, 5000),
    ?assertEqual(ok, tarearbol_cnode:put(M, <<"after">>, [{timeout, 0}])).

missing_binary_is_a_clear_error(_Config) ->
    ?assertEqual({error, {no_binary, "/nonexistent/tarearbol_cnode"}},
                 tarearbol_cnode:start_node(opts(#{binary => "/nonexistent/tarearbol_cnode"}))),
    ?assertEqual({error, {bad_opts, #{}}}, tarearbol_cnode:start_node(#{})).

bad_manager_spec_is_a_clear_error(_Config) ->
    {error, {exit_status, 1, Lines}} = tarearbol_cnode:start_node(opts(#{managers => ["m=nosuch"]})),
    ?assert(lists:any(fun(L) -> binary:match(L, <<"unknown behaviour">>) =/= nomatch end, Lines), Lines).

node_log_lines_reach_logger(_Config) ->
    Self = self(),
    #{level := Primary} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, info),
    ok = logger:add_handler(api_suite_capture, ?MODULE, #{config => Self, level => all,
                                                           filter_default => log}),
    try
        {ok, N} = tarearbol_cnode:start_node(opts(#{args => ["--log-level", "info"]})),
        %% The node logs "registered with epmd" at info level.
        receive {logged, info, Text} when is_list(Text) -> ok
        after 5000 -> ct:fail(no_log_line)
        end,
        ?assert(is_atom(N))
    after
        logger:remove_handler(api_suite_capture),
        logger:set_primary_config(level, Primary)
    end.

%% logger handler callback for the test above: the node's lines carry
%% their C source file as metadata.
log(#{level := Level, msg := {Fmt, Args}, meta := #{file := "listen.c"}}, #{config := Pid}) ->
    Text = lists:flatten(io_lib:format(Fmt, Args)),
    case string:find(Text, "registered with epmd") of
        nomatch -> ok;
        _ -> Pid ! {logged, Level, Text}
    end;
log(_, _) -> ok.

probe_reports_up_down_and_timeouts(_Config) ->
    {ok, N} = tarearbol_cnode:start_node(opts(#{managers => ["probes=probe,timeout=100"]})),
    M = {probes, N},
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    spawn(fun Acc() -> case gen_tcp:accept(L) of {ok, S} -> gen_tcp:close(S), Acc(); _ -> ok end end),
    {ok, Up} = inet:port(L),
    {ok, Tmp} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Down} = inet:port(Tmp),
    gen_tcp:close(Tmp),
    Probe = fun(Port, T) -> [{payload, #{host => <<"127.0.0.1">>, port => Port, timeout_ms => T}},
                             {timeout, 100}] end,
    ok = tarearbol_cnode:put(M, up, Probe(Up, 500)),
    ok = tarearbol_cnode:put(M, down, Probe(Down, 500)),
    %% A loopback listener that never accepts, its backlog filled: further
    %% SYNs are dropped, so the connect runs into the probe's deadline.
    {ok, Full} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {backlog, 0}]),
    {ok, FullPort} = inet:port(Full),
    Fillers = [gen_tcp:connect({127, 0, 0, 1}, FullPort, [], 200) || _ <- lists:seq(1, 4)],
    ok = tarearbol_cnode:put(M, stuck, [{payload, #{host => "127.0.0.1", port => FullPort, timeout_ms => 50}},
                                        {timeout, 100000}, {instant_perform, true}]),
    Value = fun(Id) -> maps:get(value, tarearbol_cnode:get(M, Id)) end,
    cnode_test:wait_until(fun() -> is_map(Value(up)) andalso is_map(Value(down)) end, 5000),
    ?assertMatch(#{status := up, error := nil, latency_us := L1, checked_at := #{'__struct__' := 'Elixir.DateTime'}}
                   when is_integer(L1), Value(up)),
    ?assertMatch(#{status := down, error := econnrefused}, Value(down)),
    %% The endpoint goes away: the probe sees it.
    gen_tcp:close(L),
    cnode_test:wait_until(fun() -> maps:get(status, Value(up)) =:= down end, 5000),
    cnode_test:wait_until(fun() -> is_map(Value(stuck)) end, 5000),
    ?assertMatch(#{status := down, error := timeout, latency_us := Lat} when Lat >= 50000, Value(stuck)),
    [catch gen_tcp:close(S) || {ok, S} <- Fillers],
    gen_tcp:close(Full),
    ?assertEqual({error, {bad_opts, {timeout, x}}}, tarearbol_cnode:put(M, bad, [{timeout, x}])).

a_node_that_is_not_distributed_becomes_so(_Config) ->
    %% A peer with no node name, driven over stdio: asked to, start_node
    %% must start distribution (and epmd) itself before it can reach the
    %% C node.
    Ebin = filename:dirname(code:which(tarearbol_cnode)),
    {ok, P, nonode@nohost} = peer:start(#{connection => standard_io, args => ["-pa", Ebin]}),
    try
        ?assertEqual(false, peer:call(P, erlang, is_alive, [])),
        {ok, _} = peer:call(P, application, ensure_all_started, [tarearbol_cnode]),
        {ok, N} = peer:call(P, tarearbol_cnode, start_node,
                            [#{name => cnode_test:unique("nd"), binary => cnode_test:bin(),
                               managers => ["counters=counter,children=1"],
                               start_distribution => true}], 30000),
        ?assert(peer:call(P, erlang, is_alive, [])),
        ?assertMatch(#{node := N}, peer:call(P, tarearbol_cnode, info, [N]))
    after
        peer:stop(P)
    end.
