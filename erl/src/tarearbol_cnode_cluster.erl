%% @doc Cluster mode: one manager spread over the C nodes of a BEAM
%% cluster, with tarearbol_cnode's API and the manager given by name alone.
%%
%% Each BEAM node that takes part runs a member for the manager Name
%% (start_member/1, or child_spec/1 in a supervisor of its own), which
%% starts its local C node through the launcher. Requests go to the owner
%% of their id: the member that rendezvous hashing over the live members
%% picks (tarearbol_cnode_cluster_place). Membership is a pg group (scope
%% `tarearbol_cnode_cluster', started by this application); the ids' opts
%% and last handed-off payloads are a Mnesia table replicated on the
%% members (tarearbol_cnode_cluster_store), written before a put, put_new
%% or del is acknowledged. The members move ids between them as they come
%% and go, with their payloads (tarearbol_cnode_cluster_server,
%% tarearbol_cnode_cluster_sync).
%%
%% Any BEAM node connected to the members and running this application
%% can call the API; it need not be a member. Results are those of
%% tarearbol_cnode, and also `{error, no_members}' (no member runs for
%% Name), `{error, {mnesia, Reason}}' (the write could not be made) and
%% `{error, minority}' (a write to a member cut off from a quorum).
%%
%% `handoff_ms' defaults to 5000: a failover or a C node crash brings a
%% worker back with a payload at most that old, and each member reads all
%% its workers and writes the changed payloads, replicated, once per
%% period. With workers that change every second (1 Hz counters), 5 s
%% costs a fifth of the Mnesia traffic of 1 s, and a failover loses at
%% most five performs.
-module(tarearbol_cnode_cluster).

-export([start_member/1, stop_member/1, child_spec/1, members/1, info/1,
         put/3, put_many/2, put_new/3, del/2, get/2, restart/1, state/1,
         synch_call/3, asynch_call/3, stats/1]).

-export_type([opts/0]).

-type opts() :: #{name := atom(),
                  node := tarearbol_cnode_launcher:opts(),
                  handoff_ms => pos_integer(),
                  settle_ms => pos_integer(),
                  quorum => pos_integer()}.
%% A member's options: `name', the cluster manager (the registered name of
%% the manager on every C node, given in `node''s `managers' as
%% `"Name=..."'); `node', the launcher options of the local C node;
%% `handoff_ms' (5000), the handoff period; `settle_ms' (10000), how long
%% the membership must be unchanged before a member also puts back ids it
%% owns but its C node lacks (a move cut short by a crash); `quorum' (1),
%% the members a member must see, itself included, to take writes (see
%% tarearbol_cnode_cluster_server on net splits). `node''s manager spec,
%% `handoff_ms' and `quorum' must be the same on every member: a member
%% that differs is refused with `{config_mismatch, #{member, ours, theirs}}'.

-define(TIMEOUT, 15000).
-define(RETRIES, 3).
-define(BULK, 1000).
-define(BULK_TIMEOUT, 120000).

%% @doc Starts the member of `name' on this node, under the application's
%% cluster supervisor; returns once it has joined. A member already
%% running is `{error, {already_started, Pid}}'.
-spec start_member(opts()) -> {ok, pid()} | {error, term()}.
start_member(Opts) ->
    case supervisor:start_child(tarearbol_cnode_cluster_sup, child_spec(Opts)) of
        {ok, Pid} -> {ok, Pid};
        {error, {{already_started, Pid}, _}} -> {error, {already_started, Pid}};
        {error, {Reason, _ChildSpec}} -> {error, Reason};
        {error, _} = E -> E
    end.

%% @doc Stops this node's member of Name (its C node stays).
-spec stop_member(atom()) -> ok | {error, not_found}.
stop_member(Name) ->
    case supervisor:terminate_child(tarearbol_cnode_cluster_sup, {cluster, Name}) of
        ok -> supervisor:delete_child(tarearbol_cnode_cluster_sup, {cluster, Name});
        {error, _} = E -> E
    end.

%% @doc The child spec of a member, id `{cluster, Name}', for a supervisor
%% of the caller's (the pg scope must run: start this application).
-spec child_spec(opts()) -> supervisor:child_spec().
child_spec(#{name := Name} = Opts) ->
    #{id => {cluster, Name},
      start => {tarearbol_cnode_cluster_server, start_link, [Opts]},
      restart => permanent, shutdown => 10000, type => worker}.

