%% @doc Durable state (--state-dir): a real LMDB store on disk, the real
%% binary killed with SIGKILL under load, and the store's refusals. Every
%% put, put_new or del answered ok survives; payloads come back no older
%% than the sync interval (plus the time a commit takes); a store that is
%% held, of another format or corrupt stops the node with exit 1 and is
%% left as it was.
-module(durable_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([acknowledged_changes_survive_sigkill_ten_times_under_load/1,
         a_clean_stop_keeps_the_last_payloads/1,
         children_specs_add_only_what_the_store_does_not_know/1,
         restart_clears_the_store/1,
         escalation_keeps_put_children_in_the_store/1,
         workers_moved_by_a_shrink_keep_their_checkpointed_payloads/1,
         a_checkpoint_in_parts_keeps_every_payload/1,
         a_store_held_by_a_running_node_is_refused/1,
         a_store_of_another_format_is_refused_untouched/1,
         a_corrupt_store_is_refused_untouched/1,
         a_record_that_does_not_decode_is_refused_untouched/1,
         a_checkpoint_entry_that_does_not_decode_is_refused_untouched/1,
         a_put_over_a_checkpointed_child_comes_back_as_put/1,
         a_full_disk_answers_store_errors_and_the_node_serves_on/1]).

-define(M, kv).
-define(SYNC_MS, 200).
%% What a checkpoint may take beyond its interval on a loaded, shared
%% machine: the timer, the commit's fsync.
-define(SLACK_MS, 1500).

all() ->
    [acknowledged_changes_survive_sigkill_ten_times_under_load,
     a_clean_stop_keeps_the_last_payloads,
     children_specs_add_only_what_the_store_does_not_know,
     restart_clears_the_store,
     escalation_keeps_put_children_in_the_store,
     workers_moved_by_a_shrink_keep_their_checkpointed_payloads,
     a_checkpoint_in_parts_keeps_every_payload,
     a_store_held_by_a_running_node_is_refused,
     a_store_of_another_format_is_refused_untouched,
     a_corrupt_store_is_refused_untouched,
     a_record_that_does_not_decode_is_refused_untouched,
     a_checkpoint_entry_that_does_not_decode_is_refused_untouched,
     a_put_over_a_checkpointed_child_comes_back_as_put,
     a_full_disk_answers_store_errors_and_the_node_serves_on].

init_per_suite(Config) ->
    true = is_alive(),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    ok = filelib:ensure_path(Dir),
    [{state_dir, Dir}, {name, cnode_test:unique("durable")} | Config].

end_per_testcase(a_full_disk_answers_store_errors_and_the_node_serves_on, Config) ->
    _ = os:cmd("umount " ++ ?config(state_dir, Config) ++ " 2>/dev/null"),
    ok;
end_per_testcase(_Case, _Config) -> ok.

args(Config, Manager) ->
    ["--manager", Manager, "--state-dir", ?config(state_dir, Config),
     "--state-sync-ms", integer_to_list(?SYNC_MS)].

start(Config) -> start(Config, "kv=counter,children=3,timeout=0").
start(Config, Manager) ->
    C = cnode_test:start(?config(name, Config), #{dir => ?config(priv_dir, Config),
                                                  args => args(Config, Manager)}),
    cnode_test:wait_started({?M, cnode_test:node(C)}, 20000),
    C.

