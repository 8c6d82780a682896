%% @doc The background work of one cluster member: handoff, moves and
%% restores between its C node, Mnesia and the other members.
%%
%% A member (tarearbol_cnode_cluster_server) runs one such process, linked,
%% and hands it tasks; it does them one at a time, so the member itself
%% keeps answering requests while a move or a restore runs, and reports
%% each task's counts back as `{sync_done, Pid, Task, Report}'.
%%
%% <ul>
%% <li>`tick': reads every worker of the C node (`{dump, Cursor, Limit}'),
%%   writes the chunks of payloads that changed since the last handoff to
%%   Mnesia (tarearbol_cnode_cluster_store:write_chunks/3), and moves out
%%   what the member runs but no longer owns; once the membership has been
%%   settled for a while, and then every ?SWEEP_MS, also puts back what it
%%   owns but its C node lacks (an anti-entropy sweep that catches a move
%%   cut short), and drops the chunks of members long gone.</li>
%% <li>`rebalance': after a join, the moves of a tick at once.</li>
%% <li>`{failover, Left}': after members left, put_new the ids they owned
%%   and this member owns now, from Mnesia (opts and last payload).</li>
%% <li>`restore': after the C node restarted, put_new every id this member
%%   owns that the node lacks.</li>
%% </ul>
%%
%% A move, per batch of at most 500 ids bound for one member: the new
%% owner put_news them with the payloads just read (the tick's chunks hold
%% them too), then they are deleted here. An id runs on both C nodes only between the new
%% owner's put and this delete, one batch at most; the report carries the
%% longest such window seen (`window_us').
-module(tarearbol_cnode_cluster_sync).

-include_lib("kernel/include/logger.hrl").

-export([start_link/1, hand_off_all/1, put_from/3, calls/2, chunks/2]).

-export_type([ctx/0]).

-type ctx() :: #{name := atom(), tab := atom(), cnode := node(), server := pid()}.
%% What the process works on: the manager, its table, the local C node
%% and the member that runs it.

-define(PAGE, 5000).
-define(DUMP_RETRIES, 5).
-define(MOVE_BATCH, 500).
-define(WINDOW, 256).
-define(SWEEP_MS, 60000).
%% Chunks of a node that is no member any more go once this old: its ids
%% have run elsewhere, and been handed off there, for many periods.
-define(GC_AFTER_MS, 120000).
-define(CALL_TIMEOUT, 15000).
-define(ADOPT_TIMEOUT, 60000).

%% @doc Starts the process, linked to the caller (the member).
-spec start_link(ctx()) -> pid().
start_link(Ctx) ->
    proc_lib:spawn_link(fun() -> loop(Ctx) end).

