%% @doc Cluster mode on real BEAM peers, each a member that launches its
%% own C node (the binary under test): ids placed by rendezvous hashing,
%% records in Mnesia, failover on a C node's kill -9 and on a peer's stop,
%% rebalancing when the peer comes back, with calls going on meanwhile.
-module(cluster_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(M, cl).
-define(IDS, 30000).
-define(HANDOFF_MS, 300).
-define(FAILOVER_MS, 5000).

all() ->
    [placement_moves_about_one_in_k_and_only_to_or_from_the_changed_member,
     placement_is_the_same_whatever_the_order_of_members,
     {group, three_members},
     {group, net_split},
     a_member_with_a_mnesia_dir_keeps_disc_copies_and_restores_from_them].

groups() ->
    [{three_members, [sequence],
      [ids_put_across_three_members_all_answer,
       a_member_with_another_configuration_is_refused,
       kill_9_of_a_c_node_every_id_answers_again_within_5_s_once,
       stopping_a_peer_its_ids_answer_on_the_survivors_within_5_s_once,
       a_returning_peer_gets_a_third_back_while_calls_keep_working,
       a_member_stopped_on_purpose_hands_its_current_payloads_over,
       restart_empties_the_records_and_every_members_manager,
       put_many_puts_each_id_once_on_its_owner_and_refuses_bad_pairs,
       with_mnesia_down_on_the_owner_a_put_is_refused_and_no_worker_starts]},
     {net_split, [], [a_minority_refuses_writes_the_majority_takes_over_and_the_heal_merges]}].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(tarearbol_cnode),
    Config.

end_per_suite(_Config) ->
    application:stop(tarearbol_cnode).

init_per_group(net_split, Config) ->
    Config;
init_per_group(three_members, Config) ->
    %% Peers that cases start for the cases after them, in a table whose
    %% owner lives until end_per_group (init_per_group's process does not).
    Self = self(),
    Holder = spawn(fun() ->
                           cluster_peers = ets:new(cluster_peers, [named_table, public]),
                           Self ! {self(), table},
                           receive stop -> ok end
                   end),
    receive {Holder, table} -> ok end,
    ets:insert(cluster_peers, {holder, Holder}),
    Names = [cnode_test:unique("clp" ++ integer_to_list(I)) || I <- [1, 2, 3]],
    Peers = [start_member(N) || N <- Names],
    mesh([Node || {_, Node} <- Peers]),
    await_members(length(Peers)),
    [{peers, Peers} | Config].

end_per_group(net_split, _Config) ->
    ok;
end_per_group(three_members, Config) ->
    [catch peer:stop(P) || {P, _} <- ?config(peers, Config)],
    [catch peer:stop(P) || {returned, P} <- ets:tab2list(cluster_peers)],
    [{_, Holder}] = ets:lookup(cluster_peers, holder),
    Holder ! stop,
    ok.

%% ---------------------------------------------------------------------------
%% Peers

ebin(Mod) -> filename:absname(filename:dirname(code:which(Mod)), os:getenv("PWD")).

start_peer(Name) ->
    {ok, P, Node} = peer:start(#{name => Name,
                                 args => ["-setcookie", cnode_test:cookie(),
                                          "-pa", ebin(tarearbol_cnode), "-pa", ebin(?MODULE)]}),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [tarearbol_cnode]),
    {P, Node}.

member_opts(Name) -> member_opts(Name, "counter").
member_opts(Name, Behaviour) ->
    #{name => ?M, handoff_ms => ?HANDOFF_MS,
      node => #{name => Name ++ "_c", binary => cnode_test:bin(), threads => 1,
                managers => [atom_to_list(?M) ++ "=" ++ Behaviour]}}.

%% A peer named Name (its C node Name_c) running the member of cl.
start_member(Name) ->
    {P, Node} = start_peer(Name),
    [erpc:call(Node, net_kernel, connect_node, [N]) || N <- nodes()],
    {ok, _} = erpc:call(Node, tarearbol_cnode_cluster, start_member, [member_opts(Name)], 60000),
    {P, Node}.

mesh(Nodes) ->
    [true = erpc:call(A, net_kernel, connect_node, [B]) || A <- Nodes, B <- Nodes, A =/= B],
    ok.

await_members(K) ->
    cnode_test:wait_until(fun() -> length(tarearbol_cnode_cluster:members(?M)) =:= K end, 10000).

