%% @doc OTP's sys module against the C node, from a real BEAM node: a
%% manager's registered name and a worker's pid answer get_state (the
%% State map, the Child map) and get_status (the status tuple gen_server
%% gives); every other system message (suspend, resume, replace_state,
%% change_code, terminate, the debug commands) is refused at once with an
%% error sys returns or raises, timed against a long timeout; the node's
%% own services refuse them too; and malformed or hostile system messages
%% never crash the node.
-module(sys_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(M, counters).
%% sys's timeout in the refusal cases; a refusal must come well before it.
-define(LONG, 10000).
-define(AT_ONCE_MS, 1000).

all() ->
    [get_state_on_a_manager_name_is_its_state_map,
     get_state_on_a_worker_pid_is_its_child_map,
     get_state_on_a_busy_worker_answers_at_once,
     get_state_while_starting_answers_at_once,
     get_status_on_a_manager_has_gen_servers_shape,
     get_status_on_a_worker_names_its_id_and_manager,
     suspend_is_refused_at_once_and_the_manager_goes_on,
     replace_state_is_refused_at_once_with_an_error_raised,
     every_other_system_message_is_refused_at_once_by_managers_and_workers,
     node_services_refuse_system_messages_at_once,
     a_peer_sees_system_replies_on_its_own_tag,
     hostile_system_messages_never_crash_the_node].

init_per_testcase(get_state_while_starting_answers_at_once, Config) ->
    cnode_test:init_case(Config, ["--manager", "counters=counter,timeout=0,specs_delay_ms=3000"]);
init_per_testcase(_Case, Config) ->
    cnode_test:init_case(Config, ["--threads", "2",
                                  "--manager", "counters=counter,children=3,timeout=0"],
                         ?M).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config).

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).

worker(N, Id) ->
    ok = call(N, {put, Id, [{payload, 7}, {timeout, 0}]}),
    #{pid := P} = call(N, {get, Id}),
    P.

%% Runs F, returns {Microseconds, Result or {raised, Class, Reason}}.
timed(F) ->
    timer:tc(fun() -> try F() catch C:R -> {raised, C, R} end end).

assert_at_once(Us) ->
    ?assert(Us < ?AT_ONCE_MS * 1000, {took_us, Us}).

%% ---------------------------------------------------------------------------

get_state_on_a_manager_name_is_its_state_map(Config) ->
    N = ?config(node, Config),
    State = sys:get_state({?M, N}, ?LONG),
    ?assertEqual(call(N, state), State),
    ?assertMatch(#{'__struct__' := 'Elixir.counters.State', state := started,
                   manager := counters}, State),
    ?assertEqual([<<"c1">>, <<"c2">>, <<"c3">>], lists:sort(maps:keys(maps:get(children, State)))).

get_state_on_a_worker_pid_is_its_child_map(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"x">>),
    Child = sys:get_state(P, ?LONG),
    ?assertEqual(call(N, {get, <<"x">>}), Child),
    ?assertMatch(#{'__struct__' := 'Elixir.Tarearbol.DynamicManager.Child', pid := P,
                   'busy?' := nil, opts := [{payload, 7}, {timeout, 0}]}, Child).