%% SIGKILL, and the process gone (its lock with it) before going on.
kill9(#{owner := Owner} = C) ->
    cnode_test:kill(C),
    Owner ! {await_exit, self()},
    receive {Owner, {exited, _}} -> ok after 20000 -> error(not_killed) end.

call(N, Req) -> gen_server:call({?M, N}, Req, 10000).
children(N) -> maps:get(children, call(N, state)).
payload(N, Id) -> {ok, P} = call(N, {synch_call, Id, get}), P.

%% ---------------------------------------------------------------------------
%% 8 callers, each with ids of its own, put, del and set payloads (a call
%% whose answer {ok, Seq} makes Seq the payload) as fast as the node
%% answers, recording what was answered and when. The node is killed with
%% SIGKILL mid-load, ten times; after each restart every id is checked
%% against what its caller was told.

acknowledged_changes_survive_sigkill_ten_times_under_load(Config) ->
    Model = lists:foldl(fun(Round, Acc) -> sigkill_round(Config, Round, Acc) end,
                        #{}, lists:seq(1, 10)),
    ct:pal("ids tracked: ~p", [maps:size(Model)]),
    ?assert(maps:size(Model) > 50).

sigkill_round(Config, Round, Model0) ->
    C = start(Config),
    N = cnode_test:node(C),
    check_model(N, Model0, Round),
    Self = self(),
    Callers = [spawn_link(fun() -> caller(Self, N, Round, K, Model0) end) || K <- lists:seq(1, 8)],
    %% Some load first: every caller has been answered a few times.
    [receive {Pid, going} -> ok after 10000 -> error(caller_stuck) end || Pid <- Callers],
    KilledAt = erlang:monotonic_time(millisecond),
    kill9(C),
    [Pid ! stop || Pid <- Callers],
    lists:foldl(fun(Pid, Acc) ->
                        receive {Pid, done, Log} -> maps:merge(Acc, Log#{killed_at => KilledAt})
                        after 30000 -> error(caller_not_done)
                        end
                end, maps:remove(killed_at, Model0), Callers).

%% The model: Id => {present, Opts, Payload, AckedAt} | absent | unsure
%% (a request was in flight when the node died: either outcome is right).
check_model(_N, Model, 1) when map_size(Model) =:= 0 -> ok;
check_model(N, Model0, Round) ->
    KilledAt = maps:get(killed_at, Model0),
    Model = maps:remove(killed_at, Model0),
    Children = children(N),
    Bad = maps:fold(
            fun(Id, absent, Acc) ->
                    case maps:is_key(Id, Children) of
                        true -> [{Id, should_be_absent} | Acc];
                        false -> Acc
                    end;
               (_Id, unsure, Acc) -> Acc;
               (Id, {present, Opts, Seq, At}, Acc) ->
                    case maps:find(Id, Children) of
                        error -> [{Id, lost} | Acc];
                        {ok, #{opts := O}} when O =/= Opts -> [{Id, {opts, O, Opts}} | Acc];
                        {ok, _} ->
                            P = payload(N, Id),
                            Old = KilledAt - At > ?SYNC_MS + ?SLACK_MS,
                            case is_integer(P) andalso (P >= Seq orelse not Old) of
                                true -> Acc;
                                false -> [{Id, {payload, P, acked, Seq, KilledAt - At}} | Acc]
                            end
                    end
            end, [], Model),
    ct:pal("round ~p: ~p ids checked, ~p children", [Round, maps:size(Model), maps:size(Children)]),
    ?assertEqual([], Bad).

caller(Parent, N, Round, K, Model) ->
    Ids = [iolist_to_binary(io_lib:format("k~p_~p", [K, I])) || I <- lists:seq(1, 12)],
    Mine = maps:with(Ids, Model),
    caller_loop(Parent, N, Ids, Mine, Round * 1000000, 0).

caller_loop(Parent, N, Ids, Log, Seq, Done) ->
    receive stop -> Parent ! {self(), done, Log}
    after 0 ->
        Done =:= 20 andalso (Parent ! {self(), going}),
        Id = lists:nth(rand:uniform(length(Ids)), Ids),
        {Req, Effect} =
            case rand:uniform(10) of
                1 -> {{del, Id}, absent};
                2 -> {{put_new, Id, [{payload, Seq}, {timeout, 0}]}, put_new};
                R when R =< 5 -> {{put, Id, [{payload, Seq}, {timeout, 0}]}, put};
                _ -> {{synch_call, Id, {respond, {ok, Seq}}}, payload}
            end,
        %% Until the answer comes the id's state is unknown.
        Log1 = Log#{Id => unsure},
        case catch gen_server:call({?M, N}, Req, 2000) of
            ok when Effect =:= absent ->
                next(Parent, N, Ids, Log1#{Id => absent}, Seq, Done);
            ok when Effect =:= put ->
                next(Parent, N, Ids, Log1#{Id => present(Req, Seq)}, Seq, Done);
            ok when Effect =:= put_new ->
                New = case maps:get(Id, Log, absent) of
                          absent -> present(Req, Seq);
                          Prev -> Prev
                      end,
                next(Parent, N, Ids, Log1#{Id => New}, Seq, Done);
            {error, not_found} when Effect =:= absent ->
                next(Parent, N, Ids, Log1#{Id => absent}, Seq, Done);
            {ok, Seq} when Effect =:= payload ->
                Now = erlang:monotonic_time(millisecond),
                New = case maps:get(Id, Log, absent) of
                          {present, O, _, _} -> {present, O, Seq, Now};
                          _ -> unsure
                      end,
                next(Parent, N, Ids, Log1#{Id => New}, Seq, Done);
            error when Effect =:= payload -> % no such child
                next(Parent, N, Ids, Log1#{Id => maps:get(Id, Log, absent)}, Seq, Done);
            _ ->
                %% The node is gone, or going: this request may or may not
                %% have been applied. Wait for stop.
                receive stop -> Parent ! {self(), done, Log1} end
        end
    end.

present({_, _, Opts}, Seq) -> {present, Opts, Seq, erlang:monotonic_time(millisecond)}.

next(Parent, N, Ids, Log, Seq, Done) -> caller_loop(Parent, N, Ids, Log, Seq + 1, Done + 1).

%% ---------------------------------------------------------------------------

a_clean_stop_keeps_the_last_payloads(Config) ->
    C = start(Config, "kv=counter,children=0,timeout=0"),
    N = cnode_test:node(C),
    ok = call(N, {put, <<"p">>, [{payload, 1}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"p">>, {add, 41}}),
    cnode_test:wait_until(fun() -> payload(N, <<"p">>) =:= 42 end, 5000),
    ok = cnode_test:stop(C),
    C2 = start(Config, "kv=counter,children=0,timeout=0"),
    N2 = cnode_test:node(C2),
    ?assertEqual(42, payload(N2, <<"p">>)),
    ?assertMatch(#{opts := [{payload, 1}, {timeout, 0}]}, call(N2, {get, <<"p">>})),
    ok = cnode_test:stop(C2).

children_specs_add_only_what_the_store_does_not_know(Config) ->
    C = start(Config),
    N = cnode_test:node(C),
    ok = call(N, {put, <<"c1">>, [{payload, 100}, {timeout, 0}]}), % over a spec id
    ok = call(N, {del, <<"c2">>}),
    ok = call(N, {put, <<"mine">>, [{payload, 7}, {timeout, 0}]}),
    kill9(C),
    C2 = start(Config, "kv=counter,children=4,timeout=0"), % a fourth spec child now
    N2 = cnode_test:node(C2),
    ?assertEqual([<<"c1">>, <<"c3">>, <<"c4">>, <<"mine">>], lists:sort(maps:keys(children(N2)))),
    ?assertEqual(100, payload(N2, <<"c1">>)),
    ?assertEqual(7, payload(N2, <<"mine">>)),
    %% A deleted spec id stays deleted, across another kill too.
    kill9(C2),
    C3 = start(Config, "kv=counter,children=4,timeout=0"),
    N3 = cnode_test:node(C3),
    ?assertNot(maps:is_key(<<"c2">>, children(N3))),
    ?assertMatch(#{store_failures := 0}, call(N3, stats)),
    ok = cnode_test:stop(C3).

restart_clears_the_store(Config) ->
    C = start(Config),
    N = cnode_test:node(C),
    ok = call(N, {put, <<"mine">>, [{payload, 7}, {timeout, 0}]}),
    ok = call(N, {del, <<"c2">>}),
    ok = call(N, restart),
    cnode_test:wait_started({?M, N}, 10000),
    %% A call after restart is answered once committed: the restart's
    %% clear and children_specs are in the store by then.
    ok = call(N, {put, <<"after">>, [{payload, 1}, {timeout, 0}]}),
    kill9(C),
    C2 = start(Config),
    N2 = cnode_test:node(C2),
    ?assertEqual([<<"after">>, <<"c1">>, <<"c2">>, <<"c3">>], lists:sort(maps:keys(children(N2)))),
    ok = cnode_test:stop(C2).

escalation_keeps_put_children_in_the_store(Config) ->
    C = start(Config, "kv=counter,children=2,timeout=0,max_restarts=2,max_seconds=60"),
    N = cnode_test:node(C),
    ok = call(N, {put, <<"x">>, [{payload, 5}, {timeout, 0}]}),
    ok = call(N, {asynch_call, <<"x">>, {add, 37}}),
    cnode_test:wait_until(fun() -> payload(N, <<"x">>) =:= 42 end, 5000),
    settle(N, 2),
    [begin
         #{pid := P} = call(N, {get, <<"c1">>}),
         ok = call(N, {asynch_call, <<"c1">>, {crash, boom}}),
         cnode_test:wait_until(fun() -> case call(N, {get, <<"c1">>}) of
                                            #{pid := P} -> false;
                                            _ -> true
                                        end end, 5000)
     end || _ <- lists:seq(1, 3)],
    ?assertMatch(#{escalations := 1}, call(N, stats)),
    %% The escalation laid every worker out anew: checkpoints write them
    %% all elsewhere, then drop where they were. Both are committed once
    %% two more have been taken (a ticking worker keeps them coming).
    settle(N, 3),
    kill9(C),
    C2 = start(Config, "kv=counter,children=2,timeout=0,max_restarts=2,max_seconds=60"),
    N2 = cnode_test:node(C2),
    ?assertEqual([<<"c1">>, <<"c2">>, <<"tick">>, <<"x">>], lists:sort(maps:keys(children(N2)))),
    ?assertEqual(42, payload(N2, <<"x">>)),
    ok = cnode_test:stop(C2).

%% A worker whose payload changes 20 times a second, so that checkpoints
%% keep coming; then until K more were taken: the one before the last is
%% committed.
settle(N, K) ->
    case maps:is_key(<<"tick">>, children(N)) of
        true -> ok;
        false -> ok = call(N, {put, <<"tick">>, [{payload, 0}, {timeout, 50}]})
    end,
    #{store_checkpoints := C0} = call(N, stats),
    cnode_test:wait_until(fun() -> maps:get(store_checkpoints, call(N, stats)) >= C0 + K end,
                          20000).

%% 100k children, 90% of them deleted: the slab shrinks, moving the
%% survivors of its later chunks into the free slots of its first and
%% freeing the rest. Checkpoints find workers where they lie in memory: the
%% moved ones are written at their new places before the records of the
%% freed chunks go, and after SIGKILL every survivor has its payload.
workers_moved_by_a_shrink_keep_their_checkpointed_payloads(Config) ->
    Manager = "kv=counter,children=100000,timeout=0",
    C = start(Config, Manager),
    N = cnode_test:node(C),
    Id = fun(I) -> <<"c", (integer_to_binary(I))/binary>> end,
    Kept = [Id(I) || I <- lists:seq(10, 100000, 10)],
    Gone = [Id(I) || I <- lists:seq(1, 100000), I rem 10 =/= 0],
    in_parallel(fun(K) -> ok = call(N, {asynch_call, K, {add, 555}}) end, Kept),
    cnode_test:wait_until(fun() -> payload(N, lists:last(Kept)) =:= 555 end, 10000),
    settle(N, 2), % the payloads are in the store
    in_parallel(fun(K) -> ok = call(N, {del, K}) end, Gone),
    cnode_test:wait_until(fun() -> maps:get(compactions, call(N, stats)) >= 1 end, 20000),
    settle(N, 3),
    kill9(C),
    C2 = start(Config, Manager),
    N2 = cnode_test:node(C2),
    ?assertEqual(length(Kept) + 1, call(N2, count)),
    Wrong = [{K, P} || K <- Kept, (P = payload(N2, K)) =/= 555],
    ?assertEqual([], lists:sublist(Wrong, 5)),
    ok = cnode_test:stop(C2).

%% 600 workers in three groups, each with a payload of 20 KB set by a
%% call: 12 MB of checkpoint, written in parts of 4 MiB, each committed
%% before the next is written. After SIGKILL every payload is back.
a_checkpoint_in_parts_keeps_every_payload(Config) ->
    C = start(Config, "kv=counter,children=0,timeout=0"),
    N = cnode_test:node(C),
    Ids = [integer_to_binary(I) || I <- lists:seq(1, 600)],
    Big = fun(Id) -> <<Id/binary, ":", (binary:copy(<<"p">>, 20000))/binary>> end,
    in_parallel(fun(Id) -> ok = call(N, {put, Id, [{payload, 0}, {timeout, 0}]}) end, Ids),
    in_parallel(fun(Id) -> {ok, _} = call(N, {synch_call, Id, {respond, {ok, Big(Id)}}}) end, Ids),
    settle(N, 3),
    kill9(C),
    C2 = start(Config, "kv=counter,children=0,timeout=0"),
    N2 = cnode_test:node(C2),
    Wrong = [Id || Id <- Ids, payload(N2, Id) =/= Big(Id)],
    ?assertEqual([], lists:sublist(Wrong, 5)),
    ok = cnode_test:stop(C2).

%% F over Items from 8 processes.
in_parallel(F, Items) ->
    Parts = split(Items, 8, []),
    Self = self(),
    Pids = [spawn_link(fun() -> lists:foreach(F, P), Self ! {self(), done} end) || P <- Parts],
    [receive {P, done} -> ok after 120000 -> error({stuck, P}) end || P <- Pids],
    ok.

split([], _, Acc) -> Acc;
split(L, K, Acc) ->
    {A, B} = lists:split(min(length(L), (length(L) + K - 1) div K), L),
    split(B, K, [A | Acc]).

%% ---------------------------------------------------------------------------
%% Refusals: exit 1, a clear line, the store as it was.

refused(Config, Manager) ->
    Cmd = "TAREARBOL_CNODE_COOKIE=x " ++ cnode_test:bin() ++ " --sname " ++
          cnode_test:unique("refused") ++ " " ++
          string:join(args(Config, Manager), " ") ++ " 2>&1; echo \"exit=$?\"",
    Out = os:cmd(Cmd),
    ct:pal("~s", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "exit=1")),
    Out.

files(Config) ->
    Dir = filename:join(?config(state_dir, Config), atom_to_list(?M)),
    {ok, Names} = file:list_dir(Dir),
    lists:sort([{F, element(2, file:read_file(filename:join(Dir, F)))}
                || F <- Names, F =/= "lock.mdb", F =/= "LOCK"]).

a_store_held_by_a_running_node_is_refused(Config) ->
    C = start(Config),
    Out = refused(Config, "kv=counter,children=3,timeout=0"),
    ?assertNotEqual(nomatch, string:find(Out, "held by another running node")),
    ?assertEqual(pong, net_adm:ping(cnode_test:node(C))),
    ok = cnode_test:stop(C).

a_store_of_another_format_is_refused_untouched(Config) ->
    ok = cnode_test:stop(start(Config)),
    Data = filename:join([?config(state_dir, Config), atom_to_list(?M), "data.mdb"]),
    {ok, B} = file:read_file(Data),
    %% The meta database's format record: the key, then version 3 as 4
    %% bytes; every copy of it (LMDB keeps older pages) says 9 instead.
    Patched = binary:replace(B, <<"format", 0, 0, 0, 3>>, <<"format", 0, 0, 0, 9>>, [global]),
    ?assertNotEqual(B, Patched),
    ok = file:write_file(Data, Patched),
    Before = files(Config),
    Out = refused(Config, "kv=counter,children=3,timeout=0"),
    ?assertNotEqual(nomatch, string:find(Out, "format version 9")),
    ?assertEqual(Before, files(Config)).

a_corrupt_store_is_refused_untouched(Config) ->
    ok = cnode_test:stop(start(Config)),
    Data = filename:join([?config(state_dir, Config), atom_to_list(?M), "data.mdb"]),
    {ok, B} = file:read_file(Data),
    %% Garbage over the two meta pages LMDB starts with.
    ok = file:write_file(Data, [binary:copy(<<16#5a>>, 8192), binary:part(B, 8192, byte_size(B) - 8192)]),
    Before = files(Config),
    Out = refused(Config, "kv=counter,children=3,timeout=0"),
    ?assertNotEqual(nomatch, string:find(string:lowercase(Out), "corrupt")),
    ?assertEqual(Before, files(Config)),
    %% Truncated to nothing but a page.
    ok = file:write_file(Data, binary:part(B, 0, 100)),
    Out2 = refused(Config, "kv=counter,children=3,timeout=0"),
    ?assertNotEqual(nomatch, string:find(string:lowercase(Out2), "corrupt")).

%% The store is sound but a child's record is not a record: its payload's
%% length says more bytes than there are.
a_record_that_does_not_decode_is_refused_untouched(Config) ->
    C = start(Config, "kv=counter,children=0,timeout=0"),
    ok = call(cnode_test:node(C), {put, <<"r">>, [{payload, <<"MARKER_MARKER">>}, {timeout, 0}]}),
    ok = cnode_test:stop(C),
    Data = filename:join([?config(state_dir, Config), atom_to_list(?M), "data.mdb"]),
    {ok, B} = file:read_file(Data),
    Patched = binary:replace(B, <<0, 0, 0, 13, "MARKER_MARKER">>, <<0, 0, 0, 200, "MARKER_MARKER">>,
                             [global]),
    ?assertNotEqual(B, Patched),
    ok = file:write_file(Data, Patched),
    Before = files(Config),
    Out = refused(Config, "kv=counter,children=0,timeout=0"),
    ?assertNotEqual(nomatch, string:find(Out, "cannot read")),
    ?assertEqual(Before, files(Config)).

%% The state a checkpoint wrote (a payload set by a call, which the
%% child's record does not hold) is checked entry by entry: a payload
%% whose length runs past its entry, or an entry whose payload length runs
%% past its chunk, stops the node as a bad record does.
a_checkpoint_entry_that_does_not_decode_is_refused_untouched(Config) ->
    C = start(Config, "kv=counter,children=0,timeout=0"),
    N = cnode_test:node(C),
    ok = call(N, {put, <<"s">>, [{payload, 1}, {timeout, 0}]}),
    {ok, _} = call(N, {synch_call, <<"s">>, {respond, {ok, <<"STATE_MARKER">>}}}),
    ok = cnode_test:stop(C), % a clean stop checkpoints
    Data = filename:join([?config(state_dir, Config), atom_to_list(?M), "data.mdb"]),
    {ok, B} = file:read_file(Data),
    Payload = <<109, 0, 0, 0, 12, "STATE_MARKER">>,
    %% The entry: Gen, then the lengths of id (6), payload (17) and value
    %% (0: nil), then the id's bytes.
    Entry = <<6, 17, 0, 109, 0, 0, 0, 1, "s", Payload/binary>>,
    ?assertNotEqual(nomatch, binary:match(B, Entry)),
    Variants = [{Payload, <<109, 0, 0, 0, 200, "STATE_MARKER">>},
                {Entry, <<6, 127, 0, 109, 0, 0, 0, 1, "s", Payload/binary>>}],
    lists:foreach(
      fun({From, To}) ->
              ok = file:write_file(Data, binary:replace(B, From, To, [global])),
              Before = files(Config),
              Out = refused(Config, "kv=counter,children=0,timeout=0"),
              ?assertNotEqual(nomatch, string:find(Out, "cannot read")),
              ?assertEqual(Before, files(Config))
      end, Variants),
    %% Put back as it was, the store opens and the payload is there.
    ok = file:write_file(Data, B),
    C2 = start(Config, "kv=counter,children=0,timeout=0"),
    ?assertEqual(<<"STATE_MARKER">>, payload(cnode_test:node(C2), <<"s">>)),
    ok = cnode_test:stop(C2).

%% A checkpoint holds a child's payload until the child is put again: the
%% new record wins over the older state, after a del too, when the node is
%% killed before another checkpoint (the interval is a minute here).
a_put_over_a_checkpointed_child_comes_back_as_put(Config) ->
    Manager = "kv=counter,children=0,timeout=0",
    Slow = ["--manager", Manager, "--state-dir", ?config(state_dir, Config),
            "--state-sync-ms", "60000"],
    Boot = fun() ->
                   C0 = cnode_test:start(?config(name, Config),
                                         #{dir => ?config(priv_dir, Config), args => Slow}),
                   cnode_test:wait_started({?M, cnode_test:node(C0)}, 20000),
                   C0
           end,
    C = Boot(),
    N = cnode_test:node(C),
    [ok = call(N, {put, Id, [{payload, 1}, {timeout, 0}]}) || Id <- [<<"a">>, <<"b">>]],
    [{ok, _} = call(N, {synch_call, Id, {respond, {ok, 555}}}) || Id <- [<<"a">>, <<"b">>]],
    ok = cnode_test:stop(C), % checkpointed: a and b at 555
    C2 = Boot(),
    N2 = cnode_test:node(C2),
    ?assertEqual(555, payload(N2, <<"a">>)),
    ok = call(N2, {put, <<"a">>, [{payload, 7}, {timeout, 0}]}),
    ok = call(N2, {del, <<"b">>}),
    ok = call(N2, {put, <<"b">>, [{payload, 8}, {timeout, 0}]}),
    kill9(C2),
    C3 = Boot(),
    N3 = cnode_test:node(C3),
    ?assertEqual(7, payload(N3, <<"a">>)),
    ?assertEqual(8, payload(N3, <<"b">>)),
    ok = cnode_test:stop(C3).

%% A small file system of its own, mounted by the test: large payloads
%% fill it, the calls that cannot be committed answer {error, {store, _}},
%% and the node keeps serving from memory.
a_full_disk_answers_store_errors_and_the_node_serves_on(Config) ->
    Dir = ?config(state_dir, Config),
    case os:cmd("mount -t tmpfs -o size=4m tmpfs " ++ Dir ++ " 2>&1; echo \"rc=$?\"") of
        "rc=0\n" -> ok;
        Other -> ct:fail({cannot_mount_a_small_file_system, Other})
    end,
    C = start(Config, "kv=counter,children=0,timeout=0"),
    N = cnode_test:node(C),
    Big = binary:copy(<<"x">>, 512 * 1024),
    Rs = [call(N, {put, integer_to_binary(I), [{payload, Big}, {timeout, 0}]}) || I <- lists:seq(1, 16)],
    ct:pal("answers: ~p", [Rs]),
    ?assertEqual(ok, hd(Rs)),
    Errors = [R || {error, {store, _}} = R <- Rs],
    ?assert(length(Errors) >= 1),
    ?assertEqual([], [R || R <- Rs, R =/= ok, element(1, R) =/= error]),
    ?assertEqual(pong, net_adm:ping(N)),
    ?assertEqual(16, maps:size(children(N))),
    ?assertMatch(#{store_failures := F} when F >= 1, call(N, stats)),
    %% What failed is tried again at the next checkpoints, and counted.
    cnode_test:wait_until(fun() -> maps:get(store_retries, call(N, stats)) >= 2 end, 10000),
    ok = cnode_test:stop(C).
