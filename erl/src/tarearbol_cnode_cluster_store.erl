%% @doc The records of a cluster manager, in Mnesia: one table per
%% manager, `id -> {opts, last handed-off payload}', replicated on every
%% member.
%%
%% The table is `tarearbol_cnode_cluster_<Name>', of records
%% `{tarearbol_cnode_cluster, Id, Opts, Handoff}' where Opts are the opts
%% of the last put and Handoff is `none' (the worker starts from its opts)
%% or `{payload, P}', the payload last read from the worker's C node.
%% A member holds `ram_copies', or `disc_copies' when Mnesia has a
%% directory configured on it (`-mnesia dir Dir', the application env
%% `mnesia dir'); disc copies also turn the member's schema into a disc one.
%% Every write of a record is a `sync_transaction': it is on every live
%% replica before the caller hears `ok', so a member that goes down right
%% after an acknowledged put cannot take it with it.
%%
%% The payloads handed off every `handoff_ms' go to a second table,
%% `tarearbol_cnode_cluster_<Name>_handoff', in chunks: each member writes
%% the payloads of the workers its C node runs as ?CHUNKS records keyed
%% `{Member, N}', N the chunk an id hashes to, each with the time it was
%% written and a binary of `[{Id, Payload}]'. A handoff of 300k workers
%% so writes some thousand records, not 300k, and only the chunks that
%% changed; a restore takes, for each id, the payload of the newest chunk
%% that holds it (the clocks of the members are taken to agree within a
%% handoff period).
%%
%% Each function returns `{error, {mnesia, Reason}}' when Mnesia is not
%% running or the transaction aborts.
-module(tarearbol_cnode_cluster_store).

-export([table/1, handoff_table/1, copy_type/0, join/2, put/3, put_many/2, put_new/3, undo/3,
         delete/2, chunk/1, write_chunks/3, drop_chunks/2, payloads/1, handed_off/2,
         gc_chunks/3, read/2, keys/1, clear/1]).

-export_type([handoff/0, record/0]).

-type handoff() :: none | {put_at, integer()} | {payload, term()}.
%% In a record: when it was put (system time, ms): a handed-off payload
%% older than that is not the worker's any more. In a record read for a
%% restore or a move: the payload to start the worker from, or none (its
%% opts' own).
-type record() :: {tarearbol_cnode_cluster, term(), list() | map(), handoff()}.
%% One id's record.

-define(REC, tarearbol_cnode_cluster).
-define(HREC, tarearbol_cnode_cluster_handoff).
-define(WAIT, 30000).
-define(CHUNKS, 1024).
-define(CHUNK_BATCH, 64).

%% @doc The Mnesia table of the cluster manager Name.
-spec table(atom()) -> atom().
table(Name) -> list_to_atom("tarearbol_cnode_cluster_" ++ atom_to_list(Name)).

%% @doc The Mnesia table of the handed-off payloads of the records of Tab.
-spec handoff_table(atom()) -> atom().
handoff_table(Tab) -> list_to_atom(atom_to_list(Tab) ++ "_handoff").

%% @doc `disc_copies' when Mnesia has a directory configured here, else
%% `ram_copies'.
-spec copy_type() -> ram_copies | disc_copies.
copy_type() ->
    %% -mnesia dir reaches the env only once the application is loaded.
    _ = application:load(mnesia),
    case application:get_env(mnesia, dir) of
        {ok, _} -> disc_copies;
        undefined -> ram_copies
    end.

%% @doc Makes this node hold a copy of Tab: with no other member (Others
%% empty) it creates the table, else it joins the Mnesia cluster of Others
%% (`extra_db_nodes') and adds a copy. Starts Mnesia when it does not run.
-spec join(atom(), [node()]) -> ok | {error, {mnesia, term()}}.
join(Tab, Others) ->
    Type = copy_type(),
    try
        ok = started(),
        ok = connect(Others),
        ok = schema(Type),
        HTab = handoff_table(Tab),
        ok = case Others of
                 [] -> create(Tab, Type, ?REC, [id, opts, handoff]);
                 _ -> copy(Tab, Type)
             end,
        ok = case Others of
                 [] -> create(HTab, Type, ?HREC, [key, time, blob]);
                 _ -> copy(HTab, Type)
             end,
        ok = mnesia:wait_for_tables([Tab, HTab], ?WAIT)
    catch
        error:{badmatch, {error, {mnesia, _}} = E} -> E;
        error:{badmatch, Other} -> {error, {mnesia, Other}};
        exit:Reason -> {error, {mnesia, Reason}}
    end.

started() ->
    case application:ensure_all_started(mnesia) of
        {ok, _} -> ok;
        {error, R} -> {error, {mnesia, R}}
    end.

connect([]) -> ok;
connect(Others) ->
    case mnesia:change_config(extra_db_nodes, Others) of
        {ok, [_ | _]} -> ok;
        {ok, []} ->
            %% Already in their cluster (a rejoin), or none answered.
            case [N || N <- Others, lists:member(N, mnesia:system_info(running_db_nodes))] of
                [_ | _] -> ok;
                [] -> {error, {mnesia, {cannot_reach, Others}}}
            end;
        {error, R} -> {error, {mnesia, R}}
    end.

schema(ram_copies) -> ok;
schema(disc_copies) ->
    case mnesia:change_table_copy_type(schema, node(), disc_copies) of
        {atomic, ok} -> ok;
        {aborted, {already_exists, schema, _, disc_copies}} -> ok;
        {aborted, R} -> {error, {mnesia, R}}
    end.

create(Tab, Type, Rec, Attributes) ->
    case mnesia:create_table(Tab, [{Type, [node()]}, {record_name, Rec},
                                   {attributes, Attributes}]) of
        {atomic, ok} -> ok;
        {aborted, {already_exists, Tab}} -> copy(Tab, Type);
        {aborted, R} -> {error, {mnesia, R}}
    end.

copy(Tab, Type) ->
    case mnesia:add_table_copy(Tab, node(), Type) of
        {atomic, ok} -> ok;
        {aborted, {already_exists, Tab, _}} -> ok;
        {aborted, R} -> {error, {mnesia, R}}
    end.

%% @doc Writes Id's opts (and no handoff): `{ok, Old}', Old the records it
%% replaced (`[]' or one), for undo/3.
-spec put(atom(), term(), list() | map()) -> {ok, [record()]} | {error, {mnesia, term()}}.
put(Tab, Id, Opts) ->
    txn(fun() ->
                Old = mnesia:read(Tab, Id, write),
                ok = mnesia:write(Tab, {?REC, Id, Opts, {put_at, now_ms()}}, write),
                Old
        end).

%% @doc put/3 of many `{Id, Opts}' in one transaction: `{ok, Olds}', the
%% records each replaced, in order.
-spec put_many(atom(), [{term(), list() | map()}]) -> {ok, [[record()]]} | {error, {mnesia, term()}}.
put_many(Tab, Pairs) ->
    txn(fun() ->
                [begin
                     Old = mnesia:read(Tab, Id, write),
                     ok = mnesia:write(Tab, {?REC, Id, Opts, {put_at, now_ms()}}, write),
                     Old
                 end || {Id, Opts} <- Pairs]
        end).

%% @doc As put/3 unless Id has a record: `{ok, []}' when it wrote,
%% `{ok, [Existing]}' when it left it.
-spec put_new(atom(), term(), list() | map()) -> {ok, [record()]} | {error, {mnesia, term()}}.
put_new(Tab, Id, Opts) ->
    txn(fun() ->
                case mnesia:read(Tab, Id, write) of
                    [] -> ok = mnesia:write(Tab, {?REC, Id, Opts, {put_at, now_ms()}}, write), [];
                    Old -> Old
                end
        end).

%% @doc Puts back what put/3 replaced (Old), after the C node refused it.
-spec undo(atom(), term(), [record()]) -> ok | {error, {mnesia, term()}}.
undo(Tab, Id, Old) ->
    case txn(fun() ->
                     case Old of
                         [] -> mnesia:delete(Tab, Id, write);
                         [R] -> mnesia:write(Tab, R, write)
                     end
             end) of
        {ok, ok} -> ok;
        E -> E
    end.

%% @doc Deletes Id's record: `{ok, true}' if there was one.
-spec delete(atom(), term()) -> {ok, boolean()} | {error, {mnesia, term()}}.
delete(Tab, Id) ->
    txn(fun() ->
                Old = mnesia:read(Tab, Id, write),
                ok = mnesia:delete(Tab, Id, write),
                Old =/= []
        end).

%% @doc The chunk Id's payload goes to.
-spec chunk(term()) -> non_neg_integer().
chunk(Id) -> erlang:phash2(Id, ?CHUNKS).

%% @doc Writes this member's chunks `{N, Blob}' (Blob a term_to_binary of
%% `[{Id, Payload}]'), stamped Time, in dirty writes on every replica,
%% ?CHUNK_BATCH chunks at a time: a handoff is the last payload known, not
%% an acknowledged change.
-spec write_chunks(atom(), [{non_neg_integer(), binary()}], integer()) -> ok | {error, {mnesia, term()}}.
write_chunks(HTab, Chunks, Time) ->
    dirty_batches(fun({N, Blob}) -> mnesia:write(HTab, {?HREC, {node(), N}, Time, Blob}, write) end,
                  Chunks).

%% @doc Deletes this member's chunks Ns (they hold no worker any more).
-spec drop_chunks(atom(), [non_neg_integer()]) -> ok | {error, {mnesia, term()}}.
drop_chunks(HTab, Ns) ->
    dirty_batches(fun(N) -> mnesia:delete(HTab, {node(), N}, write) end, Ns).

dirty_batches(_F, []) -> ok;
dirty_batches(F, L) ->
    {B, Rest} = lists:split(min(?CHUNK_BATCH, length(L)), L),
    try mnesia:sync_dirty(fun() -> lists:foreach(F, B) end) of
        _ -> dirty_batches(F, Rest)
    catch exit:{aborted, R} -> {error, {mnesia, R}};
          exit:R -> {error, {mnesia, R}}
    end.

%% @doc The last handed-off payload of every id the chunks hold, with the
%% time of the newest chunk holding it.
-spec payloads(atom()) -> #{term() => {integer(), term()}} | {error, {mnesia, term()}}.
payloads(HTab) ->
    try mnesia:dirty_match_object(HTab, {?HREC, '_', '_', '_'}) of
        Recs ->
            Newest = lists:foldl(
                       fun({?HREC, _, T, Blob}, Acc) ->
                               lists:foldl(fun({Id, P}, A) ->
                                                   case A of
                                                       #{Id := {T0, _}} when T0 >= T -> A;
                                                       _ -> A#{Id => {T, P}}
                                                   end
                                           end, Acc, binary_to_term(Blob))
                       end, #{}, Recs),
            Newest
    catch exit:{aborted, R} -> {error, {mnesia, R}}
    end.

%% @doc Id's last handed-off payload, from the chunks of every member that
%% hold its chunk: `{ok, P}' or `none'.
-spec handed_off(atom(), term()) -> {ok, term()} | none.
handed_off(HTab, Id) ->
    N = chunk(Id),
    Found = lists:sort([{T, P} || {?HREC, _, T, Blob} <- mnesia:dirty_match_object(HTab, {?HREC, {'_', N}, '_', '_'}),
                                  {I, P} <- binary_to_term(Blob), I =:= Id]),
    case Found of
        [] -> none;
        _ -> {ok, element(2, lists:last(Found))}
    end.

%% @doc Deletes the chunks of the nodes that are not Members and that were
%% written before Before: their ids run elsewhere now, and were handed
%% off there since.
-spec gc_chunks(atom(), [node()], integer()) -> ok | {error, {mnesia, term()}}.
gc_chunks(HTab, Members, Before) ->
    try mnesia:dirty_select(HTab, [{{?HREC, {'$1', '$2'}, '$3', '_'}, [{'<', '$3', Before}],
                                    [{{'$1', '$2'}}]}]) of
        Keys ->
            Stale = [K || {Node, _} = K <- Keys, not lists:member(Node, Members)],
            dirty_batches(fun(K) -> mnesia:delete(HTab, K, write) end, Stale)
    catch exit:{aborted, R} -> {error, {mnesia, R}}
    end.

%% @doc Id's record from the local copy (`[]' when none), no transaction.
-spec read(atom(), term()) -> [record()] | {error, {mnesia, term()}}.
read(Tab, Id) ->
    try mnesia:dirty_read(Tab, Id)
    catch exit:{aborted, R} -> {error, {mnesia, R}}
    end.

%% @doc Every id of Tab, from the local copy.
-spec keys(atom()) -> [term()] | {error, {mnesia, term()}}.
keys(Tab) ->
    try mnesia:dirty_all_keys(Tab)
    catch exit:{aborted, R} -> {error, {mnesia, R}}
    end.

%% @doc Removes every record of Tab, and every handed-off payload.
-spec clear(atom()) -> ok | {error, {mnesia, term()}}.
clear(Tab) ->
    try {mnesia:clear_table(Tab), mnesia:clear_table(handoff_table(Tab))} of
        {{atomic, ok}, {atomic, ok}} -> ok;
        {{aborted, R}, _} -> {error, {mnesia, R}};
        {_, {aborted, R}} -> {error, {mnesia, R}}
    catch exit:R -> {error, {mnesia, R}}
    end.

now_ms() -> erlang:system_time(millisecond).

txn(F) ->
    try mnesia:sync_transaction(F) of
        {atomic, V} -> {ok, V};
        {aborted, R} -> {error, {mnesia, R}}
    catch exit:R -> {error, {mnesia, R}}
    end.