%% The C node of each member, by member node.
cnodes() ->
    maps:map(fun(_, #{cnode := C}) -> C end, tarearbol_cnode_cluster:info(?M)).

%% The ids each C node runs, asked of the C node itself.
children_by_cnode() ->
    maps:map(fun(_, C) ->
                     #{children := Ch} = tarearbol_cnode:state({?M, C}),
                     maps:keys(Ch)
             end, cnodes()).

%% Every id is on exactly one C node: their counts add up to the ids.
assert_each_id_once(Ids) ->
    By = children_by_cnode(),
    All = lists:append(maps:values(By)),
    ct:log("children per C node: ~p", [maps:map(fun(_, L) -> length(L) end, By)]),
    ?assertEqual(length(Ids), length(All), duplicates(All)),
    ?assertEqual(lists:sort(Ids), lists:sort(All)),
    By.

duplicates(L) ->
    {_, Dups} = lists:foldl(fun(X, {Seen, D}) ->
                                    case is_map_key(X, Seen) of
                                        true -> {Seen, [X | D]};
                                        false -> {Seen#{X => []}, D}
                                    end
                            end, {#{}, []}, L),
    lists:sublist(Dups, 10).

ids() -> lists:seq(1, ?IDS).

%% Waits until the moves are over: every id runs on its owner's C node,
%% K members; then each holds 1/K of the ids within 10%. Returns the counts.
await_placed(K) ->
    Counts = cnode_test:wait_until(
               fun() ->
                       By = children_by_cnode(),
                       Members = lists:sort(maps:keys(By)),
                       Placed = lists:all(fun({N, L}) ->
                                                  lists:all(fun(Id) -> tarearbol_cnode_cluster_place:owner(Id, Members) =:= N end, L)
                                          end, maps:to_list(By)),
                       Counts = [length(L) || L <- maps:values(By)],
                       case length(Members) =:= K andalso Placed andalso lists:sum(Counts) =:= ?IDS of
                           true -> {true, Counts};
                           false -> {false, Counts}
                       end
               end, 60000, 100),
    [?assert(abs(C - ?IDS / K) < ?IDS * 0.1 / K, {share, C, Counts}) || C <- Counts],
    Counts.

%% Runs F on each element of L in N processes; the results that are not ok.
pmap(F, L, N) ->
    Parts = split(L, N),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), [R || X <- Part, (R = F(X)) =/= ok]} end)
            || Part <- Parts],
    lists:append([receive {Pid, Bad} -> Bad after 120000 -> error(pmap_timeout) end || Pid <- Pids]).

split(L, N) ->
    Size = max(1, (length(L) + N - 1) div N),
    chunk(L, Size).

chunk([], _) -> [];
chunk(L, S) when length(L) =< S -> [L];
chunk(L, S) -> {H, T} = lists:split(S, L), [H | chunk(T, S)].

%% Each id answers synch_call get with at least its minimum payload
%% (Min(Id)); retried until the deadline. Returns the ids that never
%% answered, and the longest wait of an id.
await_answers(Ids, Min, DeadlineMs) ->
    T0 = erlang:monotonic_time(millisecond),
    Deadline = T0 + DeadlineMs,
    Self = self(),
    Parts = split(Ids, 16),
    Pids = [spawn_link(fun() -> Self ! {self(), await_part(Part, Min, Deadline, T0, [], 0)} end)
            || Part <- Parts],
    Rs = [receive {Pid, R} -> R after DeadlineMs + 60000 -> error(await_timeout) end || Pid <- Pids],
    {lists:append([F || {F, _} <- Rs]), lists:max([W || {_, W} <- Rs])}.

await_part([], _Min, _Deadline, _T0, Failed, Wait) -> {Failed, Wait};
await_part([Id | Ids] = All, Min, Deadline, T0, Failed, Wait) ->
    Ok = case tarearbol_cnode_cluster:synch_call(?M, Id, get) of
             {ok, P} when is_integer(P) -> P >= Min(Id);
             _ -> false
         end,
    Now = erlang:monotonic_time(millisecond),
    case Ok of
        true -> await_part(Ids, Min, Deadline, T0, Failed, max(Wait, Now - T0));
        false when Now > Deadline -> await_part(Ids, Min, Deadline, T0, [Id | Failed], Wait);
        false -> timer:sleep(10), await_part(All, Min, Deadline, T0, Failed, Wait)
    end.

%% Ids owned by Node; Bump of them get `{add, 7}' and their payload 7 is
%% awaited in Node's Mnesia (handed off). Returns the bumped ids.
bump_handed_off(Node, Count) ->
    Members = tarearbol_cnode_cluster:members(?M),
    Owned = [Id || Id <- ids(), tarearbol_cnode_cluster_place:owner(Id, Members) =:= Node],
    Bumped = lists:sublist(Owned, Count),
    [] = pmap(fun(Id) -> tarearbol_cnode_cluster:asynch_call(?M, Id, {add, 7}) end, Bumped, 8),
    HTab = tarearbol_cnode_cluster_store:handoff_table(tarearbol_cnode_cluster_store:table(?M)),
    cnode_test:wait_until(
      fun() ->
              lists:all(fun(Id) ->
                                erpc:call(Node, tarearbol_cnode_cluster_store, handed_off, [HTab, Id])
                                    =:= {ok, 7}
                        end, Bumped)
      end, 10000),
    {Owned, Bumped}.

min_payload(Bumped) ->
    S = maps:from_list([{Id, []} || Id <- Bumped]),
    fun(Id) -> case is_map_key(Id, S) of true -> 7; false -> 0 end end.

%% ---------------------------------------------------------------------------
%% Placement

placement_moves_about_one_in_k_and_only_to_or_from_the_changed_member(_Config) ->
    Ids = lists:seq(1, 20000),
    Before = [a@h, b@h, c@h],
    Own = fun(Ms) -> [tarearbol_cnode_cluster_place:owner(Id, Ms) || Id <- Ids] end,
    O3 = Own(Before),
    O4 = Own([d@h | Before]),
    O2 = Own([a@h, b@h]),
    Moved = [{X, Y} || {X, Y} <- lists:zip(O3, O4), X =/= Y],
    Frac = length(Moved) / length(Ids),
    ct:pal("adding a 4th member moves ~.3f of the ids; removing the 3rd moves ~.3f",
           [Frac, length([x || {X, Y} <- lists:zip(O3, O2), X =/= Y]) / length(Ids)]),
    ?assert(abs(Frac - 0.25) < 0.02, Frac),
    %% Only to the newcomer.
    ?assertEqual([d@h], lists:usort([Y || {_, Y} <- Moved])),
    %% Removing c moves c's ids only, and all of them.
    [?assert(X =:= Y orelse X =:= c@h, {X, Y}) || {X, Y} <- lists:zip(O3, O2)],
    ?assertNot(lists:member(c@h, O2)),
    Share = [length([x || O <- O3, O =:= M]) / length(Ids) || M <- Before],
    ?assert(lists:all(fun(S) -> abs(S - 1 / 3) < 0.02 end, Share), Share),
    ?assertEqual(undefined, tarearbol_cnode_cluster_place:owner(x, [])).

placement_is_the_same_whatever_the_order_of_members(_Config) ->
    Ms = [a@h, b@h, c@h, d@h],
    Ids = lists:seq(1, 2000) ++ [<<"x">>, {tuple, 1}, "list"],
    Perms = [Ms, lists:reverse(Ms), [c@h, a@h, d@h, b@h]],
    [?assertEqual([tarearbol_cnode_cluster_place:owner(Id, Ms) || Id <- Ids],
                  [tarearbol_cnode_cluster_place:owner(Id, P) || Id <- Ids]) || P <- Perms],
    Grouped = tarearbol_cnode_cluster_place:owners(Ids, Ms),
    ?assertEqual(lists:sort(Ids), lists:sort(lists:append(maps:values(Grouped)))),
    [?assertEqual(M, tarearbol_cnode_cluster_place:owner(Id, Ms)) || {M, L} <- maps:to_list(Grouped), Id <- L].

%% ---------------------------------------------------------------------------
%% Three members

ids_put_across_three_members_all_answer(Config) ->
    Peers = ?config(peers, Config),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual([], pmap(fun(Id) -> tarearbol_cnode_cluster:put(?M, Id, [{payload, 0}, {timeout, 0}]) end,
                          ids(), 48)),
    T1 = erlang:monotonic_time(millisecond),
    ct:pal("~b puts in ~b ms", [?IDS, T1 - T0]),
    %% Mnesia holds every record on every member.
    Tab = tarearbol_cnode_cluster_store:table(?M),
    [?assertEqual(?IDS, erpc:call(N, mnesia, table_info, [Tab, size])) || {_, N} <- Peers],
    ?assertEqual([], pmap(fun(Id) ->
                                  case tarearbol_cnode_cluster:get(?M, Id) of
                                      #{opts := _} -> ok;
                                      Other -> {Id, Other}
                                  end
                          end, ids(), 32)),
    ?assertEqual([], pmap(fun(Id) ->
                                  case tarearbol_cnode_cluster:synch_call(?M, Id, get) of
                                      {ok, 0} -> ok;
                                      Other -> {Id, Other}
                                  end
                          end, ids(), 32)),
    ct:pal("gets and synch_calls of every id in ~b ms", [erlang:monotonic_time(millisecond) - T1]),
    By = assert_each_id_once(ids()),
    [?assert(abs(length(L) - ?IDS / 3) < ?IDS * 0.1 / 3, {share, length(L)}) || L <- maps:values(By)],
    %% The merged state and the summed stats cover every member.
    #{children := Children, state := started} = tarearbol_cnode_cluster:state(?M),
    ?assertEqual(?IDS, map_size(Children)),
    ?assertMatch(#{members := 3}, tarearbol_cnode_cluster:stats(?M)),
    ?assertEqual({error, not_found}, tarearbol_cnode_cluster:del(?M, nobody)),
    ?assertEqual(ok, tarearbol_cnode_cluster:put(?M, extra, [{payload, 1}, {timeout, 0}])),
    ?assertEqual({ok, 1}, tarearbol_cnode_cluster:synch_call(?M, extra, get)),
    ?assertEqual(ok, tarearbol_cnode_cluster:del(?M, extra)),
    ?assertEqual(#{}, tarearbol_cnode_cluster:get(?M, extra)),
    ?assertMatch({error, {bad_opts, _}}, tarearbol_cnode_cluster:put(?M, bad, [{nonsense, 1}])),
    ?assertEqual([], erpc:call(element(2, hd(Peers)), mnesia, dirty_read, [Tab, bad])).

a_member_with_another_configuration_is_refused(_Config) ->
    {P, Node} = start_peer(cnode_test:unique("clbad")),
    try
        [erpc:call(Node, net_kernel, connect_node, [N]) || N <- nodes()],
        Opts = member_opts(cnode_test:unique("clbad"), "counter,max_restarts=9"),
        {error, {config_mismatch, #{ours := Ours, theirs := Theirs}}} =
            erpc:call(Node, tarearbol_cnode_cluster, start_member, [Opts], 60000),
        ct:pal("refused: ours ~p, theirs ~p", [Ours, Theirs]),
        ?assertNotEqual(Ours, Theirs),
        ?assertEqual(3, length(tarearbol_cnode_cluster:members(?M)))
    after
        peer:stop(P)
    end.

%% One bumped id is put again after its handoff: it comes back as put,
%% not with the payload handed off before the put.
kill_9_of_a_c_node_every_id_answers_again_within_5_s_once(Config) ->
    [_, {_, Victim} | _] = ?config(peers, Config),
    {Owned, [Reput | Bumped]} = bump_handed_off(Victim, 300),
    ok = tarearbol_cnode_cluster:put(?M, Reput, [{payload, 3}, {timeout, 0}]),
    [{_, L, _, _}] = [C || {{launcher, _}, _, _, _} = C <- erpc:call(Victim, supervisor, which_children, [tarearbol_cnode_sup])],
    OsPid = erpc:call(Victim, tarearbol_cnode_launcher, os_pid, [L]),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    {Failed, Wait} = await_answers(Owned, min_payload(Bumped), ?FAILOVER_MS),
    ct:pal("after kill -9, the ~b ids of the C node answered within ~b ms", [length(Owned), Wait]),
    ?assertEqual([], lists:sublist(Failed, 10)),
    ?assertEqual({ok, 3}, tarearbol_cnode_cluster:synch_call(?M, Reput, get)),
    ?assertNotEqual(OsPid, erpc:call(Victim, tarearbol_cnode_launcher, os_pid, [L])),
    {[], _} = await_answers(ids(), min_payload(Bumped), ?FAILOVER_MS),
    assert_each_id_once(ids()).

stopping_a_peer_its_ids_answer_on_the_survivors_within_5_s_once(Config) ->
    [{P, Victim} | _] = ?config(peers, Config),
    {Owned, Bumped} = bump_handed_off(Victim, 300),
    VictimC = maps:get(Victim, cnodes()),
    [SName, _] = string:split(atom_to_list(VictimC), "@"),
    ok = peer:stop(P),
    {Failed, Wait} = await_answers(Owned, min_payload(Bumped), ?FAILOVER_MS),
    ct:pal("after the peer stopped, its ~b ids answered on the survivors within ~b ms",
           [length(Owned), Wait]),
    ?assertEqual([], lists:sublist(Failed, 10)),
    ?assertEqual(2, length(tarearbol_cnode_cluster:members(?M))),
    %% Its C node went with it (stdin closed).
    cnode_test:wait_until(fun() -> not lists:member(SName, cnode_test:epmd_names()) end, 10000),
    {[], _} = await_answers(ids(), min_payload(Bumped), ?FAILOVER_MS),
    assert_each_id_once(ids()).

a_returning_peer_gets_a_third_back_while_calls_keep_working(Config) ->
    [{_, Back} | _] = ?config(peers, Config),
    [Name, _] = string:split(atom_to_list(Back), "@"),
    Self = self(),
    Caller = spawn_link(fun() -> caller(Self, 0, 0) end),
    %% The caller has made some calls before the join.
    cnode_test:wait_until(fun() -> Caller ! {count, self()}, receive {count, C, _} -> C > 200 end end, 10000),
    T0 = erlang:monotonic_time(millisecond),
    {P, _} = start_member(Name),
    %% The peer stays for the cases after this one; end_per_group stops it.
    ets:insert(cluster_peers, {returned, P}),
    returned(Caller, T0).

returned(Caller, T0) ->
    await_members(3),
    Shares = await_placed(3),
    T1 = erlang:monotonic_time(millisecond),
    Caller ! {stop, self()},
    {Calls, Failures} = receive {stopped, C, F} -> {C, F} after 20000 -> error(caller_stuck) end,
    Windows = [maps:get(max_window_us, Cs, 0) || #{counters := Cs} <- maps:values(tarearbol_cnode_cluster:info(?M))],
    ct:pal("rebalanced to ~p in ~b ms; a concurrent caller made ~b calls, ~b failed; "
           "longest double-run window of a batch: ~b us",
           [Shares, T1 - T0, Calls, Failures, lists:max(Windows)]),
    assert_each_id_once(ids()),
    {[], _} = await_answers(ids(), fun(_) -> 0 end, ?FAILOVER_MS),
    %% A failed call is one to an id in flight; the moves are batches of
    %% 500, so failures stay a small share of the calls.
    ?assert(Failures =< max(50, Calls div 20), {Failures, Calls}),
    ?assert(lists:max(Windows) < 2000000, Windows).

%% Calls synch_call get on random ids until told to stop; counts calls
%% and failures.
caller(Parent, Calls, Failures) ->
    receive
        {count, From} -> From ! {count, Calls, Failures}, caller(Parent, Calls, Failures);
        {stop, From} -> From ! {stopped, Calls, Failures}
    after 0 ->
        F = case tarearbol_cnode_cluster:synch_call(?M, rand:uniform(?IDS), get) of
                {ok, _} -> 0;
                _ -> 1
            end,
        caller(Parent, Calls + 1, Failures + F)
    end.

a_member_stopped_on_purpose_hands_its_current_payloads_over(Config) ->
    [_, _, {_, Leaver}] = ?config(peers, Config),
    LeaverC = maps:get(Leaver, cnodes()),
    Members = tarearbol_cnode_cluster:members(?M),
    Owned = [Id || Id <- ids(), tarearbol_cnode_cluster_place:owner(Id, Members) =:= Leaver],
    %% Payloads changed just now, before any handoff could have run.
    Bumped = lists:sublist(Owned, 300),
    [] = pmap(fun(Id) ->
                      ok = tarearbol_cnode_cluster:asynch_call(?M, Id, {add, 7}),
                      case tarearbol_cnode_cluster:synch_call(?M, Id, get) of
                          {ok, P} when P >= 7 -> ok;
                          Other -> {Id, Other}
                      end
              end, Bumped, 8),
    ok = erpc:call(Leaver, tarearbol_cnode_cluster, stop_member, [?M], 30000),
    {Failed, Wait} = await_answers(Owned, min_payload(Bumped), ?FAILOVER_MS),
    ct:pal("after stop_member, its ~b ids answered on the others within ~b ms", [length(Owned), Wait]),
    ?assertEqual([], lists:sublist(Failed, 10)),
    %% Its C node runs on, without the cluster's ids.
    ?assertMatch(#{children := C} when map_size(C) =:= 0, tarearbol_cnode:state({?M, LeaverC})),
    assert_each_id_once(ids()),
    %% Back as a member, it gets its share again.
    Name = hd(string:split(atom_to_list(Leaver), "@")),
    {ok, _} = erpc:call(Leaver, tarearbol_cnode_cluster, start_member, [member_opts(Name)], 60000),
    await_members(3),
    _ = await_placed(3),
    assert_each_id_once(ids()).

restart_empties_the_records_and_every_members_manager(Config) ->
    [{_, N} | _] = ?config(peers, Config),
    Tab = tarearbol_cnode_cluster_store:table(?M),
    ?assertEqual(ok, tarearbol_cnode_cluster:restart(?M)),
    ?assertEqual(0, erpc:call(N, mnesia, table_info, [Tab, size])),
    cnode_test:wait_until(fun() -> lists:all(fun(L) -> L =:= [] end, maps:values(children_by_cnode())) end, 5000),
    ?assertMatch(#{children := C, state := started} when map_size(C) =:= 0, tarearbol_cnode_cluster:state(?M)),
    ?assertEqual(error, tarearbol_cnode_cluster:synch_call(?M, 1, get)),
    %% A put after the restart is served as before.
    ?assertEqual(ok, tarearbol_cnode_cluster:put(?M, 1, [{payload, 5}, {timeout, 0}])),
    ?assertEqual({ok, 5}, tarearbol_cnode_cluster:synch_call(?M, 1, get)).

%% A bulk load: batches per owner, one transaction each. A pair that is
%% not one, and a put the C node refuses, get their error and leave no
%% record; everything else is recorded on every member and runs once.
put_many_puts_each_id_once_on_its_owner_and_refuses_bad_pairs(Config) ->
    ok = tarearbol_cnode_cluster:restart(?M),
    Ids = lists:seq(1, 3000),
    Pairs = [{Id, [{payload, Id}, {timeout, 0}]} || Id <- Ids],
    Bad = [not_a_pair, {3001, not_opts}, {3002, [{timeout, -1}]}],
    Rs = tarearbol_cnode_cluster:put_many(?M, lists:sublist(Pairs, 1500) ++ Bad ++ lists:nthtail(1500, Pairs)),
    {Oks, Errors} = lists:split(1500, Rs),
    ?assertEqual([ok], lists:usort(Oks ++ lists:nthtail(3, Errors))),
    ct:pal("bad pairs: ~p", [lists:sublist(Errors, 3)]),
    ?assertMatch([{error, badarg}, {error, badarg}, {error, _}], lists:sublist(Errors, 3)),
    Tab = tarearbol_cnode_cluster_store:table(?M),
    [begin
         ?assertEqual(3000, erpc:call(N, mnesia, table_info, [Tab, size])),
         ?assertEqual([], erpc:call(N, mnesia, dirty_read, [Tab, 3002]))
     end || {_, N} <- ?config(peers, Config)],
    _ = assert_each_id_once(Ids),
    ?assertEqual({ok, 2999}, tarearbol_cnode_cluster:synch_call(?M, 2999, get)),
    ?assertEqual([], tarearbol_cnode_cluster:put_many(?M, [])),
    ok = tarearbol_cnode_cluster:restart(?M).

with_mnesia_down_on_the_owner_a_put_is_refused_and_no_worker_starts(_Config) ->
    [Owner | _] = tarearbol_cnode_cluster:members(?M),
    Id = hd([I || I <- lists:seq(100, 1000),
                  tarearbol_cnode_cluster_place:owner(I, tarearbol_cnode_cluster:members(?M)) =:= Owner]),
    stopped = erpc:call(Owner, mnesia, stop, []),
    R = tarearbol_cnode_cluster:put(?M, Id, [{payload, 1}, {timeout, 0}]),
    ct:pal("put with Mnesia stopped on the owner: ~p", [R]),
    ?assertMatch({error, {mnesia, _}}, R),
    ?assertMatch({error, {mnesia, _}}, tarearbol_cnode_cluster:del(?M, Id)),
    ?assertEqual(#{}, tarearbol_cnode:get({?M, maps:get(Owner, cnodes())}, Id)).

%% ---------------------------------------------------------------------------
%% Net split: peers that this node reaches over their stdio only, so that
%% it bridges none of them; a split is made with cookies that do not match
%% between the two sides, so that no one connects again until the heal.

split_peer(Name) ->
    {P, Node} = cnode_test:start_peer(Name, ["-pa", ebin(tarearbol_cnode), "-connect_all", "false"]),
    {ok, _} = peer:call(P, application, ensure_all_started, [tarearbol_cnode]),
    {P, Node}.

pc(P, M, F, A) -> peer:call(P, M, F, A, 60000).

set_cookies(P, Nodes, Cookie) ->
    [true = pc(P, erlang, set_cookie, [N, Cookie]) || N <- Nodes],
    ok.

a_minority_refuses_writes_the_majority_takes_over_and_the_heal_merges(_Config) ->
    Names = [cnode_test:unique("spl" ++ integer_to_list(I)) || I <- [1, 2, 3]],
    Peers = [split_peer(N) || N <- Names],
    [{PA, A}, {PB, B}, {PC, C}] = Peers,
    try
        [true = pc(P1, net_kernel, connect_node, [N2]) || {P1, N1} <- Peers, {_, N2} <- Peers, N1 =/= N2],
        [{ok, _} = pc(P, tarearbol_cnode_cluster, start_member,
                      [(member_opts(N))#{quorum => 2}]) || {{P, _}, N} <- lists:zip(Peers, Names)],
        cnode_test:wait_until(fun() -> pc(PB, tarearbol_cnode_cluster, members, [?M]) =:= lists:sort([A, B, C]) end, 10000),
        Ids = lists:seq(1, 300),
        [ok = pc(PB, tarearbol_cnode_cluster, put, [?M, Id, [{payload, 0}, {timeout, 0}]]) || Id <- Ids],
        OwnedByA = [Id || Id <- Ids, tarearbol_cnode_cluster_place:owner(Id, lists:sort([A, B, C])) =:= A],
        ?assertNotEqual([], OwnedByA),
        Reg = tarearbol_cnode_cluster_server:registered_name(?M),
        MemberA = pc(PA, erlang, whereis, [Reg]),
        %% The split: A alone, B and C together.
        set_cookies(PA, [B, C], split_a),
        set_cookies(PB, [A], split_bc),
        set_cookies(PC, [A], split_bc),
        [pc(PA, erlang, disconnect_node, [N]) || N <- [B, C]],
        cnode_test:wait_until(fun() -> pc(PA, tarearbol_cnode_cluster, members, [?M]) =:= [A] end, 10000),
        cnode_test:wait_until(fun() -> pc(PB, tarearbol_cnode_cluster, members, [?M]) =:= lists:sort([B, C]) end, 10000),
        %% The minority refuses writes, and still answers for its workers.
        ?assertEqual({error, minority}, pc(PA, tarearbol_cnode_cluster, put, [?M, split_a, [{timeout, 0}]])),
        ?assertEqual({error, minority}, pc(PA, tarearbol_cnode_cluster, del, [?M, hd(OwnedByA)])),
        ?assertEqual({ok, 0}, pc(PA, tarearbol_cnode_cluster, synch_call, [?M, hd(OwnedByA), get])),
        %% The majority writes, and serves A's ids within 5 s.
        ?assertEqual(ok, pc(PB, tarearbol_cnode_cluster, put, [?M, split_bc, [{payload, 3}, {timeout, 0}]])),
        cnode_test:wait_until(fun() ->
                                      lists:all(fun(Id) -> {ok, 0} =:= pc(PB, tarearbol_cnode_cluster, synch_call, [?M, Id, get]) end,
                                                OwnedByA)
                              end, ?FAILOVER_MS),
        %% The heal: A reloads the records from B and C, and every id ends
        %% on exactly one C node.
        set_cookies(PA, [B, C], list_to_atom(cnode_test:cookie())),
        set_cookies(PB, [A], list_to_atom(cnode_test:cookie())),
        set_cookies(PC, [A], list_to_atom(cnode_test:cookie())),
        true = pc(PA, net_kernel, connect_node, [B]),
        true = pc(PA, net_kernel, connect_node, [C]),
        Tab = tarearbol_cnode_cluster_store:table(?M),
        All = lists:sort([split_bc | Ids]),
        cnode_test:wait_until(
          fun() ->
                  Members = [pc(P, tarearbol_cnode_cluster, members, [?M]) || {P, _} <- Peers],
                  Running = [begin
                                 #{cnode := CN} = maps:get(N, pc(P, tarearbol_cnode_cluster, info, [?M])),
                                 #{children := Ch} = pc(P, tarearbol_cnode, state, [{?M, CN}]),
                                 maps:keys(Ch)
                             end || {P, N} <- Peers],
                  Rec = pc(PA, mnesia, dirty_read, [Tab, split_bc]),
                  case Members =:= [lists:sort([A, B, C]) || _ <- Peers] andalso
                      lists:sort(lists:append(Running)) =:= All andalso
                      match =:= case Rec of [{tarearbol_cnode_cluster, split_bc, _, _}] -> match; _ -> no end of
                      true -> true;
                      false -> {false, Members, [length(R) || R <- Running], Rec,
                                duplicates(lists:append(Running)), All -- lists:append(Running)}
                  end
          end, 30000, 200),
        ?assertEqual({ok, 3}, pc(PA, tarearbol_cnode_cluster, synch_call, [?M, split_bc, get])),
        %% A's member reloaded: a new process, which wrote nothing of its own.
        ?assertNotEqual(MemberA, pc(PA, erlang, whereis, [Reg])),
        ?assertEqual(length(All), pc(PA, mnesia, table_info, [Tab, size]))
    after
        [catch peer:stop(P) || {P, _} <- Peers]
    end.

%% ---------------------------------------------------------------------------
%% disc_copies

a_member_with_a_mnesia_dir_keeps_disc_copies_and_restores_from_them(Config) ->
    Dir = filename:join(?config(priv_dir, Config), cnode_test:unique("mnesia")),
    Name = cnode_test:unique("cld"),
    Opts = #{name => cld, handoff_ms => ?HANDOFF_MS,
             node => #{name => Name ++ "_c", binary => cnode_test:bin(), threads => 1,
                       managers => ["cld=counter"]}},
    Start = fun() ->
                    %% The same node name each time: the disc schema is that node's.
                    {ok, P, N} = peer:start_link(#{name => Name, connection => standard_io,
                                                   args => ["-setcookie", cnode_test:cookie(),
                                                            "-pa", ebin(tarearbol_cnode),
                                                            "-mnesia", "dir", "\"" ++ Dir ++ "\""]}),
                    {ok, _} = peer:call(P, application, ensure_all_started, [tarearbol_cnode]),
                    {ok, _} = peer:call(P, tarearbol_cnode_cluster, start_member, [Opts], 60000),
                    {P, N}
            end,
    Tab = tarearbol_cnode_cluster_store:table(cld),
    {P1, N1} = Start(),
    try
        ?assertEqual(ok, peer:call(P1, tarearbol_cnode_cluster, put, [cld, d1, [{payload, 4}, {timeout, 0}]])),
        ?assertEqual([N1], peer:call(P1, mnesia, table_info, [Tab, disc_copies])),
        ?assertEqual(disc_copies, peer:call(P1, mnesia, table_info, [schema, storage_type])),
        #{N1 := #{copy_type := disc_copies}} = peer:call(P1, tarearbol_cnode_cluster, info, [cld]),
        %% Mnesia's log holds a commit in memory for up to 2 s; a halt
        %% right after the put would lose it (see README, Cluster mode).
        ok = peer:call(P1, mnesia, sync_log, [])
    after
        peer:stop(P1)
    end,
    %% The same node again: the record is on disc and the worker comes back.
    {P2, _} = Start(),
    try
        cnode_test:wait_until(fun() ->
                                      case peer:call(P2, tarearbol_cnode_cluster, synch_call, [cld, d1, get]) of
                                          {ok, 4} -> true;
                                          Other -> {Other, peer:call(P2, mnesia, dirty_read, [Tab, d1]),
                                                    peer:call(P2, tarearbol_cnode_cluster, info, [cld])}
                                      end
                              end, 10000)
    after
        peer:stop(P2)
    end.