get_state_on_a_busy_worker_answers_at_once(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"busy">>),
    gen_server:cast(P, {sleep, 3000}),
    %% The cast runs on the pool; busy? turns into a date once it does.
    Child = cnode_test:wait_until(
              fun() ->
                      case sys:get_state(P, ?LONG) of
                          #{'busy?' := nil} -> false;
                          C -> {true, C}
                      end
              end, 2000),
    ?assertMatch(#{'busy?' := #{'__struct__' := 'Elixir.DateTime'}}, Child),
    {Us, Again} = timed(fun() -> sys:get_state(P, ?LONG) end),
    assert_at_once(Us),
    ?assertMatch(#{pid := P}, Again).

get_state_while_starting_answers_at_once(Config) ->
    N = ?config(node, Config),
    %% children_specs takes 3 s: the state request is served meanwhile
    %% (it is never held), and so is sys's.
    {Us, State} = timed(fun() -> sys:get_state({?M, N}, ?LONG) end),
    assert_at_once(Us),
    ?assertMatch(#{state := starting}, State),
    {Us2, Status} = timed(fun() -> sys:get_status({?M, N}, ?LONG) end),
    assert_at_once(Us2),
    ?assertMatch({status, _, {module, gen_server}, _}, Status).

get_status_on_a_manager_has_gen_servers_shape(Config) ->
    N = ?config(node, Config),
    Status = sys:get_status({?M, N}, ?LONG),
    {status, Pid, {module, gen_server}, [PDict, running, Parent, [], Misc]} = Status,
    ?assertEqual(N, node(Pid)),
    ?assertEqual(Pid, rpc_whereis(N)),
    ?assertEqual([], PDict),
    ?assertEqual(N, node(Parent)),
    [{header, Header}, {data, Data}, {data, [{"State", State}]}] = Misc,
    ?assertEqual("Status for tarearbol_cnode manager counters", Header),
    ?assertEqual([{"Status", running}, {"Parent", Parent}, {"Logged events", []}], Data),
    ?assertEqual(call(N, state), State),
    %% Printable as a status, as from a BEAM process.
    ?assert(is_list(lists:flatten(io_lib:format("~p", [Status])))).

%% The manager's pid, as a monitor by name reports it.
rpc_whereis(N) ->
    #{pid := W} = call(N, {get, <<"c1">>}),
    {status, _, _, [_, _, Parent, _, _]} = sys:get_status(W, ?LONG),
    Parent.

get_status_on_a_worker_names_its_id_and_manager(Config) ->
    N = ?config(node, Config),
    P = worker(N, {tuple, "id"}),
    {status, P, {module, gen_server}, [[], running, Parent, [], Misc]} =
        sys:get_status(P, ?LONG),
    [{header, Header}, {data, _}, {data, [{"Id", Id}, {"State", Child}]}] = Misc,
    ?assertEqual("Status for a worker of tarearbol_cnode manager counters", Header),
    ?assertEqual({tuple, "id"}, Id),
    ?assertEqual(call(N, {get, {tuple, "id"}}), Child),
    %% The worker's parent is its manager.
    {status, Parent, _, _} = sys:get_status({?M, N}, ?LONG).

suspend_is_refused_at_once_and_the_manager_goes_on(Config) ->
    N = ?config(node, Config),
    {Us, R} = timed(fun() -> sys:suspend({?M, N}, ?LONG) end),
    assert_at_once(Us),
    ?assertEqual({error, {not_supported, suspend}}, R),
    %% Not suspended: it answers as ever.
    ?assertMatch(#{state := started}, call(N, state)),
    ok = call(N, {put, <<"after">>, []}),
    {Us2, R2} = timed(fun() -> sys:resume({?M, N}, ?LONG) end),
    assert_at_once(Us2),
    ?assertEqual({error, {not_supported, resume}}, R2).

replace_state_is_refused_at_once_with_an_error_raised(Config) ->
    N = ?config(node, Config),
    Before = call(N, state),
    {Us, R} = timed(fun() -> sys:replace_state({?M, N}, fun(S) -> S#{state => down} end, ?LONG) end),
    assert_at_once(Us),
    ?assertEqual({raised, error, {not_supported, replace_state}}, R),
    P = worker(N, <<"w">>),
    {Us2, R2} = timed(fun() -> sys:replace_state(P, fun(_) -> x end, ?LONG) end),
    assert_at_once(Us2),
    ?assertEqual({raised, error, {not_supported, replace_state}}, R2),
    ?assertEqual(maps:get(state, Before), maps:get(state, call(N, state))).

every_other_system_message_is_refused_at_once_by_managers_and_workers(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"w">>),
    Cases = [{fun(T) -> sys:change_code(T, counter, "1", extra, ?LONG) end,
              {error, {not_supported, change_code}}},
             {fun(T) -> sys:terminate(T, normal, ?LONG) end, {error, {not_supported, terminate}}},
             {fun(T) -> sys:trace(T, true, ?LONG) end, {error, {not_supported, {debug, trace}}}},
             {fun(T) -> sys:log(T, get, ?LONG) end, {error, {not_supported, {debug, log}}}},
             {fun(T) -> sys:statistics(T, get, ?LONG) end,
              {error, {not_supported, {debug, statistics}}}},
             {fun(T) -> sys:no_debug(T, ?LONG) end, {error, {not_supported, {debug, no_debug}}}},
             {fun(T) -> sys:suspend(T, ?LONG) end, {error, {not_supported, suspend}}}],
    [begin
         {Us, R} = timed(fun() -> F(T) end),
         assert_at_once(Us),
         ?assertEqual(Want, R)
     end || T <- [{?M, N}, P], {F, Want} <- Cases],
    %% Terminate was refused: both are still there.
    ?assertMatch(#{pid := P}, call(N, {get, <<"w">>})),
    ?assert(maps:get(bad_requests, call(N, stats)) >= 2 * length(Cases)).

node_services_refuse_system_messages_at_once(Config) ->
    N = ?config(node, Config),
    [begin
         {Us, R} = timed(fun() -> sys:get_state({Name, N}, ?LONG) end),
         assert_at_once(Us),
         ?assertEqual({raised, error, {not_supported, get_state}}, R),
         {Us2, R2} = timed(fun() -> sys:suspend({Name, N}, ?LONG) end),
         assert_at_once(Us2),
         ?assertEqual({error, {not_supported, suspend}}, R2)
     end || Name <- [tarearbol_cnode, net_kernel]],
    ?assertEqual(pong, net_adm:ping(N)).

%% A peer node (its own BEAM) asks by hand: the reply carries its tag.
a_peer_sees_system_replies_on_its_own_tag(Config) ->
    N = ?config(node, Config),
    {Peer, PN} = cnode_test:start_peer("sys"),
    try
        Ref = make_ref(),
        Got = erpc:call(PN, fun() ->
                                    {?M, N} ! {system, {self(), Ref}, get_state},
                                    {?M, N} ! {system, {self(), Ref}, {weird, 1, 2}},
                                    [receive {Ref, R} -> R after 5000 -> timeout end
                                     || _ <- [1, 2]]
                            end),
        ?assertMatch([#{state := started}, {error, {not_supported, weird}}], Got),
        %% sys itself, from the peer.
        ?assertMatch(#{manager := counters},
                     erpc:call(PN, sys, get_state, [{?M, N}, ?LONG]))
    after
        peer:stop(Peer)
    end.

hostile_system_messages_never_crash_the_node(Config) ->
    N = ?config(node, Config),
    P = worker(N, <<"h">>),
    Ref = make_ref(),
    Deep = lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 5000)),
    DeepTuple = lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 5000)),
    Big = binary:copy(<<"z">>, 1 bsl 20),
    Forms = [{system, garbage, x},
             {system, {self()}, get_state},
             {system, {not_a_pid, Ref}, get_state},
             {system, {self(), Ref}},
             {system, {self(), Ref}, get_state, extra},
             system,
             {system, self(), get_state},
             {system, {self(), Ref}, Deep},
             {system, {self(), Ref}, DeepTuple},
             {system, {self(), Ref}, {debug, Deep}},
             {system, {self(), Ref}, {debug, {Deep, x}}},
             {system, {self(), Ref}, {Big, x}},
             {system, {self(), Ref}, {<<"not an atom">>, 1}},
             {system, {self(), Ref}, {}},
             {system, {self(), Ref}, Big}],
    [T ! F || T <- [{?M, N}, P, {tarearbol_cnode, N}], F <- Forms],
    %% The well-formed ones (a {Pid, Tag} From) are each answered with a
    %% refusal, 3 targets x 8 forms; nothing else comes back.
    Replies = collect(Ref, 24, 10000),
    ?assertEqual(24, length(Replies)),
    ?assert(lists:all(fun({error, {not_supported, _}}) -> true; (_) -> false end, Replies)),
    ?assert(lists:member({error, {not_supported, Deep}}, Replies)),
    ?assert(lists:member({error, {not_supported, debug}}, Replies)),
    receive {Ref, Extra} -> ct:fail({unexpected_reply, Extra}) after 200 -> ok end,
    %% The node and its processes go on.
    ?assertMatch(#{state := started}, sys:get_state({?M, N}, ?LONG)),
    ?assertMatch(#{pid := P}, sys:get_state(P, ?LONG)),
    ?assertEqual(pong, net_adm:ping(N)).

collect(_Ref, 0, _T) -> [];
collect(Ref, K, T) ->
    receive {Ref, R} -> [R | collect(Ref, K - 1, T)]
    after T -> []
    end.
