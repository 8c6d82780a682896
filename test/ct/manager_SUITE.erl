%% @doc Dynamic managers in C, through Tarearbol's wire API, from BEAM: the
%% counter behaviour serves as the workload.
-module(manager_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(M, counters).

all() ->
    [state_is_started_with_children_specs_and_shaped_for_elixir,
     info_lists_the_managers,
     performs_run_every_timeout,
     counter_counts_across_every_integer_form,
     put_starts_a_worker_and_get_shows_it,
     put_replaces_an_existing_worker,
     put_new_leaves_an_existing_worker_alone,
     del_removes_and_del_of_missing_is_not_found,
     get_of_missing_is_an_empty_map,
     ids_compare_by_term_equality,
     synch_call_by_id_and_missing,
     asynch_call_by_id_and_missing,
     worker_pid_answers_call_and_cast,
     payload_message_replaces_payload,
     payload_message_waits_for_a_busy_worker,
     response_ok_changes_payload_not_value,
     response_replace_changes_both,
     response_replace_with_new_id_moves_the_worker,
     response_timeout_changes_the_period,
     response_other_is_stored_as_value,
     response_nil_leaves_the_value_alone,
     response_halt_removes_the_worker,
     timeout_zero_never_performs,
     instant_perform_true_and_integer,
     busy_shows_a_datetime_while_a_callback_runs,
     slow_callback_counts_a_timeout,
     mailbox_overflow_answers_overloaded,
     pickup_hashring_is_stable,
     pickup_random_spreads,
     pickup_stream_skips_busy_workers,
     restart_returns_to_children_specs,
     cast_forms_of_put_put_new_del_restart,
     bad_opts_are_refused_with_detail,
     bad_requests_are_refused,
     manager_stats_report_counters_and_lateness,
     deleting_most_workers_gives_memory_back_and_the_rest_work_on,
     children_specs_with_bad_entries_puts_every_good_one,
     bad_manager_specs_exit_nonzero,
     state_is_starting_until_children_specs_are_put,
     puts_and_dels_while_starting_apply_after_children_specs_in_order,
     get_while_starting_waits_for_the_boot,
     state_changes_run_in_order_when_starting_is_slow,
     crash_restarts_a_permanent_worker_with_original_opts,
     crash_reason_reaches_linked_processes,
     restart_types_transient_and_temporary,
     intensity_exceeded_restarts_every_worker,
     manager_goes_down_past_its_own_intensity,
     init_builds_the_payload_before_the_first_perform,
     payload_message_reruns_init,
     terminate_runs_with_the_reason_on_every_stop,
     handle_timeout_runs_for_a_slow_callback,
     behaviour_from_a_shared_object_runs,
     shared_object_without_the_symbol_is_refused].

init_per_testcase(Case, Config) ->
    Extra = case Case of
                mailbox_overflow_answers_overloaded -> ",max_mailbox=2";
                pickup_random_spreads -> ",pickup=random";
                pickup_stream_skips_busy_workers -> ",pickup=stream";
                _ -> ""
            end,
    cnode_test:init_case(Config, ["--threads", "2",
                                  "--manager", "counters=counter_hooks,children=3,timeout=100" ++ Extra],
                         ?M).

end_per_testcase(_Case, Config) -> cnode_test:end_case(Config).

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).
get(N, Id) -> call(N, {get, Id}).
value(N, Id) -> maps:get(value, get(N, Id)).
payload(N, Id) -> {ok, P} = call(N, {synch_call, Id, get}), P.
is_busy(N, Id) -> maps:get('busy?', get(N, Id)) =/= nil.
children(N) -> maps:get(children, call(N, state)).

%% ---------------------------------------------------------------------------

