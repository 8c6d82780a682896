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
%% Every write is a `sync_transaction': it is on every live replica before
%% the caller hears `ok', so a member that goes down right after an
%% acknowledged put cannot take it with it.
%%
%% Each function returns `{error, {mnesia, Reason}}' when Mnesia is not
%% running or the transaction aborts.
-module(tarearbol_cnode_cluster_store).

-export([table/1, copy_type/0, join/2, put/3, put_new/3, undo/3, delete/2,
         handoff/2, read/2, keys/1, clear/1]).

-export_type([handoff/0, record/0]).

-type handoff() :: none | {payload, term()}.
%% The payload to start a worker from: none (its opts' own) or the last
%% handed-off one.
-type record() :: {tarearbol_cnode_cluster, term(), list() | map(), handoff()}.
%% One id's record.

-define(REC, tarearbol_cnode_cluster).
-define(WAIT, 30000).

%% @doc The Mnesia table of the cluster manager Name.
-spec table(atom()) -> atom().
table(Name) -> list_to_atom("tarearbol_cnode_cluster_" ++ atom_to_list(Name)).

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
        ok = case Others of
                 [] -> create(Tab, Type);
                 _ -> copy(Tab, Type)
             end,
        ok = mnesia:wait_for_tables([Tab], ?WAIT)
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

create(Tab, Type) ->
    case mnesia:create_table(Tab, [{Type, [node()]}, {record_name, ?REC},
                                   {attributes, [id, opts, handoff]}]) of
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
                ok = mnesia:write(Tab, {?REC, Id, Opts, none}, write),
                Old
        end).

%% @doc As put/3 unless Id has a record: `{ok, []}' when it wrote,
%% `{ok, [Existing]}' when it left it.
-spec put_new(atom(), term(), list() | map()) -> {ok, [record()]} | {error, {mnesia, term()}}.
put_new(Tab, Id, Opts) ->
    txn(fun() ->
                case mnesia:read(Tab, Id, write) of
                    [] -> ok = mnesia:write(Tab, {?REC, Id, Opts, none}, write), [];
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

%% @doc Writes each `{Id, Payload}' as Id's handoff, in one transaction,
%% where Id has a record (an id deleted meanwhile stays deleted). Returns
%% the records as written.
-spec handoff(atom(), [{term(), term()}]) -> {ok, [record()]} | {error, {mnesia, term()}}.
handoff(Tab, Payloads) ->
    txn(fun() ->
                lists:append(
                  [case mnesia:read(Tab, Id, write) of
                       [{?REC, _, _, {payload, P}} = R] when P =:= Payload -> [R];
                       [{?REC, _, Opts, _}] ->
                           R = {?REC, Id, Opts, {payload, Payload}},
                           ok = mnesia:write(Tab, R, write),
                           [R];
                       [] -> []
                   end || {Id, Payload} <- Payloads])
        end).

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

%% @doc Removes every record of Tab.
-spec clear(atom()) -> ok | {error, {mnesia, term()}}.
clear(Tab) ->
    try mnesia:clear_table(Tab) of
        {atomic, ok} -> ok;
        {aborted, R} -> {error, {mnesia, R}}
    catch exit:R -> {error, {mnesia, R}}
    end.

txn(F) ->
    try mnesia:sync_transaction(F) of
        {atomic, V} -> {ok, V};
        {aborted, R} -> {error, {mnesia, R}}
    catch exit:R -> {error, {mnesia, R}}
    end.
