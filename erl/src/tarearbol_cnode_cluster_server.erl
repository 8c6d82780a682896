%% @doc One member of a cluster manager: the gen_server that a BEAM node
%% runs for the cluster manager Name, next to its local C node.
%%
%% Start: the local C node is started through the launcher
%% (tarearbol_cnode:start_node/1, or found running under the same name);
%% then, under a global lock per Name so that two first members cannot
%% make two clusters, the member finds the other members (the nodes where
%% this server's registered name runs), takes a copy of the Mnesia table
%% (tarearbol_cnode_cluster_store:join/2), checks that its manager is
%% configured as theirs, registers and joins the pg group Name of the
%% scope `tarearbol_cnode_cluster'. Clients only see it from then on.
%%
%% Membership is pg's: the member monitors its group (pg:monitor/2) and
%% keeps the view, node to member pid. A join hands a `rebalance' to the
%% member's sync process (tarearbol_cnode_cluster_sync), a leave (the
%% member's node down or its server gone) a `{failover, Left}'; a restart
%% of the local C node, seen through monitor_node/2 and the launcher, a
%% `restore'; every `handoff_ms' a `tick'.
%%
%% Requests come as `{route, Request, Hops}': the member serves the ones
%% whose id it owns in its view, each in a process of its own so that a
%% slow callback holds no one else, and redirects the others to their
%% owner (once or twice, while views differ for a moment).
-module(tarearbol_cnode_cluster_server).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/1, registered_name/1, scope/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SCOPE, tarearbol_cnode_cluster).
-define(HANDOFF_MS, 5000).
-define(SETTLE_MS, 10000).
-define(MAX_HOPS, 2).
-define(CALL_TIMEOUT, 15000).
-define(READY_TIMEOUT, 60000).

%% @doc Starts the member of the cluster manager `name' (see
%% tarearbol_cnode_cluster:opts/0); returns once it has joined.
-spec start_link(tarearbol_cnode_cluster:opts()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    gen_server:start_link(?MODULE, Opts, []).

%% @doc The locally registered name of the member of Name.
-spec registered_name(atom()) -> atom().
registered_name(Name) -> list_to_atom("tarearbol_cnode_cluster$" ++ atom_to_list(Name)).

%% @doc The pg scope of the cluster members (started by the application).
-spec scope() -> atom().
scope() -> ?SCOPE.

%% @doc gen_server callback: starts the C node, joins Mnesia and pg.
-spec init(tarearbol_cnode_cluster:opts()) -> {ok, map()} | {stop, term()}.
init(#{name := Name, node := NodeOpts} = Opts) when is_atom(Name), is_map(NodeOpts) ->
    process_flag(trap_exit, true),
    Tab = tarearbol_cnode_cluster_store:table(Name),
    Config = config(Name, Opts),
    case start_cnode(Name, NodeOpts) of
        {ok, CNode} ->
            case global:trans({{?MODULE, Name}, self()},
                              fun() -> join(Name, Tab, Config) end, [node() | nodes()]) of
                {ok, Others} ->
                    {Ref, Pids} = pg:monitor(?SCOPE, Name),
                    true = erlang:monitor_node(CNode, true),
                    _ = mnesia:subscribe(system),
                    S = #{name => Name, tab => Tab, cnode => CNode, config => Config,
                          launcher => maps:get(name, NodeOpts),
                          handoff_ms => maps:get(handoff_ms, Opts, ?HANDOFF_MS),
                          settle_ms => maps:get(settle_ms, Opts, ?SETTLE_MS),
                          quorum => maps:get(quorum, Opts, 1),
                          %% Seen in a minority since the last quorum; and
                          %% Mnesia said the copies diverged meanwhile.
                          was_minority => false, inconsistent => false,
                          pg => Ref, view => view(Pids), changed => now_ms(),
                          cnode_up => true, busy => false, pending => [],
                          counters => #{}},
                    Sync = tarearbol_cnode_cluster_sync:start_link(
                             #{name => Name, tab => Tab, cnode => CNode, server => self()}),
                    %% The first member of a cluster whose records survived
                    %% (disc_copies) puts them back; a joiner gets its ids
                    %% from the members that run them.
                    S1 = S#{sync => Sync},
                    {ok, tick_later(case Others of
                                        [] -> task(restore, S1);
                                        _ -> S1
                                    end)};
                {error, Reason} ->
                    {stop, Reason};
                aborted ->
                    {stop, {lock_not_taken, {?MODULE, Name}}}
            end;
        {error, Reason} ->
            {stop, {cnode, Reason}}
    end;
init(Opts) ->
    {stop, {bad_opts, Opts}}.

%% What every member must have the same: the manager's --manager spec,
%% the handoff period and the quorum.
config(Name, #{node := NodeOpts} = Opts) ->
    Prefix = atom_to_list(Name) ++ "=",
    Specs = [S || S0 <- maps:get(managers, NodeOpts, []),
                  S <- [unicode:characters_to_list(S0)], lists:prefix(Prefix, S)],
    #{manager => Specs, handoff_ms => maps:get(handoff_ms, Opts, ?HANDOFF_MS),
      quorum => maps:get(quorum, Opts, 1)}.

start_cnode(Name, NodeOpts) ->
    case tarearbol_cnode:start_node(NodeOpts) of
        {ok, CNode} ->
            case tarearbol_cnode:state({Name, CNode}) of
                #{manager := Name} -> {ok, CNode};
                Other -> {error, {no_manager, Name, CNode, Other}}
            end;
        {error, _} = E ->
            E
    end.

%% Under the global lock of Name: the members are the nodes where its
%% registered name runs (pg may not have heard of a node that connected a
%% moment ago; erpc asks each node itself).
join(Name, Tab, Config) ->
    Reg = registered_name(Name),
    Others = [N || {N, {ok, P}} <- lists:zip(nodes(), erpc:multicall(nodes(), erlang, whereis, [Reg], 5000)),
                   is_pid(P)],
    case check_config(Reg, Others, Config) of
        ok ->
            case tarearbol_cnode_cluster_store:join(Tab, Others) of
                ok ->
                    true = register(Reg, self()),
                    ok = pg:join(?SCOPE, Name, self()),
                    {ok, Others};
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

check_config(_Reg, [], _Config) -> ok;
check_config(Reg, [N | _], Config) ->
    case catch gen_server:call({Reg, N}, config, 5000) of
        Config -> ok;
        Theirs -> {error, {config_mismatch, #{member => N, theirs => Theirs, ours => Config}}}
    end.

%% One member per node: its registered name guarantees it.
view(Pids) -> maps:from_list([{node(P), P} || P <- Pids]).

%% @doc gen_server callback: requests routed by id, the merge requests of
%% tarearbol_cnode_cluster, and adopt from a member moving ids here.
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()} | {noreply, map()}.
handle_call({route, {put_many, Pairs}, _Hops}, From, #{view := View, name := Name, cnode := CNode,
                                                        tab := Tab} = S) when is_list(Pairs) ->
    case minority(S) of
        true -> {reply, [{error, minority} || _ <- Pairs], S};
        false ->
            Members = maps:keys(View),
            spawn_reply(From, fun() -> put_many(Pairs, Members, {Name, CNode}, Tab) end),
            {noreply, S}
    end;
handle_call({route, Req, Hops}, From, #{view := View} = S) ->
    case is_write(Req) andalso minority(S) of
        true -> {reply, {error, minority}, S};
        false -> route(Req, Hops, From, View, S)
    end;
handle_call({local, clear}, _From, #{view := View, quorum := Q} = S) when map_size(View) < Q ->
    {reply, {error, minority}, S};
handle_call({local, Req}, From, S) ->
    serve({local, Req}, From, S),
    {noreply, S};
handle_call({adopt, Recs}, From, #{name := Name, cnode := CNode} = S) ->
    spawn_reply(From, fun() ->
                              _ = tarearbol_cnode_cluster_sync:put_from({Name, CNode}, put_new, Recs),
                              ok
                      end),
    {noreply, count(adopted, length(Recs), S)};
handle_call(config, _From, #{config := Config} = S) ->
    {reply, Config, S};
handle_call(info, _From, S) ->
    {reply, info(S), S};
handle_call(Req, _From, S) ->
    {reply, {error, {unknown_request, Req}}, S}.

is_write(Req) -> lists:member(element(1, Req), [put, put_new, del]).

route(Req, Hops, From, View, S) ->
    case id(Req) of
        {ok, Id} ->
            case tarearbol_cnode_cluster_place:owner(Id, maps:keys(View)) of
                Me when Me =:= node(), Hops < ?MAX_HOPS ->
                    serve(Req, From, S, previous(Id, S)),
                    {noreply, S};
                _ when Hops >= ?MAX_HOPS ->
                    serve(Req, From, S),
                    {noreply, S};
                Owner ->
                    {reply, {'$redirect', maps:get(Owner, View)}, S}
            end;
        none ->
            serve(Req, From, S),
            {noreply, S}
    end.

%% @doc gen_server callback: nothing is cast to a member.
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @doc gen_server callback: pg's join and leave, the C node's down and
%% ready, the handoff tick and the sync process's reports.
-spec handle_info(term(), map()) -> {noreply, map()} | {stop, term(), map()}.
handle_info({Ref, join, _Group, Pids}, #{pg := Ref, view := View} = S) ->
    New = maps:merge(View, view(Pids)),
    Joined = [node(P) || P <- Pids, node(P) =/= node()],
    ?LOG_INFO("cluster ~p: ~p joined; members ~p", [maps:get(name, S), Joined, maps:keys(New)]),
    S1 = S#{view := New, changed := now_ms()},
    case healed(S1) of
        true -> rejoin(S1);
        false -> {noreply, case Joined of [] -> S1; _ -> task(rebalance, quorum(S1)) end}
    end;
handle_info({Ref, leave, _Group, Pids}, #{pg := Ref, view := View} = S) ->
    Left = [node(P) || P <- Pids, maps:get(node(P), View, undefined) =:= P],
    New = maps:without(Left, View),
    ?LOG_INFO("cluster ~p: ~p left; members ~p", [maps:get(name, S), Left, maps:keys(New)]),
    S1 = quorum(S#{view := New, changed := now_ms()}),
    %% A minority takes over nothing: the majority does.
    {noreply, case Left =/= [] andalso not minority(S1) of
                  true -> task({failover, Left}, S1);
                  false -> S1
              end};
handle_info({mnesia_system_event, {inconsistent_database, Context, Node}}, S) ->
    ?LOG_WARNING("cluster ~p: Mnesia copies diverged from ~p (~p)", [maps:get(name, S), Node, Context]),
    S1 = S#{inconsistent := true},
    case healed(S1) of
        true -> rejoin(S1);
        false -> {noreply, S1}
    end;
handle_info({nodedown, CNode}, #{cnode := CNode, launcher := L} = S) ->
    ?LOG_WARNING("cluster ~p: C node ~p down; waiting for its launcher", [maps:get(name, S), CNode]),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {cnode_ready, CNode, await_cnode(L, CNode)} end),
    {noreply, S#{cnode_up := false}};
handle_info({cnode_ready, CNode, ok}, #{cnode := CNode} = S) ->
    true = erlang:monitor_node(CNode, true),
    ?LOG_INFO("cluster ~p: C node ~p back; restoring its ids", [maps:get(name, S), CNode]),
    {noreply, task(restore, S#{cnode_up := true})};
handle_info({cnode_ready, CNode, {error, Reason}}, #{cnode := CNode} = S) ->
    {stop, {cnode, Reason}, S};
handle_info(tick, #{cnode_up := Up, busy := Busy, changed := Changed, settle_ms := Settle} = S0) ->
    S = case not minority(S0) andalso now_ms() - Changed >= Settle of
            true -> S0#{was_minority := false, inconsistent := false};
            false -> S0
        end,
    S1 = case Up andalso not Busy of
             true -> task(tick, S);
             false -> S
         end,
    {noreply, tick_later(S1)};
handle_info({sync_done, Sync, Task, Report}, #{sync := Sync} = S) ->
    S1 = report(Task, Report, S),
    case S1 of
        #{pending := [T | Rest]} -> {noreply, run(T, S1#{pending := Rest})};
        _ -> {noreply, S1#{busy := false}}
    end;
handle_info({'EXIT', Sync, Reason}, #{sync := Sync} = S) ->
    {stop, {sync, Reason}, S};
handle_info({'EXIT', _Pid, normal}, S) ->
    {noreply, S};
handle_info({'EXIT', _Pid, Reason}, S) ->
    {stop, Reason, S};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @doc gen_server callback: a member stopped on purpose (shutdown,
%% stop_member/1) hands its ids over: it writes their current payloads,
%% leaves the group, so that the others take them over from Mnesia, and
%% deletes them from its C node, which keeps running. A member that
%% crashes leaves them running: once restarted it rejoins, and the moves
%% of the others put each id back on one node.
-spec terminate(term(), map()) -> ok.
terminate(Reason, #{name := Name, sync := Sync} = S) ->
    unlink(Sync),
    exit(Sync, kill),
    case graceful(Reason) andalso not minority(S) andalso maps:get(cnode_up, S) of
        true -> leave(S);
        false -> _ = pg:leave(?SCOPE, Name, self())
    end,
    ok.

graceful(normal) -> true;
graceful(shutdown) -> true;
graceful({shutdown, rejoin_after_split}) -> false;
graceful({shutdown, _}) -> true;
graceful(_) -> false.

leave(#{name := Name, tab := Tab, cnode := CNode} = S) ->
    Ctx = #{name => Name, tab => Tab, cnode => CNode, server => self()},
    Handed = tarearbol_cnode_cluster_sync:hand_off_all(Ctx),
    _ = pg:leave(?SCOPE, Name, self()),
    case Handed of
        {ok, Ids} ->
            _ = tarearbol_cnode_cluster_sync:calls({Name, CNode}, [{del, Id} || Id <- Ids]),
            ?LOG_INFO("cluster ~p: left, ~b ids handed over", [Name, length(Ids)]);
        {error, Reason} ->
            ?LOG_WARNING("cluster ~p: left without a handoff (~p); its ids run on ~p until it rejoins",
                         [Name, Reason, maps:get(cnode, S)])
    end.

%% ---------------------------------------------------------------------------

id({put, Id, _}) -> {ok, Id};
id({put_new, Id, _}) -> {ok, Id};
id({del, Id}) -> {ok, Id};
id({get, Id}) -> {ok, Id};
id({synch_call, nil, _}) -> none;
id({asynch_call, nil, _}) -> none;
id({synch_call, Id, _}) -> {ok, Id};
id({asynch_call, Id, _}) -> {ok, Id};
id(_) -> none.

serve(Req, From, S) -> serve(Req, From, S, none).

%% While the membership is not settled, a read of an id that this C node
%% lacks may be of one still on its way here from the member that owned it
%% before: that member is asked too (it serves it without redirecting).
serve(Req, From, #{name := Name, tab := Tab, cnode := CNode}, Previous) ->
    spawn_reply(From, fun() ->
                              R = do(Req, {Name, CNode}, Tab),
                              case Previous =/= none andalso missing(Req, R) of
                                  true ->
                                      try gen_server:call(Previous, {route, Req, ?MAX_HOPS}, ?CALL_TIMEOUT)
                                      catch exit:_ -> R
                                      end;
                                  false -> R
                              end
                      end).

missing({get, _}, R) -> R =:= #{};
missing({synch_call, _, _}, R) -> R =:= error;
missing({asynch_call, _, _}, R) -> R =:= error;
missing(_, _) -> false.

%% The member that owned Id before this one joined, when the view changed
%% less than settle_ms ago.
previous(Id, #{view := View, changed := Changed, settle_ms := Settle}) ->
    case now_ms() - Changed < Settle of
        true ->
            case tarearbol_cnode_cluster_place:owner(Id, maps:keys(maps:remove(node(), View))) of
                undefined -> none;
                N -> maps:get(N, View)
            end;
        false -> none
    end.

spawn_reply(From, F) ->
    _ = spawn(fun() ->
                      R = try F()
                          catch C:E -> {error, {C, E}}
                          end,
                      gen_server:reply(From, R)
              end),
    ok.

%% Mnesia first, with a sync transaction: the C node runs nothing that the
%% records do not hold, and a put that Mnesia refuses touches no worker.
do({put, Id, Opts}, M, Tab) ->
    case tarearbol_cnode_cluster_store:put(Tab, Id, Opts) of
        {ok, Old} ->
            case tarearbol_cnode:put(M, Id, Opts) of
                ok -> ok;
                Error -> _ = tarearbol_cnode_cluster_store:undo(Tab, Id, Old), Error
            end;
        E -> E
    end;
do({put_new, Id, Opts}, M, Tab) ->
    case tarearbol_cnode_cluster_store:put_new(Tab, Id, Opts) of
        {ok, []} ->
            case tarearbol_cnode:put_new(M, Id, Opts) of
                ok -> ok;
                Error -> _ = tarearbol_cnode_cluster_store:undo(Tab, Id, []), Error
            end;
        {ok, [Rec]} ->
            %% Recorded already; its worker is put back if it is missing here.
            _ = tarearbol_cnode_cluster_sync:put_from(M, put_new, [Rec]),
            ok;
        E -> E
    end;
do({del, Id}, M, Tab) ->
    case tarearbol_cnode_cluster_store:delete(Tab, Id) of
        {ok, Existed} ->
            case {tarearbol_cnode:del(M, Id), Existed} of
                {{error, not_found}, true} -> ok;
                {R, _} -> R
            end;
        E -> E
    end;
do({get, Id}, M, _Tab) -> tarearbol_cnode:get(M, Id);
do({synch_call, Id, Msg}, M, _Tab) -> tarearbol_cnode:synch_call(M, Id, Msg);
do({asynch_call, Id, Msg}, M, _Tab) -> tarearbol_cnode:asynch_call(M, Id, Msg);
do({local, state}, M, _Tab) -> tarearbol_cnode:state(M);
do({local, stats}, M, _Tab) -> tarearbol_cnode:stats(M);
do({local, restart}, M, _Tab) -> tarearbol_cnode:restart(M);
do({local, clear}, _M, Tab) -> tarearbol_cnode_cluster_store:clear(Tab);
do(Req, _M, _Tab) -> {error, {unknown_request, Req}}.

%% The pairs this member owns in one sync transaction, then on the C node
%% (256 in flight); a put the C node refuses gets its record back. The
%% others are `{error, not_owner}', for the caller to route one by one.
put_many(Pairs, Members, M, Tab) ->
    Mine = [P || {Id, _} = P <- Pairs, tarearbol_cnode_cluster_place:owner(Id, Members) =:= node()],
    Done = case Mine of
               [] -> #{};
               _ ->
                   case tarearbol_cnode_cluster_store:put_many(Tab, Mine) of
                       {ok, Olds} ->
                           Rs = tarearbol_cnode_cluster_sync:calls(M, [{put, Id, O} || {Id, O} <- Mine]),
                           maps:from_list(
                             [{Id, case R of
                                       ok -> ok;
                                       _ -> _ = tarearbol_cnode_cluster_store:undo(Tab, Id, Old), R
                                   end} || {{Id, _}, Old, R} <- lists:zip3(Mine, Olds, Rs)]);
                       {error, _} = E -> maps:from_list([{Id, E} || {Id, _} <- Mine])
                   end
           end,
    [maps:get(Id, Done, {error, not_owner}) || {Id, _} <- Pairs].

%% The launcher brings the C node back; a launcher that has not seen the
%% death yet still says ready, so the node itself must answer.
await_cnode(Launcher, CNode) ->
    Deadline = now_ms() + ?READY_TIMEOUT,
    await_cnode(Launcher, CNode, Deadline).

await_cnode(Launcher, CNode, Deadline) ->
    case now_ms() > Deadline of
        true -> {error, {not_back, CNode}};
        false ->
            Pids = [P || {{launcher, N}, P, _, _} <- supervisor:which_children(tarearbol_cnode_sup),
                         N =:= Launcher, is_pid(P)],
            Ready = case Pids of
                        [P] -> tarearbol_cnode_launcher:await_ready(P, 1000);
                        _ -> {error, no_launcher}
                    end,
            case Ready =:= {ok, CNode} andalso net_adm:ping(CNode) =:= pong of
                true -> ok;
                false -> timer:sleep(20), await_cnode(Launcher, CNode, Deadline)
            end
    end.

%% Tasks run one at a time in the sync process; a task asked while one
%% runs waits (a tick is dropped rather than queued behind another).
task(T, #{busy := false} = S) -> run(T, S);
task(tick, S) -> S;
task(T, #{pending := P} = S) -> S#{pending := P ++ [T]}.

run(T, #{sync := Sync, view := View, changed := Changed, settle_ms := Settle} = S) ->
    Sync ! {task, T, View, #{settled => now_ms() - Changed >= Settle, changed => Changed,
                             minority => minority(S)}},
    S#{busy := true}.

report(Task, Report, S) ->
    maps:fold(fun(window_us, W, A) ->
                      Cs = maps:get(counters, A),
                      A#{counters := Cs#{max_window_us => max(W, maps:get(max_window_us, Cs, 0)),
                                         last_window_us => W}};
                 (error, E, A) ->
                      ?LOG_WARNING("cluster ~p: ~p: ~p", [maps:get(name, A), Task, E]),
                      count(errors, 1, A);
                 (K, V, A) when is_integer(V) -> count(K, V, A);
                 (_, _, A) -> A
              end, count(key(Task), 1, S), Report).

key({failover, _}) -> failovers;
key(restore) -> restores;
key(rebalance) -> rebalances;
key(tick) -> ticks.

count(K, N, #{counters := Cs} = S) ->
    S#{counters := maps:update_with(K, fun(V) -> V + N end, N, Cs)}.

info(#{view := View, cnode := CNode, counters := Cs, busy := Busy, cnode_up := Up,
       handoff_ms := H, tab := Tab}) ->
    #{members => lists:sort(maps:keys(View)), cnode => CNode, cnode_up => Up,
      busy => Busy, handoff_ms => H, table => Tab,
      copy_type => tarearbol_cnode_cluster_store:copy_type(), counters => Cs}.

%% Net splits: a member that sees fewer than `quorum' members (itself
%% included) is in a minority. It refuses writes, takes over no one's ids
%% and hands off nothing (the majority does all three), and keeps serving
%% reads of the workers it runs. Back with a quorum, if Mnesia saw the
%% copies diverge, it reloads them from the majority: it stops Mnesia and
%% exits, and its supervisor starts it again, which joins afresh.
minority(#{view := View, quorum := Q}) -> map_size(View) < Q.

quorum(S) ->
    case minority(S) of
        true -> S#{was_minority := true};
        false -> S
    end.

healed(#{was_minority := true, inconsistent := Inc} = S) ->
    not minority(S) andalso
        (Inc orelse [N || N <- maps:keys(map_get(view, S)),
                          not lists:member(N, mnesia:system_info(running_db_nodes))] =/= []);
healed(_) ->
    false.

rejoin(S) ->
    ?LOG_WARNING("cluster ~p: back with a quorum after a split; reloading the records from ~p",
                 [maps:get(name, S), maps:keys(maps:remove(node(), map_get(view, S)))]),
    _ = pg:leave(?SCOPE, maps:get(name, S), self()),
    stopped = mnesia:stop(),
    {stop, {shutdown, rejoin_after_split}, S}.

tick_later(#{handoff_ms := H} = S) ->
    _ = erlang:send_after(H, self(), tick),
    S.

now_ms() -> erlang:monotonic_time(millisecond).