state_is_started_with_children_specs_and_shaped_for_elixir(Config) ->
    N = ?config(node, Config),
    S = call(N, state),
    ?assertMatch(#{'__struct__' := 'Elixir.counters.State', state := started,
                   manager := counters, children := _}, S),
    Ch = maps:get(children, S),
    ?assertEqual([<<"c1">>, <<"c2">>, <<"c3">>], lists:sort(maps:keys(Ch))),
    [?assertMatch(#{'__struct__' := 'Elixir.Tarearbol.DynamicManager.Child',
                    pid := P, value := _, 'busy?' := _, opts := [{payload, 0}]}
                    when is_pid(P) andalso node(P) =:= N, C)
     || C <- maps:values(Ch)],
    Pids = [P || #{pid := P} <- maps:values(Ch)],
    ?assertEqual(3, length(lists:usort(Pids))).

info_lists_the_managers(Config) ->
    N = ?config(node, Config),
    #{managers := Ms} = cnode_test:call(N, info),
    ?assertMatch([#{name := counters, behaviour := counter_hooks, workers := 3, state := started}], Ms).

performs_run_every_timeout(Config) ->
    N = ?config(node, Config),
    %% counter's perform returns {replace, N + 1}: the value counts performs.
    cnode_test:wait_until(fun() -> is_integer(value(N, <<"c1">>)) andalso value(N, <<"c1">>) >= 5 end, 5000),
    ?assert(payload(N, <<"c1">>) >= 5).

%% counter writes {replace, N + 1} by hand for the small forms (0..255 one
%% byte, then 32 bits) and with ei past them: every crossing counts on,
%% payload and value alike.
counter_counts_across_every_integer_form(Config) ->
    N = ?config(node, Config),
    Starts = [254, -3, 2147483646, -2147483650, 1 bsl 40],
    [ok = call(N, {put, {int, S}, [{payload, S}, {timeout, 20}]}) || S <- Starts],
    [cnode_test:wait_until(fun() -> payload(N, {int, S}) >= S + 3 end, 5000) || S <- Starts],
    [begin
         V = value(N, {int, S}),
         ?assert(is_integer(V) andalso V >= S + 3)
     end || S <- Starts].

put_starts_a_worker_and_get_shows_it(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"new">>, [{payload, 40}, {timeout, 50}]}),
    ?assertMatch(#{pid := P, opts := [{payload, 40}, {timeout, 50}]} when is_pid(P), get(N, <<"new">>)),
    cnode_test:wait_until(fun() -> payload(N, <<"new">>) >= 42 end, 5000),
    ?assertEqual(4, maps:size(children(N))).

put_replaces_an_existing_worker(Config) ->
    N = ?config(node, Config),
    #{pid := P1} = get(N, <<"c1">>),
    ok = call(N, {put, <<"c1">>, #{payload => 1000, timeout => 100000}}),
    #{pid := P2, opts := Opts} = get(N, <<"c1">>),
    ?assertNotEqual(P1, P2),
    ?assertEqual(#{payload => 1000, timeout => 100000}, Opts),
    ?assertEqual(1000, payload(N, <<"c1">>)),
    ?assertEqual(3, maps:size(children(N))),
    %% The old pid is gone: calls to it fail at once.
    ?assertExit({noproc, _}, gen_server:call(P1, get, 60000)).

put_new_leaves_an_existing_worker_alone(Config) ->
    N = ?config(node, Config),
    #{pid := P1} = get(N, <<"c2">>),
    ok = call(N, {put_new, <<"c2">>, [{payload, 999}]}),
    ?assertMatch(#{pid := P1}, get(N, <<"c2">>)),
    ?assertNotEqual(999, payload(N, <<"c2">>)),
    ok = call(N, {put_new, <<"c9">>, [{payload, 5}, {timeout, 0}]}),
    ?assertEqual(5, payload(N, <<"c9">>)).

del_removes_and_del_of_missing_is_not_found(Config) ->
    N = ?config(node, Config),
    #{pid := P} = get(N, <<"c3">>),
    ok = call(N, {del, <<"c3">>}),
    ?assertEqual(#{}, get(N, <<"c3">>)),
    ?assertEqual({error, not_found}, call(N, {del, <<"c3">>})),
    ?assertEqual(2, maps:size(children(N))),
    ?assertExit({noproc, _}, gen_server:call(P, get, 60000)).

get_of_missing_is_an_empty_map(Config) ->
    N = ?config(node, Config),
    ?assertEqual(#{}, get(N, <<"nope">>)),
    ?assertEqual(#{}, get(N, {some, complex, [id]})).

ids_compare_by_term_equality(Config) ->
    N = ?config(node, Config),
    Ids = [atom_id, "a string", [97, 98], {tuple, 1}, #{b => 2, a => 1}, 12345678901234567890,
           -5, 1.5, self(), make_ref(), <<>>, []],
    [ok = call(N, {put, Id, [{payload, 1}, {timeout, 0}]}) || Id <- Ids],
    [?assertMatch(#{pid := _}, get(N, Id)) || Id <- Ids],
    %% The same map built in another key order, and an equal string.
    ?assertMatch(#{pid := _}, get(N, maps:from_list([{a, 1}, {b, 2}]))),
    ?assertMatch(#{pid := _}, get(N, "ab")),
    %% 1 and 1.0 are different ids (=:=).
    ok = call(N, {put, 1, [{timeout, 0}]}),
    ?assertEqual(#{}, get(N, 1.0)),
    Keys = maps:keys(children(N)),
    [?assert(lists:member(Id, Keys), Id) || Id <- Ids].

synch_call_by_id_and_missing(Config) ->
    N = ?config(node, Config),
    ?assertMatch({ok, V} when is_integer(V), call(N, {synch_call, <<"c1">>, get})),
    ?assertEqual(error, call(N, {synch_call, <<"missing">>, get})),
    ?assertEqual({ok, {echo, 1}}, call(N, {synch_call, <<"c1">>, {respond, {echo, 1}}})).

asynch_call_by_id_and_missing(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"a">>, [{payload, 0}, {timeout, 0}]}),
    ?assertEqual(ok, call(N, {asynch_call, <<"a">>, {add, 100}})),
    ?assertEqual(error, call(N, {asynch_call, <<"missing">>, {add, 100}})),
    cnode_test:wait_until(fun() -> payload(N, <<"a">>) =:= 100 end, 5000).

worker_pid_answers_call_and_cast(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"p">>, [{payload, 10}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"p">>),
    ?assertEqual(10, gen_server:call(P, get)),
    ok = gen_server:cast(P, {add, 5}),
    cnode_test:wait_until(fun() -> gen_server:call(P, get) =:= 15 end, 5000),
    ?assertEqual(<<"p">>, gen_server:call(P, id)).

payload_message_replaces_payload(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"pl">>, [{payload, 1}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"pl">>),
    P ! {payload, 77},
    cnode_test:wait_until(fun() -> payload(N, <<"pl">>) =:= 77 end, 5000).

payload_message_waits_for_a_busy_worker(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"plb">>, [{payload, 1}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"plb">>),
    %% While the callback sleeps, {payload, P} waits in the mailbox in order
    %% with the cast after it: the payload is replaced, init runs on it
    %% (start_at), then the cast adds to it.
    ok = gen_server:cast(P, {sleep, 300}),
    cnode_test:wait_until(fun() -> is_busy(N, <<"plb">>) end, 5000),
    P ! {payload, {start_at, 40}},
    ok = gen_server:cast(P, {add, 2}),
    ?assert(is_busy(N, <<"plb">>)),
    cnode_test:wait_until(fun() -> payload(N, <<"plb">>) =:= 42 end, 5000),
    %% Junk after the payload term is not a {payload, P} message.
    P ! {payload, 1, 2},
    ?assertEqual(42, gen_server:call(P, get, 5000)).

response_ok_changes_payload_not_value(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"r">>, [{payload, 1}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"r">>, {respond, {replace, 5}}}),
    cnode_test:wait_until(fun() -> value(N, <<"r">>) =:= 5 end, 5000),
    ok = call(N, {asynch_call, <<"r">>, {respond, {ok, 9}}}),
    cnode_test:wait_until(fun() -> payload(N, <<"r">>) =:= 9 end, 5000),
    ?assertEqual(5, value(N, <<"r">>)).

response_replace_changes_both(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"r">>, [{payload, 1}, {timeout, 0}]}),
    ?assertEqual({ok, 8}, call(N, {synch_call, <<"r">>, {respond, {replace, 8}}})),
    ?assertEqual(8, value(N, <<"r">>)),
    ?assertEqual(8, payload(N, <<"r">>)),
    ?assertEqual({ok, 3}, call(N, {synch_call, <<"r">>, {respond, {replace, <<"r">>, 3}}})),
    ?assertEqual(3, payload(N, <<"r">>)).

response_replace_with_new_id_moves_the_worker(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"from">>, [{payload, 1}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"from">>, {respond, {replace, <<"to">>, 42}}}),
    cnode_test:wait_until(fun() -> get(N, <<"from">>) =:= #{} end, 5000),
    ?assertMatch(#{value := 42}, get(N, <<"to">>)),
    ?assertEqual(42, payload(N, <<"to">>)).

response_timeout_changes_the_period(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"t">>, [{payload, 1}, {timeout, 300}]}),
    ok = call(N, {asynch_call, <<"t">>, {respond, {{timeout, 20}, 100}}}),
    %% A cast does not reschedule: the next perform comes at the old time,
    %% then every 20 ms from 100 on, so the payload soon climbs past 115.
    cnode_test:wait_until(fun() -> payload(N, <<"t">>) > 115 end, 3000).

response_other_is_stored_as_value(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"o">>, [{payload, 1}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"o">>, {respond, {whatever, [1, 2]}}}),
    cnode_test:wait_until(fun() -> value(N, <<"o">>) =:= {whatever, [1, 2]} end, 5000),
    ?assertEqual(1, payload(N, <<"o">>)).

%% As in Tarearbol: nil, answered where a value is stored, keeps the one
%% stored (the caller still gets nil).
response_nil_leaves_the_value_alone(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"v">>, [{payload, 1}, {timeout, 0}]}),
    ?assertEqual({ok, 7}, call(N, {synch_call, <<"v">>, {respond, 7}})),
    ?assertEqual(7, value(N, <<"v">>)),
    ?assertEqual({ok, nil}, call(N, {synch_call, <<"v">>, {respond, nil}})),
    ok = call(N, {asynch_call, <<"v">>, {respond, nil}}),
    ?assertEqual(1, payload(N, <<"v">>)),                % after the cast
    ?assertEqual(7, value(N, <<"v">>)).

response_halt_removes_the_worker(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"h">>, [{payload, 1}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"h">>),
    process_flag(trap_exit, true),
    true = link(P),
    ok = call(N, {asynch_call, <<"h">>, halt}),
    receive {'EXIT', P, normal} -> ok after 5000 -> ct:fail(no_exit) end,
    ?assertEqual(#{}, get(N, <<"h">>)),
    #{halts := H} = call(N, stats),
    ?assert(H >= 1).

timeout_zero_never_performs(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"still">>, [{payload, 7}, {timeout, 0}]}),
    ok = call(N, {put, <<"busy">>, [{payload, 0}, {timeout, 10}]}),
    %% While the neighbour performs ten times, the timeout-0 one never does.
    cnode_test:wait_until(fun() -> payload(N, <<"busy">>) >= 10 end, 5000),
    ?assertEqual(7, payload(N, <<"still">>)),
    ?assertEqual(nil, value(N, <<"still">>)).

instant_perform_true_and_integer(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"i1">>, [{payload, 0}, {timeout, 1000000}, {'instant_perform?', true}]}),
    ok = call(N, {put, <<"i2">>, [{payload, 0}, {timeout, 1000000}, {instant_perform, 30}]}),
    ok = call(N, {put, <<"i3">>, [{payload, 0}, {timeout, 1000000}]}),
    cnode_test:wait_until(fun() -> value(N, <<"i1">>) =:= 1 andalso value(N, <<"i2">>) =:= 1 end, 5000),
    ?assertEqual(nil, value(N, <<"i3">>)).

busy_shows_a_datetime_while_a_callback_runs(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"b">>, [{payload, 0}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"b">>, {sleep, 1500}}),
    #{'busy?' := B} = cnode_test:wait_until(fun() ->
        case get(N, <<"b">>) of #{'busy?' := nil} -> false; C -> {true, C} end end, 5000),
    ?assertMatch(#{'__struct__' := 'Elixir.DateTime', calendar := 'Elixir.Calendar.ISO',
                   year := Y, month := _, day := _, hour := _, minute := _, second := _,
                   microsecond := {_, 6}, time_zone := <<"Etc/UTC">>, zone_abbr := <<"UTC">>,
                   utc_offset := 0, std_offset := 0} when Y >= 2024, B),
    cnode_test:wait_until(fun() -> maps:get('busy?', get(N, <<"b">>)) =:= nil end, 5000).

slow_callback_counts_a_timeout(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"slow">>, [{payload, 0}, {timeout, 50}, {lull, 1.0}]}),
    ok = call(N, {asynch_call, <<"slow">>, {sleep, 400}}),
    cnode_test:wait_until(fun() -> maps:get(timeouts, call(N, stats)) >= 1 end, 5000).

mailbox_overflow_answers_overloaded(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"m">>, [{payload, 0}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"m">>),
    %% The new worker runs its init (counter_hooks) on the pool first: a
    %% cast sent before that is done waits in the mailbox and takes one of
    %% the two places. Cast to an idle worker, then see it busy with the
    %% cast: the mailbox is empty when the calls come.
    cnode_test:wait_until(fun() -> not is_busy(N, <<"m">>) end, 5000),
    ok = gen_server:cast(P, {sleep, 1500}),
    cnode_test:wait_until(fun() -> is_busy(N, <<"m">>) end, 5000),
    Self = self(),
    [spawn(fun() -> Self ! {r, catch gen_server:call(P, get, 10000)} end) || _ <- lists:seq(1, 5)],
    Rs = [receive {r, R} -> R after 10000 -> timeout end || _ <- lists:seq(1, 5)],
    Over = [R || {error, overloaded} = R <- Rs],
    ?assertEqual(3, length(Over), Rs),
    ?assertEqual(2, length([R || R <- Rs, is_integer(R)]), Rs),
    ?assert(maps:get(mailbox_overflows, call(N, stats)) >= 3).

pickup_hashring_is_stable(Config) ->
    N = ?config(node, Config),
    Picks = [begin {ok, Id} = call(N, {synch_call, nil, id}), Id end || _ <- lists:seq(1, 20)],
    ?assertEqual(1, length(lists:usort(Picks))),
    {ok, A} = call(N, {synch_call, nil, id}),
    ?assert(lists:member(A, [<<"c1">>, <<"c2">>, <<"c3">>])).

pickup_random_spreads(Config) ->
    N = ?config(node, Config),
    Picks = [begin {ok, Id} = call(N, {synch_call, nil, id}), Id end || _ <- lists:seq(1, 60)],
    ?assert(length(lists:usort(Picks)) >= 2, Picks).

pickup_stream_skips_busy_workers(Config) ->
    N = ?config(node, Config),
    [ok = call(N, {put, Id, [{payload, 0}, {timeout, 0}]}) || Id <- [<<"c1">>, <<"c2">>, <<"c3">>]],
    ok = call(N, {asynch_call, <<"c1">>, {sleep, 2000}}),
    ok = call(N, {asynch_call, <<"c2">>, {sleep, 2000}}),
    %% c1 and c2 sleep; c3 is idle once its init (counter_hooks) is done.
    cnode_test:wait_until(fun() ->
        maps:get('busy?', get(N, <<"c1">>)) =/= nil andalso maps:get('busy?', get(N, <<"c2">>)) =/= nil
            andalso maps:get('busy?', get(N, <<"c3">>)) =:= nil
    end, 5000),
    ?assertEqual({ok, <<"c3">>}, call(N, {synch_call, nil, id})).

restart_returns_to_children_specs(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"extra">>, [{timeout, 0}]}),
    ok = call(N, {del, <<"c1">>}),
    ok = call(N, restart),
    cnode_test:wait_started({?M, N}, 5000),
    ?assertEqual([<<"c1">>, <<"c2">>, <<"c3">>], lists:sort(maps:keys(children(N)))).

cast_forms_of_put_put_new_del_restart(Config) ->
    N = ?config(node, Config),
    gen_server:cast({?M, N}, {put, <<"k">>, [{payload, 3}, {timeout, 0}]}),
    cnode_test:wait_until(fun() -> get(N, <<"k">>) =/= #{} end, 5000),
    gen_server:cast({?M, N}, {put_new, <<"k">>, [{payload, 4}]}),
    gen_server:cast({?M, N}, {del, <<"c1">>}),
    cnode_test:wait_until(fun() -> get(N, <<"c1">>) =:= #{} end, 5000),
    ?assertEqual(3, payload(N, <<"k">>)),
    gen_server:cast({?M, N}, restart),
    cnode_test:wait_until(fun() ->
        lists:sort(maps:keys(children(N))) =:= [<<"c1">>, <<"c2">>, <<"c3">>] end, 5000).

bad_opts_are_refused_with_detail(Config) ->
    N = ?config(node, Config),
    Cases = [{[{timeout, -1}], {timeout, -1}},
             {[{timeout, <<"x">>}], {timeout, <<"x">>}},
             {#{lull => 0}, {lull, 0}},
             {[{lull, nope}], {lull, nope}},
             {[{restart, sometimes}], {restart, sometimes}},
             {[{'instant_perform?', maybe}], {'instant_perform?', maybe}},
             {[{colour, red}], {unknown_option, colour}},
             {42, 42},
             {<<"opts">>, <<"opts">>},
             {[{timeout, 1} | improper], [{timeout, 1} | improper]}],
    [?assertEqual({error, {bad_opts, Detail}}, call(N, {put, <<"x">>, Opts}), Opts)
     || {Opts, Detail} <- Cases],
    ?assertEqual(#{}, get(N, <<"x">>)),
    ?assertEqual(3, maps:size(children(N))).

bad_requests_are_refused(Config) ->
    N = ?config(node, Config),
    [?assertEqual({error, {unknown_request, R}}, call(N, R), R)
     || R <- [hello, {put, <<"x">>}, {del}, {get, 1, 2}, {synch_call, x}, [], <<"state">>,
              {put, a, b, c, d}]],
    ?assertEqual(pong, net_adm:ping(N)).

manager_stats_report_counters_and_lateness(Config) ->
    N = ?config(node, Config),
    cnode_test:wait_until(fun() -> maps:get(performs, call(N, stats)) >= 20 end, 5000),
    S = call(N, stats),
    [?assert(is_integer(maps:get(K, S)), K)
     || K <- [performs, calls, casts, puts, dels, halts, crashes, restarts, mailbox_overflows,
              timeouts, workers, pool_depth, pool_wakeups, threads, lateness_samples, lateness_p50_us,
              lateness_p99_us, lateness_max_us]],
    ?assertEqual(3, maps:get(workers, S)),
    ?assertEqual(started, maps:get(state, S)),
    ?assert(maps:get(lateness_p50_us, S) =< maps:get(lateness_p99_us, S)),
    ?assert(maps:get(lateness_p99_us, S) =< maps:get(lateness_max_us, S)),
    %% The histogram behind the percentiles: its counts add up to the
    %% samples, bucket bounds rise, and the max lies in the last bucket.
    H = maps:get(lateness_histogram, S),
    ?assertEqual(maps:get(lateness_samples, S), lists:sum([C || {_, C} <- H])),
    Tops = [T || {T, _} <- H],
    ?assertEqual(lists:usort(Tops), Tops),
    ?assert(lists:all(fun({_, C}) -> C > 0 end, H)),
    ?assert(maps:get(lateness_max_us, S) =< lists:last(Tops)).

bad_manager_specs_exit_nonzero(_Config) ->
    Bin = cnode_test:bin(),
    Run = fun(Spec) ->
              os:cmd("TAREARBOL_CNODE_COOKIE=x " ++ Bin ++ " --sname badspec --manager '" ++ Spec ++
                     "' 2>&1; echo \"exit=$?\"")
          end,
    [begin
         Out = Run(Spec),
         ?assert(string:find(Out, Want) =/= nomatch, {Spec, Out}),
         ?assertEqual(nomatch, string:find(Out, "exit=0"), {Spec, Out})
     end || {Spec, Want} <- [{"nobehaviour", "NAME=BEHAVIOUR"},
                             {"m=nosuch", "unknown behaviour"},
                             {"m=counter,timeout=-3", "bad value for timeout"},
                             {"m=counter,lull=0", "bad value for lull"},
                             {"m=counter,pickup=sideways", "bad value for pickup"},
                             {"m=counter,threads=0", "bad value for threads"},
                             {"m=counter,oops", "key=value"},
                             {"m=/nonexistent/lib.so", "cannot load behaviour"}]].

%% Once 90% of the workers are deleted, the survivors move out of the
%% slab chunks that emptied, and the tables shrink (stats counts it). The
%% moves keep everything that finds a worker: its id in the table, its
%% pid (calls, monitors), its timer (performs go on), its payload. Workers
%% perform meanwhile, so some are busy when the move comes.
%% children_specs is read several entries ahead of the one put (their
%% table slots fetched early): every good child is put, and each one with
%% bad opts is refused on its own, logged, without holding up the rest.
children_specs_with_bad_entries_puts_every_good_one(Config) ->
    Dir = ?config(priv_dir, Config),
    Src = filename:join(Dir, "specs.c"),
    So = filename:join(Dir, "specs.so"),
    ok = file:write_file(Src, specs_source()),
    Ei = code:lib_dir(erl_interface),
    Out = os:cmd("cc -std=c11 -Wall -Werror -fPIC -shared -I" ++ cnode_test:root() ++ "/c_src/include"
                 " -I" ++ Ei ++ "/include " ++ Src ++ " -o " ++ So ++ " 2>&1; echo rc=$?"),
    ?assertEqual("rc=0", string:trim(lists:last(string:split(string:trim(Out), "\n", all))), Out),
    C = cnode_test:start(undefined, #{dir => Dir, args => ["--manager", "sp=" ++ So]}),
    N = cnode_test:node(C),
    cnode_test:wait_started({sp, N}, 10000),
    #{children := Kids} = gen_server:call({sp, N}, state),
    ?assertEqual(lists:seq(1, 20) -- [7, 13], lists:sort(maps:keys(Kids))),
    ?assertMatch(#{opts := [{timeout, 1000}]}, maps:get(8, Kids)),
    ?assertEqual(2, length(binary:matches(cnode_test:log(C),
                                          <<"a child of children_specs was refused">>))),
    cnode_test:stop(C).

%% A behaviour whose children_specs are 1..20, 7 with a restart type that
%% is none and 13 with a timeout that is no number.
specs_source() ->
    <<"#include \"dm.h\"\n"
      "static int specs(dm_ctx *c, ei_x_buff *out) {\n"
      "  (void)c;\n"
      "  ei_x_encode_map_header(out, 20);\n"
      "  for (long i = 1; i <= 20; i++) {\n"
      "    ei_x_encode_long(out, i);\n"
      "    ei_x_encode_list_header(out, 1);\n"
      "    ei_x_encode_tuple_header(out, 2);\n"
      "    if (i == 7) {\n"
      "      ei_x_encode_atom(out, \"restart\");\n"
      "      ei_x_encode_atom(out, \"sometimes\");\n"
      "    } else {\n"
      "      ei_x_encode_atom(out, \"timeout\");\n"
      "      if (i == 13) ei_x_encode_atom(out, \"nope\"); else ei_x_encode_long(out, 1000);\n"
      "    }\n"
      "    ei_x_encode_empty_list(out);\n"
      "  }\n"
      "  return DM_CB_OK;\n"
      "}\n"
      "static int perform(dm_ctx *c, const dm_term *id, const dm_term *p, ei_x_buff *out) {\n"
      "  (void)c; (void)id; (void)p;\n"
      "  return ei_x_encode_atom(out, \"ok\") < 0 ? DM_CB_CRASH : DM_CB_OK;\n"
      "}\n"
      "static const dm_behaviour b = {.name = \"specs\", .children_specs = specs,\n"
      "                               .perform = perform};\n"
      "const dm_behaviour *dm_behaviour_get(void) { return &b; }\n">>.

deleting_most_workers_gives_memory_back_and_the_rest_work_on(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "churn=counter,children=100000,timeout=1000"]}),
    N = cnode_test:node(C),
    M = {churn, N},
    cnode_test:wait_started(M, 30000),
    Id = fun(K) -> <<"c", (integer_to_binary(K))/binary>> end,
    #{pid := Kept} = gen_server:call(M, {get, Id(100000)}),
    #{pid := Gone} = gen_server:call(M, {get, Id(5001)}),
    KeptRef = erlang:monitor(process, Kept),
    GoneRef = erlang:monitor(process, Gone),
    #{compactions := 0, slab_chunks := Chunks} = gen_server:call(M, stats),
    %% Every tenth stays, so that every chunk holds survivors to move.
    [ok = gen_server:cast(M, {del, Id(K)}) || K <- lists:seq(1, 100000), K rem 10 =/= 0],
    ?assertEqual(10000, gen_server:call(M, count, 10000)),
    %% A chunk where a worker is busy at that moment waits for the next
    %% look, a second later.
    cnode_test:wait_until(fun() -> maps:get(slab_chunks, gen_server:call(M, stats)) =< Chunks div 2 end,
                          20000),
    ?assert(maps:get(compactions, gen_server:call(M, stats)) >= 1),
    %% Every survivor answers by id, with a payload that still grows.
    Payload = fun(K) -> {ok, P} = gen_server:call(M, {synch_call, Id(K), get}), P end,
    Before = [{K, Payload(K)} || K <- lists:seq(10, 100000, 10)],
    [?assert(is_integer(P)) || {_, P} <- Before],
    cnode_test:wait_until(fun() -> lists:all(fun({K, P}) -> Payload(K) > P end, Before) end, 10000),
    ?assertEqual(lists:seq(10, 100000, 10),
                 lists:sort([binary_to_integer(I, 10) || <<"c", I/binary>> <- maps:keys(maps:get(children, gen_server:call(M, state)))])),
    %% Its pid reaches it, and its monitor fires when it goes.
    ?assert(is_integer(gen_server:call(Kept, get))),
    ?assertEqual(Id(100000), gen_server:call(Kept, id)),
    ok = gen_server:call(M, {del, Id(100000)}),
    receive {'DOWN', KeptRef, process, Kept, R} -> ?assertEqual(shutdown, R)
    after 5000 -> ct:fail(no_down_for_a_moved_worker)
    end,
    %% A worker deleted before the move is still gone, its monitor fired.
    receive {'DOWN', GoneRef, process, Gone, _} -> ok after 5000 -> ct:fail(no_down) end,
    %% New workers fill the room that is left.
    [ok = gen_server:call(M, {put, {new, K}, [{payload, 0}, {timeout, 20}]}) || K <- lists:seq(1, 3000)],
    ?assertEqual(12999, gen_server:call(M, count)),
    ?assertMatch(#{pid := _}, gen_server:call(M, {get, {new, 3000}})),
    cnode_test:stop(C).

state_is_starting_until_children_specs_are_put(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "slow=counter,children=2,specs_delay_ms=1500"]}),
    N = cnode_test:node(C),
    ?assertMatch(#{state := starting, children := Ch} when map_size(Ch) =:= 0,
                 gen_server:call({slow, N}, state)),
    cnode_test:wait_started({slow, N}, 10000),
    ?assertEqual(2, maps:size(maps:get(children, gen_server:call({slow, N}, state)))),
    %% handle_state_change ran for both, in order (counter logs them).
    Log = cnode_test:log(C),
    {S1, _} = binary:match(Log, <<"counter: manager slow is starting">>),
    {S2, _} = binary:match(Log, <<"counter: manager slow is started">>),
    ?assert(S1 < S2),
    cnode_test:stop(C).

%% Tarearbol serialises a user's put, put_new and del after
%% children_specs: made while the manager starts (or right after restart),
%% they apply once it has, in the order they came, so the user's wins.
puts_and_dels_while_starting_apply_after_children_specs_in_order(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "slow=counter,children=3,timeout=0,specs_delay_ms=1500"]}),
    N = cnode_test:node(C),
    M = {slow, N},
    ?assertMatch(#{state := starting}, gen_server:call(M, state)),
    gen_server:cast(M, {put, <<"c2">>, [{payload, 200}, {timeout, 0}]}),
    gen_server:cast(M, {del, <<"c3">>}),
    gen_server:cast(M, {put, <<"mine">>, [{payload, 1}, {timeout, 0}]}),
    gen_server:cast(M, {put, <<"mine">>, [{payload, 2}, {timeout, 0}]}),
    %% A call waits for the boot too, and answers then.
    ?assertEqual(ok, gen_server:call(M, {put, <<"c1">>, [{payload, 100}, {timeout, 0}]}, 10000)),
    ?assertMatch(#{state := started}, gen_server:call(M, state)),
    Payload = fun(Id) -> {ok, P} = gen_server:call(M, {synch_call, Id, get}), P end,
    ?assertEqual(100, Payload(<<"c1">>)),
    ?assertEqual(200, Payload(<<"c2">>)),
    ?assertEqual(2, Payload(<<"mine">>)),
    ?assertEqual(#{}, gen_server:call(M, {get, <<"c3">>})),
    ?assertEqual(3, maps:size(maps:get(children, gen_server:call(M, state)))),
    %% Right after restart, the same.
    ok = gen_server:call(M, restart),
    ?assertEqual(ok, gen_server:call(M, {put, <<"c1">>, [{payload, 5}, {timeout, 0}]}, 10000)),
    ?assertEqual(5, Payload(<<"c1">>)),
    cnode_test:stop(C).

get_while_starting_waits_for_the_boot(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "slow=counter,children=2,timeout=0,specs_delay_ms=1500"]}),
    N = cnode_test:node(C),
    M = {slow, N},
    ?assertMatch(#{state := starting}, gen_server:call(M, state)),
    ?assertMatch(#{pid := _, opts := [{payload, 0}]}, gen_server:call(M, {get, <<"c1">>}, 10000)),
    %% Bounded by the caller's timeout: one that gives up first exits.
    ok = gen_server:call(M, restart),
    ?assertExit({timeout, _}, gen_server:call(M, {get, <<"c1">>}, 100)),
    cnode_test:wait_started(M, 10000),
    cnode_test:stop(C).

%% Two pool threads and a handle_state_change(starting) that takes 500 ms:
%% `started` (no children, so at once) must still wait for it.
state_changes_run_in_order_when_starting_is_slow(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "order=counter,children=0,threads=2,starting_delay_ms=500"]}),
    N = cnode_test:node(C),
    cnode_test:wait_started({order, N}, 10000),
    cnode_test:wait_until(fun() -> binary:match(cnode_test:log(C), <<"manager order is started">>) =/= nomatch end, 10000),
    Log = cnode_test:log(C),
    {S1, _} = binary:match(Log, <<"counter: manager order is starting">>),
    {S2, _} = binary:match(Log, <<"counter: manager order is started">>),
    ?assert(S1 < S2),
    cnode_test:stop(C).

crash_restarts_a_permanent_worker_with_original_opts(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"k">>, [{payload, 5}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"k">>, {add, 10}}),
    cnode_test:wait_until(fun() -> payload(N, <<"k">>) =:= 15 end, 5000),
    #{pid := P1} = get(N, <<"k">>),
    ok = call(N, {asynch_call, <<"k">>, {crash, boom}}),
    cnode_test:wait_until(fun() -> case get(N, <<"k">>) of #{pid := P1} -> false; #{pid := _} -> true; _ -> false end end, 5000),
    %% A new pid, and the payload from the spec, not the one it had reached.
    ?assertEqual(5, payload(N, <<"k">>)),
    #{crashes := Cr, restarts := R} = call(N, stats),
    ?assert(Cr >= 1 andalso R >= 1),
    ?assertExit({noproc, _}, gen_server:call(P1, get, 60000)).

crash_reason_reaches_linked_processes(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"l">>, [{payload, 0}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"l">>),
    process_flag(trap_exit, true),
    true = link(P),
    ok = gen_server:cast(P, {crash, {bad, thing}}),
    receive {'EXIT', P, R} -> ?assertEqual({bad, thing}, R)
    after 5000 -> ct:fail(no_exit)
    end,
    %% A call that makes the worker crash exits the caller with the reason.
    #{pid := P2} = cnode_test:wait_until(fun() ->
        case get(N, <<"l">>) of #{pid := X} = C when X =/= P -> {true, C}; _ -> false end end, 5000),
    ?assertExit({{bad, call}, {gen_server, call, _}}, gen_server:call(P2, {crash, {bad, call}}, 60000)).

restart_types_transient_and_temporary(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"tr">>, [{payload, 0}, {timeout, 0}, {restart, transient}]}),
    ok = call(N, {put, <<"te">>, [{payload, 0}, {timeout, 0}, {restart, temporary}]}),
    ok = call(N, {asynch_call, <<"te">>, {crash, boom}}),
    cnode_test:wait_until(fun() -> get(N, <<"te">>) =:= #{} end, 5000),
    #{pid := T1} = get(N, <<"tr">>),
    ok = call(N, {asynch_call, <<"tr">>, {crash, normal}}),
    cnode_test:wait_until(fun() -> get(N, <<"tr">>) =:= #{} end, 5000),
    ok = call(N, {put, <<"tr">>, [{payload, 0}, {timeout, 0}, {restart, transient}]}),
    #{pid := T2} = get(N, <<"tr">>),
    ?assertNotEqual(T1, T2),
    ok = call(N, {asynch_call, <<"tr">>, {crash, boom}}),
    cnode_test:wait_until(fun() -> case get(N, <<"tr">>) of #{pid := T2} -> false; #{pid := _} -> true; _ -> false end end, 5000).

%% Crashes the worker Id once and waits for its replacement (or its end).
crash_once(N, M, Id) ->
    #{pid := P} = gen_server:call({M, N}, {get, Id}),
    ok = gen_server:call({M, N}, {asynch_call, Id, {crash, boom}}),
    cnode_test:wait_until(fun() ->
        case gen_server:call({M, N}, {get, Id}) of
            #{pid := P} -> false;
            _ -> true
        end end, 5000).

intensity_exceeded_restarts_every_worker(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "fragile=counter,children=2,timeout=0,max_restarts=2,max_seconds=60"]}),
    N = cnode_test:node(C),
    M = fragile,
    cnode_test:wait_started({M, N}, 5000),
    ok = gen_server:call({M, N}, {put, <<"x">>, [{payload, 1}, {timeout, 0}]}),
    ok = gen_server:call({M, N}, {asynch_call, <<"x">>, {add, 10}}),
    Payload = fun(Id) -> {ok, P} = gen_server:call({M, N}, {synch_call, Id, get}), P end,
    cnode_test:wait_until(fun() -> Payload(<<"x">>) =:= 11 end, 5000),
    #{pid := C2} = gen_server:call({M, N}, {get, <<"c2">>}),
    #{pid := X1} = gen_server:call({M, N}, {get, <<"x">>}),
    crash_once(N, M, <<"c1">>),
    crash_once(N, M, <<"c1">>),
    ?assertMatch(#{pid := C2}, gen_server:call({M, N}, {get, <<"c2">>})),
    ?assertMatch(#{pid := X1}, gen_server:call({M, N}, {get, <<"x">>})),
    crash_once(N, M, <<"c1">>),
    %% Third restart in the window: every worker restarts, the put child
    %% too, with its opts and the payload it had; children_specs is not
    %% asked again.
    cnode_test:wait_until(fun() ->
        #{state := S, children := Ch} = gen_server:call({M, N}, state),
        S =:= started andalso lists:sort(maps:keys(Ch)) =:= [<<"c1">>, <<"c2">>, <<"x">>] end, 5000),
    #{pid := C2b} = gen_server:call({M, N}, {get, <<"c2">>}),
    #{pid := X2} = gen_server:call({M, N}, {get, <<"x">>}),
    ?assertNotEqual(C2, C2b),
    ?assertNotEqual(X1, X2),
    ?assertEqual(11, Payload(<<"x">>)),
    ?assertMatch(#{escalations := 1}, gen_server:call({M, N}, stats)),
    Log = cnode_test:log(C),
    ?assertNotEqual(nomatch, binary:match(Log, <<"manager fragile: worker <<\"c1\">> crashed: boom">>)),
    ?assertEqual(1, length(binary:matches(Log, <<"counter: manager fragile is starting">>))),
    cnode_test:stop(C).

manager_goes_down_past_its_own_intensity(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "brittle=counter,children=1,timeout=0,max_restarts=1,max_seconds=60"]}),
    N = cnode_test:node(C),
    M = brittle,
    Started = fun() -> maps:get(state, gen_server:call({M, N}, state)) =:= started end,
    cnode_test:wait_until(Started, 5000),
    crash_once(N, M, <<"c1">>),
    crash_once(N, M, <<"c1">>), % escalation 1: every worker restarts
    cnode_test:wait_until(fun() -> maps:is_key(pid, gen_server:call({M, N}, {get, <<"c1">>})) end, 5000),
    crash_once(N, M, <<"c1">>),
    crash_once(N, M, <<"c1">>), % escalation 2 within the window: down
    cnode_test:wait_until(fun() -> maps:get(state, gen_server:call({M, N}, state)) =:= down end, 5000),
    ?assertEqual({error, down}, gen_server:call({M, N}, {put, <<"y">>, []})),
    ?assertEqual({error, down}, gen_server:call({M, N}, {synch_call, <<"c1">>, get})),
    ?assertEqual({error, down}, gen_server:call({M, N}, {get, <<"c1">>})),
    ?assertMatch(#{state := down, workers := 0}, gen_server:call({M, N}, stats)),
    %% handle_state_change(down) runs on the pool after the state changed:
    %% its line is awaited, not expected at once.
    cnode_test:wait_until(fun() -> binary:match(cnode_test:log(C), <<"counter: manager brittle is down">>) =/= nomatch end, 5000),
    %% restart brings it back from children_specs.
    ok = gen_server:call({M, N}, restart),
    cnode_test:wait_until(Started, 5000),
    ?assertMatch(#{pid := _}, gen_server:call({M, N}, {get, <<"c1">>})),
    cnode_test:stop(C).

init_builds_the_payload_before_the_first_perform(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"in">>, [{payload, {start_at, 41}}, {timeout, 0}]}),
    ?assertEqual(41, payload(N, <<"in">>)),
    ok = call(N, {put, <<"in2">>, [{payload, {start_at, 100}}, {timeout, 30}]}),
    %% The first perform already saw the payload init built.
    cnode_test:wait_until(fun() -> is_integer(value(N, <<"in2">>)) end, 5000),
    ?assert(value(N, <<"in2">>) > 100).

payload_message_reruns_init(Config) ->
    N = ?config(node, Config),
    ok = call(N, {put, <<"pi">>, [{payload, 1}, {timeout, 0}]}),
    #{pid := P} = get(N, <<"pi">>),
    P ! {payload, {start_at, 7}},
    cnode_test:wait_until(fun() -> payload(N, <<"pi">>) =:= 7 end, 5000).

terminate_runs_with_the_reason_on_every_stop(Config) ->
    C = ?config(cnode, Config),
    N = ?config(node, Config),
    [ok = call(N, {put, Id, [{payload, 0}, {timeout, 0}]}) || Id <- [d1, d2, d3, d4]],
    ok = call(N, {del, d1}),
    ok = call(N, {put, d2, [{payload, 0}, {timeout, 0}]}),
    ok = call(N, {asynch_call, d3, halt}),
    ok = call(N, {asynch_call, d4, {crash, oops}}),
    Want = [<<"counter: worker d1 terminated: shutdown">>,
            <<"counter: worker d2 terminated: shutdown">>,
            <<"counter: worker d3 terminated: normal">>,
            <<"counter: worker d4 terminated: oops">>],
    cnode_test:wait_until(fun() ->
        L = cnode_test:log(C),
        lists:all(fun(W) -> binary:match(L, W) =/= nomatch end, Want) end, 5000).

handle_timeout_runs_for_a_slow_callback(Config) ->
    C = ?config(cnode, Config),
    N = ?config(node, Config),
    ok = call(N, {put, sl, [{payload, 0}, {timeout, 50}, {lull, 2.0}]}),
    ok = call(N, {asynch_call, sl, {sleep, 400}}),
    cnode_test:wait_until(fun() ->
        binary:match(cnode_test:log(C), <<"counter: worker sl is slow">>) =/= nomatch end, 5000),
    %% The worker is still there and serving once the callback returns.
    cnode_test:wait_until(fun() -> is_integer(payload(N, sl)) end, 5000).

%% The behaviours are in priv/; the binary under test may be elsewhere
%% (the sanitizer build is in c_src/_build).
so_path() -> filename:join([cnode_test:root(), "priv", "tick.so"]).

behaviour_from_a_shared_object_runs(Config) ->
    C = cnode_test:start(undefined, #{dir => ?config(priv_dir, Config),
                                      args => ["--manager", "ticks=" ++ so_path()]}),
    N = cnode_test:node(C),
    ok = gen_server:call({ticks, N}, {put, t1, [{payload, #{to => self(), n => 0}}, {timeout, 30}]}),
    [receive {tick, t1, K} -> ok after 5000 -> ct:fail({no_tick, K}) end || K <- [1, 2, 3]],
    ?assertMatch(#{managers := [#{name := ticks, behaviour := tick}]}, cnode_test:call(N, info)),
    %% A bad payload is a crash of that worker, not of the node.
    ok = gen_server:call({ticks, N}, {put, t2, [{payload, nope}, {timeout, 30}, {restart, temporary}]}),
    cnode_test:wait_until(fun() -> gen_server:call({ticks, N}, {get, t2}) =:= #{} end, 5000),
    ok = gen_server:call({ticks, N}, {del, t1}),
    cnode_test:stop(C).

shared_object_without_the_symbol_is_refused(_Config) ->
    Libm = hd([P || P <- ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                          "/lib64/libm.so.6"], filelib:is_regular(P)]),
    Out = os:cmd("TAREARBOL_CNODE_COOKIE=x " ++ cnode_test:bin() ++ " --sname nosym --manager m=" ++ Libm ++
                 " 2>&1; echo \"exit=$?\""),
    ?assertNotEqual(nomatch, string:find(Out, "does not export dm_behaviour_get"), Out),
    ?assertEqual(nomatch, string:find(Out, "exit=0"), Out).