%% @doc The BEAM nodes of Name's live members, sorted.
-spec members(atom()) -> [node()].
members(Name) ->
    lists:usort([node(P) || P <- pg:get_members(tarearbol_cnode_cluster_server:scope(), Name)]).

%% @doc Each member's view, C node and counters (moved, adopted, restored,
%% handed_off, max_window_us...), by member node.
-spec info(atom()) -> #{node() => map() | {error, term()}}.
info(Name) -> maps:from_list(multi(Name, info)).

%% @doc (Re)starts the worker Id on its owner, once its record is written.
-spec put(atom(), term(), list() | map()) -> ok | {error, term()}.
put(Name, Id, Opts) -> route(Name, Id, {put, Id, Opts}).

%% @doc Puts many workers at once: each owner gets its share in batches
%% of ?BULK, each batch written to Mnesia in one sync transaction and then
%% put on the owner's C node, the owners in parallel. One reply per pair,
%% in order, as put/3 gives; an element that is not `{Id, Opts}' with Opts
%% a list or a map is `{error, badarg}'. For loading many ids: puts one by
%% one cost a transaction each.
-spec put_many(atom(), [{term(), list() | map()}]) -> [ok | {error, term()}].
put_many(Name, Pairs) when is_list(Pairs) ->
    Indexed = lists:zip(lists:seq(1, length(Pairs)), Pairs),
    {Good, Bad} = lists:partition(fun({_, {_, O}}) -> is_list(O) orelse is_map(O);
                                     (_) -> false
                                  end, Indexed),
    Done = case members(Name) of
               [] -> [{I, {error, no_members}} || {I, _} <- Good];
               Nodes ->
                   Groups = maps:groups_from_list(
                              fun({_, {Id, _}}) -> tarearbol_cnode_cluster_place:owner(Id, Nodes) end,
                              Good),
                   Asked = [{B, gen_server:send_request(member(Name, Owner),
                                                        {route, {put_many, [P || {_, P} <- B]}, 0})}
                            || {Owner, L} <- maps:to_list(Groups), B <- tarearbol_cnode_cluster_sync:chunks(L, ?BULK)],
                   lists:append([settle(Name, B, Ref) || {B, Ref} <- Asked])
           end,
    [R || {_, R} <- lists:sort(Done ++ [{I, {error, badarg}} || {I, _} <- Bad])].

%% One batch's replies; ids its member did not own (views differ for a
%% moment) or could not answer for go one by one.
settle(Name, Batch, Ref) ->
    Rs = case gen_server:receive_response(Ref, ?BULK_TIMEOUT) of
             {reply, L} when is_list(L), length(L) =:= length(Batch) -> L;
             {reply, Other} -> [Other || _ <- Batch];
             timeout -> [{error, timeout} || _ <- Batch];
             {error, {Reason, _}} -> [{error, Reason} || _ <- Batch]
         end,
    [{I, case R of
             {error, E} when E =:= not_owner; E =:= noproc; E =:= nodedown; E =:= noconnection ->
                 put(Name, Id, Opts);
             _ -> R
         end} || {{I, {Id, Opts}}, R} <- lists:zip(Batch, Rs)].

%% @doc Starts the worker Id unless it is recorded.
-spec put_new(atom(), term(), list() | map()) -> ok | {error, term()}.
put_new(Name, Id, Opts) -> route(Name, Id, {put_new, Id, Opts}).

%% @doc Removes the worker Id and its record.
-spec del(atom(), term()) -> ok | {error, term()}.
del(Name, Id) -> route(Name, Id, {del, Id}).