loop(#{server := Server} = Ctx) ->
    receive
        {task, Task, View, Opts} ->
            {Report, Ctx1} = try run(Task, View, Opts, Ctx)
                             catch C:E:St ->
                                     ?LOG_WARNING("cluster ~p: ~p failed: ~p:~p ~p",
                                                  [maps:get(name, Ctx), Task, C, E, St]),
                                     {#{error => E}, Ctx}
                             end,
            Server ! {sync_done, self(), Task, Report},
            loop(Ctx1)
    end.

run(tick, _View, #{minority := true}, Ctx) ->
    {#{}, Ctx};
run(tick, View, #{settled := Settled} = Opts, Ctx) ->
    case dump_all(Ctx) of
        {ok, Local} ->
            {H, Ctx1} = handoff(Ctx, Local, false),
            M = move_out(Ctx, Local, View),
            Now = erlang:monotonic_time(millisecond),
            Swept = maps:get(swept, Ctx1, undefined),
            case Settled andalso (Swept =:= undefined orelse Swept < maps:get(changed, Opts, Now)
                                  orelse Now - Swept >= ?SWEEP_MS) of
                true ->
                    Have = maps:from_list([{Id, []} || {Id, _, _, _} <- Local]),
                    R = restore(Ctx, fun(Id) -> not is_map_key(Id, Have) andalso mine(Id, View) end),
                    _ = tarearbol_cnode_cluster_store:gc_chunks(
                          htab(Ctx), maps:keys(View), erlang:system_time(millisecond) - ?GC_AFTER_MS),
                    {maps:merge(maps:merge(H, M), R), Ctx1#{swept => Now}};
                false ->
                    {maps:merge(H, M), Ctx1}
            end;
        {error, Reason} ->
            {#{error => Reason}, Ctx}
    end;
run(rebalance, View, _Opts, Ctx) ->
    case dump_all(Ctx) of
        {ok, Local} -> {move_out(Ctx, Local, View), Ctx};
        {error, Reason} -> {#{error => Reason}, Ctx}
    end;
run({failover, Left}, View, _Opts, Ctx) ->
    Before = lists:usort(maps:keys(View) ++ Left),
    {restore(Ctx, fun(Id) ->
                          mine(Id, View) andalso
                              lists:member(tarearbol_cnode_cluster_place:owner(Id, Before), Left)
                  end), Ctx};
run(restore, View, _Opts, Ctx) ->
    {restore(Ctx, fun(Id) -> mine(Id, View) end), Ctx}.

htab(#{tab := Tab}) -> tarearbol_cnode_cluster_store:handoff_table(Tab).

%% @doc For a member that leaves on purpose: writes the current payload of
%% every recorded worker of its C node to Mnesia and returns their ids,
%% which the member deletes once it has left the group.
-spec hand_off_all(ctx()) -> {ok, [term()]} | {error, term()}.
hand_off_all(#{tab := Tab} = Ctx) ->
    case dump_all(Ctx) of
        {ok, Local} ->
            case handoff(Ctx, Local, true) of
                {#{error := E}, _} -> {error, E};
                _ -> {ok, [Id || {Id, _, _, _} <- Local,
                                 tarearbol_cnode_cluster_store:read(Tab, Id) =/= []]}
            end;
        {error, _} = E -> E
    end.

mine(Id, View) -> tarearbol_cnode_cluster_place:owner(Id, maps:keys(View)) =:= node().

%% Every worker of the C node, page by page; a resize of its table during
%% the walk starts it again.
dump_all(#{name := Name, cnode := CNode}) -> dump({Name, CNode}, 0, [], ?DUMP_RETRIES).

dump(M, Cursor, Acc, Retries) ->
    case call(M, {dump, Cursor, ?PAGE}) of
        {ok, Page, done} -> {ok, lists:append(lists:reverse([Page | Acc]))};
        {ok, Page, Next} -> dump(M, Next, [Page | Acc], Retries);
        {error, moved} when Retries > 0 -> dump(M, 0, [], Retries - 1);
        {error, _} = E -> E;
        Other -> {error, Other}
    end.

%% The chunks whose payloads changed since the last handoff (all of them
%% when Force) go to Mnesia, and the chunks that hold no worker any more
%% go from it. Ctx keeps a digest of each chunk written.
handoff(Ctx, Local, Force) ->
    Sent = maps:get(sent, Ctx, #{}),
    Groups = maps:groups_from_list(fun({Id, _}) -> tarearbol_cnode_cluster_store:chunk(Id) end,
                                   [{Id, P} || {Id, _, P, _} <- Local]),
    Blobs = maps:map(fun(_, L) -> term_to_binary(L) end, Groups),
    Digests = maps:map(fun(_, B) -> erlang:md5(B) end, Blobs),
    Changed = [{N, B} || {N, B} <- maps:to_list(Blobs),
                         Force orelse maps:get(N, Sent, none) =/= maps:get(N, Digests)],
    Gone = [N || N <- maps:keys(Sent), not is_map_key(N, Blobs)],
    HTab = htab(Ctx),
    case tarearbol_cnode_cluster_store:write_chunks(HTab, Changed, erlang:system_time(millisecond)) of
        ok ->
            _ = tarearbol_cnode_cluster_store:drop_chunks(HTab, Gone),
            {#{handed_off => length(Changed)}, Ctx#{sent => Digests}};
        {error, Reason} ->
            {#{error => Reason}, Ctx}
    end.

%% Ids this C node runs, that have a record and belong to another member,
%% go to it. Ids with no record (the node's own children_specs) stay.
move_out(#{tab := Tab} = Ctx, Local, View) ->
    Members = maps:keys(View),
    Out = [{Id, P} || {Id, _, P, _} <- Local,
                      tarearbol_cnode_cluster_place:owner(Id, Members) =/= node(),
                      tarearbol_cnode_cluster_store:read(Tab, Id) =/= []],
    ByOwner = maps:groups_from_list(
                fun({Id, _}) -> tarearbol_cnode_cluster_place:owner(Id, Members) end, Out),
    maps:fold(fun(Owner, Ids, Acc) ->
                      lists:foldl(fun(B, A) -> move(Ctx, maps:get(Owner, View), B, A) end,
                                  Acc, chunks(Ids, ?MOVE_BATCH))
              end, #{moved => 0, window_us => 0}, ByOwner).

move(#{tab := Tab, name := Name, cnode := CNode}, To, Batch, Acc) ->
    %% An id whose record went meanwhile (a del) is not moved.
    Recs = [{R, Id, Opts, {payload, P}} || {Id, P} <- Batch,
                                          {R, _, Opts, _} <- tarearbol_cnode_cluster_store:read(Tab, Id)],
    T0 = erlang:monotonic_time(microsecond),
    case adopt(To, Recs) of
        ok ->
            %% Ids whose record went meanwhile (a del at the new owner) go too.
            _ = calls({Name, CNode}, [{del, Id} || {Id, _} <- Batch]),
            W = erlang:monotonic_time(microsecond) - T0,
            Acc#{moved := maps:get(moved, Acc) + length(Recs),
                 window_us := max(W, maps:get(window_us, Acc))};
        {error, Reason} ->
            ?LOG_WARNING("cluster ~p: ~p ids not moved to ~p: ~p",
                         [Name, length(Recs), node(To), Reason]),
            Acc
    end.

adopt(To, Recs) ->
    try gen_server:call(To, {adopt, Recs}, ?ADOPT_TIMEOUT)
    catch exit:{Reason, _} -> {error, Reason}
    end.

%% put_new, from Mnesia, of every id of the table that Filter takes, with
%% its last handed-off payload.
restore(#{tab := Tab, name := Name, cnode := CNode} = Ctx, Filter) ->
    case tarearbol_cnode_cluster_store:keys(Tab) of
        {error, Reason} ->
            #{error => Reason};
        Keys ->
            case [K || K <- Keys, Filter(K)] of
                [] ->
                    #{restored => 0};
                Ids ->
                    Payloads = case tarearbol_cnode_cluster_store:payloads(htab(Ctx)) of
                                   #{} = Ps -> Ps;
                                   {error, _} -> #{}
                               end,
                    Recs = [{R, Id, Opts, start_from(maps:get(Id, Payloads, none), H)}
                            || Id <- Ids,
                               {R, _, Opts, H} <- tarearbol_cnode_cluster_store:read(Tab, Id)],
                    Rs = put_from({Name, CNode}, put_new, Recs),
                    #{restored => length([ok || ok <- Rs])}
            end
    end.

%% The payload a restored worker starts from: the last handed-off one
%% unless the id was put again since.
start_from({T, P}, {put_at, At}) when T > At -> {payload, P};
start_from({_, P}, {payload, _}) -> {payload, P};
start_from(none, {payload, _} = H) -> H;
start_from(_, _) -> none.

%% @doc Puts (or put_news) each record's worker on the C node's manager M,
%% with its last handed-off payload; the replies in order.
-spec put_from({atom(), node()}, put | put_new, [tarearbol_cnode_cluster_store:record()]) -> [term()].
put_from(M, How, Recs) ->
    calls(M, [{How, Id, with_payload(Opts, H)} || {_, Id, Opts, H} <- Recs]).

with_payload(Opts, none) -> Opts;
with_payload(Opts, {put_at, _}) -> Opts;
with_payload(Opts, {payload, P}) when is_map(Opts) -> Opts#{payload => P};
with_payload(Opts, {payload, P}) when is_list(Opts) -> [{payload, P} | proplists:delete(payload, Opts)].

%% @doc gen_server calls to M, up to 256 in flight at once; the replies
%% in order, `{error, Reason}' for one that failed.
-spec calls({atom(), node()}, [term()]) -> [term()].
calls(M, Reqs) -> lists:append([window(M, B) || B <- chunks(Reqs, ?WINDOW)]).

window(M, Reqs) ->
    Ids = [gen_server:send_request(M, R) || R <- Reqs],
    [case gen_server:receive_response(I, ?CALL_TIMEOUT) of
         {reply, R} -> R;
         timeout -> {error, timeout};
         {error, {Reason, _}} -> {error, Reason}
     end || I <- Ids].

call(M, Req) ->
    try gen_server:call(M, Req, ?CALL_TIMEOUT)
    catch exit:{Reason, _} -> {error, Reason}
    end.

%% @doc L cut into lists of N elements, the last one shorter.
-spec chunks(list(), pos_integer()) -> [list()].
chunks([], _N) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) -> {H, T} = lists:split(N, L), [H | chunks(T, N)].