%% @doc The worker's Child map from its owner's C node, or `#{}'.
-spec get(atom(), term()) -> map() | {error, term()}.
get(Name, Id) -> route(Name, Id, {get, Id}).

%% @doc Calls the worker Id on its owner (nil: a worker of any member).
-spec synch_call(atom(), term(), term()) -> {ok, term()} | error | {error, term()}.
synch_call(Name, Id, Msg) -> route(Name, Id, {synch_call, Id, Msg}).

%% @doc Casts to the worker Id on its owner (nil: a worker of any member).
-spec asynch_call(atom(), term(), term()) -> ok | error | {error, term()}.
asynch_call(Name, Id, Msg) -> route(Name, Id, {asynch_call, Id, Msg}).

%% @doc Empties the records and restarts the manager on every member.
-spec restart(atom()) -> ok | {error, term()}.
restart(Name) ->
    case members(Name) of
        [] -> {error, no_members};
        [N | _] ->
            case call(member(Name, N), {local, clear}) of
                ok ->
                    case [R || {_, R} <- multi(Name, {local, restart}), R =/= ok] of
                        [] -> ok;
                        [E | _] -> E
                    end;
                E -> E
            end
    end.

%% @doc The members' states merged: children of all, `state' started only
%% when every member's is, `members' the member nodes.
-spec state(atom()) -> map() | {error, term()}.
state(Name) ->
    case multi(Name, {local, state}) of
        [] -> {error, no_members};
        Rs ->
            States = [S || {_, #{children := _} = S} <- Rs],
            case length(States) =:= length(Rs) of
                false -> {error, {members, [R || {_, R} = R <- Rs, not is_map(element(2, R))]}};
                true ->
                    Children = lists:foldl(fun(#{children := C}, A) -> maps:merge(A, C) end, #{}, States),
                    Up = lists:all(fun(#{state := St}) -> St =:= started end, States),
                    (hd(States))#{children => Children, manager => Name,
                                  state => case Up of true -> started; false -> hd([St || #{state := St} <- States, St =/= started]) end,
                                  members => [N || {N, _} <- Rs]}
            end
    end.

%% @doc The members' stats with every numeric counter summed, and
%% `members', their number.
-spec stats(atom()) -> map() | {error, term()}.
stats(Name) ->
    case multi(Name, {local, stats}) of
        [] -> {error, no_members};
        Rs ->
            Sum = lists:foldl(fun({_, M}, A) when is_map(M) ->
                                      maps:fold(fun(K, V, B) when is_number(V) ->
                                                        maps:update_with(K, fun(X) -> X + V end, V, B);
                                                   (_, _, B) -> B
                                                end, A, M);
                                 (_, A) -> A
                              end, #{}, Rs),
            Sum#{members => length(Rs)}
    end.

%% ---------------------------------------------------------------------------

member(Name, Node) -> {tarearbol_cnode_cluster_server:registered_name(Name), Node}.

%% Asks the owner in this node's view; a member whose view differs for a
%% moment redirects to the owner in its own. A member that went away
%% (noproc, nodedown) is retried with the view refreshed.
route(Name, Id, Req) -> route(Name, Id, Req, ?RETRIES).

route(Name, Id, Req, Retries) ->
    case members(Name) of
        [] -> {error, no_members};
        Nodes ->
            Owner = case Id of
                        nil -> lists:nth(rand:uniform(length(Nodes)), Nodes);
                        _ -> tarearbol_cnode_cluster_place:owner(Id, Nodes)
                    end,
            case hop(member(Name, Owner), Req, 0) of
                {error, Gone} when (Gone =:= noproc orelse Gone =:= nodedown), Retries > 0 ->
                    timer:sleep(50),
                    route(Name, Id, Req, Retries - 1);
                R -> R
            end
    end.

hop(To, Req, Hops) ->
    case call(To, {route, Req, Hops}) of
        {'$redirect', Pid} -> hop(Pid, Req, Hops + 1);
        R -> R
    end.

%% The same request to every member at once; {Node, Reply} in node order.
multi(Name, Req) ->
    Nodes = members(Name),
    Ids = [{N, gen_server:send_request(member(Name, N), Req)} || N <- Nodes],
    [{N, case gen_server:receive_response(I, ?TIMEOUT) of
             {reply, R} -> R;
             timeout -> {error, timeout};
             {error, {Reason, _}} -> {error, Reason}
         end} || {N, I} <- Ids].

call(To, Req) ->
    try gen_server:call(To, Req, ?TIMEOUT)
    catch
        exit:{{nodedown, _}, _} -> {error, nodedown};
        exit:{timeout, _} -> {error, timeout};
        exit:{noproc, _} -> {error, noproc};
        exit:{noconnection, _} -> {error, nodedown};
        exit:{Reason, {gen_server, call, _}} -> {error, Reason}
    end.
