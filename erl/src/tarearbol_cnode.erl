%% @doc Client API of tarearbol_cnode: Tarearbol.DynamicManager's functions
%% for managers that live in a C node.
%%
%% A manager is `{Name, Node}': the name given with `--manager Name=...'
%% and the C node. Results are Tarearbol's; node-level failures are
%% `{error, nodedown | timeout | noproc | down}'. Unlike Tarearbol's casts,
%% put/3, put_new/3 and del/2 are calls, so a bad id or bad options come
%% back as `{error, ...}' instead of vanishing.
-module(tarearbol_cnode).

-export([start_node/1, stop_node/1,
         put/3, put_new/3, del/2, get/2, restart/1, state/1,
         synch_call/3, asynch_call/3, stats/1,
         info/1, node_stats/1,
         connect/2, ping/2, remote_call/4, remote_call/5,
         subscribe/2, subscribe/3, unsubscribe/1, unsubscribe/2,
         dump/3]).

-export_type([manager/0, event/0, events/0, subscribe_opts/0]).

-type manager() :: {atom(), node()}.
%% A manager: its registered name (`--manager Name=...') and its C node.
-type event() :: crash | restart | escalation | state | late.
%% What a subscriber can hear of; see subscribe/3.
-type events() :: all | [event() | {late, pos_integer()} | {late, pos_integer(), pos_integer()}].
%% The events of a subscription: all of them, or a list, `late' with its
%% threshold and interval in ms.
-type subscribe_opts() :: #{pid => pid(),
                            late_ms => pos_integer(),
                            late_interval_ms => pos_integer()}.
%% Who subscribes (default the caller) and the lateness threshold and
%% interval for a plain `late'.
-define(TIMEOUT, 5000).

%% @doc Starts a C node under this application's supervisor and returns
%% its node name once it answers. Opts: see tarearbol_cnode_launcher.
%% The launcher starts at once; this call waits on it until the node is
%% ready, and a node that fails its first launch is removed again.
-spec start_node(tarearbol_cnode_launcher:opts()) -> {ok, node()} | {error, term()}.
start_node(#{name := Name} = Opts) ->
    case supervisor:start_child(tarearbol_cnode_sup, tarearbol_cnode_sup:launcher_spec(Opts)) of
        {ok, Pid} ->
            case tarearbol_cnode_launcher:await_ready(Pid, infinity) of
                {ok, Node} ->
                    {ok, Node};
                {error, _} = Error ->
                    _ = stop_node(Name),
                    Error
            end;
        {error, {already_started, Pid}} ->
            tarearbol_cnode_launcher:await_ready(Pid, infinity);
        {error, {Reason, _ChildSpec}} -> {error, Reason};
        {error, Reason} -> {error, Reason}
    end;
start_node(Opts) ->
    {error, {bad_opts, Opts}}.

%% @doc Stops a C node started with start_node/1 (by its short name).
-spec stop_node(string()) -> ok | {error, not_found}.
stop_node(Name) ->
    case supervisor:terminate_child(tarearbol_cnode_sup, {launcher, Name}) of
        ok -> supervisor:delete_child(tarearbol_cnode_sup, {launcher, Name});
        {error, _} = E -> E
    end.

%% @doc (Re)starts the worker Id; an existing one is replaced.
-spec put(manager(), term(), list() | map()) -> ok | {error, term()}.
put(M, Id, Opts) -> call(M, {put, Id, Opts}).

%% @doc Starts the worker Id unless it exists.
-spec put_new(manager(), term(), list() | map()) -> ok | {error, term()}.
put_new(M, Id, Opts) -> call(M, {put_new, Id, Opts}).

%% @doc Stops and removes the worker Id.
-spec del(manager(), term()) -> ok | {error, term()}.
del(M, Id) -> call(M, {del, Id}).

%% @doc The worker's Child map, or `#{}' when there is none.
-spec get(manager(), term()) -> map() | {error, term()}.
get(M, Id) -> call(M, {get, Id}).

%% @doc A page of the children with their payloads: `{ok, [{Id, Opts,
%% Payload, Value}], Next}'. Cursor is 0 to start, then the Next of the
%% page before, until Next is `done'; Limit is 1 to 10000. `{error, moved}'
%% when the manager's table was resized during the walk: start again from
%% 0. For handoffs, backups and listing managers too big for state/1.
-spec dump(manager(), 0 | {non_neg_integer(), non_neg_integer()}, 1..10000) ->
          {ok, [{term(), term(), term(), term()}], done | {non_neg_integer(), non_neg_integer()}}
          | {error, term()}.
dump(M, Cursor, Limit) -> call(M, {dump, Cursor, Limit}).

%% @doc Back to a clean state from children_specs.
-spec restart(manager()) -> ok | {error, term()}.
restart(M) -> call(M, restart).

%% @doc The manager's State map: state, children, manager.
-spec state(manager()) -> map() | {error, term()}.
state(M) -> call(M, state).

%% @doc Calls the worker Id (or one picked when Id is nil).
-spec synch_call(manager(), term(), term()) -> {ok, term()} | error | {error, term()}.
synch_call(M, Id, Msg) -> call(M, {synch_call, Id, Msg}).

%% @doc Casts to the worker Id (or one picked when Id is nil).
-spec asynch_call(manager(), term(), term()) -> ok | error | {error, term()}.
asynch_call(M, Id, Msg) -> call(M, {asynch_call, Id, Msg}).

%% @doc The manager's counters and lateness percentiles.
-spec stats(manager()) -> map() | {error, term()}.
stats(M) -> call(M, stats).

%% @doc The node's identity and health (the `tarearbol_cnode' service).
-spec info(node()) -> map() | {error, term()}.
info(Node) -> call({tarearbol_cnode, Node}, info).

%% @doc The node's connection and packet counters.
-spec node_stats(node()) -> map() | {error, term()}.
node_stats(Node) -> call({tarearbol_cnode, Node}, stats).

%% @doc Node asks the C node to connect to Other (epmd lookup and
%% handshake as the initiator): true once connected, false if it could
%% not be, as net_kernel:connect_node/1.
-spec connect(node(), node()) -> boolean() | {error, term()}.
connect(Node, Other) -> call({tarearbol_cnode, Node}, {connect, Other}, 15000).

%% @doc The C node Node pings Other: pong or pang, as net_adm:ping/1.
-spec ping(node(), node()) -> pong | pang | {error, term()}.
ping(Node, Other) -> call({tarearbol_cnode, Node}, {ping, Other}, 15000).

%% @doc The C node Node makes a gen_server call to To (a registered name
%% or a pid) on Other, connecting first if need be: {ok, Reply}, or
%% {error, noconnection | timeout | Reason} where Reason is why the callee
%% is gone (noproc, killed, ...). Timeout is in ms (default 5000) or
%% infinity.
-spec remote_call(node(), node(), atom() | pid(), term()) -> {ok, term()} | {error, term()}.
remote_call(Node, Other, To, Request) -> remote_call(Node, Other, To, Request, ?TIMEOUT).

%% @doc As remote_call/4, with the callee's Timeout (ms or infinity); this
%% call waits 5000 ms longer, so the C node's own answer comes first.
-spec remote_call(node(), node(), atom() | pid(), term(), timeout()) ->
          {ok, term()} | {error, term()}.
remote_call(Node, Other, To, Request, Timeout) ->
    Outer = case Timeout of infinity -> infinity; _ -> Timeout + ?TIMEOUT end,
    call({tarearbol_cnode, Node}, {call, Other, To, Request, Timeout}, Outer).

%% @doc Subscribes the calling process to Manager's events; see subscribe/3.
-spec subscribe(manager(), events()) -> ok | {error, term()}.
subscribe(M, Events) -> subscribe(M, Events, #{}).

%% @doc Subscribes a process (`pid', default the caller) to Manager's
%% events. Each arrives as a plain message
%% `{tarearbol_cnode, {Name, Node}, Event, Map}':
%% <ul>
%% <li>`crash': a worker crashed, `#{id, pid, reason}';</li>
%% <li>`restart': a crashed worker was started again, `#{id, pid}' (the new pid);</li>
%% <li>`escalation': past the restart intensity, `#{workers, action =>
%%     restart_all | down, max_restarts, max_seconds}';</li>
%% <li>`state': the manager's state changed, `#{state => starting | started | down}';</li>
%% <li>`late': performs started later than `late_ms' (default 100), `#{id,
%%     late_us, count, threshold_ms, interval_ms}': the first at once, then at
%%     most one per `late_interval_ms' (default 1000) summing up the rest
%%     (`count' of them, the largest lateness `late_us', of worker `id');</li>
%% <li>`dropped': `#{count}' events were dropped before this one, past the
%%     subscriber's budget (a burst of 1000, then 1000 a second).</li>
%% </ul>
%% Events is `all' or a list of event names; `{late, Ms}' and `{late, Ms,
%% IntervalMs}' set the lateness threshold and interval in the list itself.
%% Subscribing again replaces the events. The subscriber is monitored by the
%% node: when it dies it is dropped. A manager takes 64 subscribers.
%% Errors: `{error, {bad_events, What}}', `{error, {bad_pid, What}}',
%% `{error, too_many_subscribers}' and the node-level ones.
-spec subscribe(manager(), events(), subscribe_opts()) -> ok | {error, term()}.
subscribe(M, Events, Opts) when is_map(Opts) ->
    call(M, {subscribe, maps:get(pid, Opts, self()), late_opts(Events, Opts)});
subscribe(_M, _Events, Opts) ->
    {error, {bad_opts, Opts}}.

%% late_ms and late_interval_ms go into the list as {late, Ms, IntervalMs}.
late_opts(Events, Opts) when is_map_key(late_ms, Opts); is_map_key(late_interval_ms, Opts) ->
    Late = {late, maps:get(late_ms, Opts, 100), maps:get(late_interval_ms, Opts, 1000)},
    case Events of
        all -> [crash, restart, escalation, state, Late];
        L when is_list(L) -> [case E of late -> Late; _ -> E end || E <- L];
        Other -> Other
    end;
late_opts(Events, _Opts) ->
    Events.

%% @doc Unsubscribes the calling process; `ok' also when it was not subscribed.
-spec unsubscribe(manager()) -> ok | {error, term()}.
unsubscribe(M) -> unsubscribe(M, self()).

%% @doc Unsubscribes Pid.
-spec unsubscribe(manager(), pid()) -> ok | {error, term()}.
unsubscribe(M, Pid) -> call(M, {unsubscribe, Pid}).

-spec call({atom(), node()}, term()) -> term().
call(To, Request) -> call(To, Request, ?TIMEOUT).

call({Name, Node} = To, Request, Timeout) when is_atom(Name), is_atom(Node) ->
    try
        gen_server:call(To, Request, Timeout)
    catch
        exit:{{nodedown, _}, _} -> {error, nodedown};
        exit:{timeout, _} -> {error, timeout};
        exit:{noproc, _} -> {error, noproc};
        exit:{noconnection, _} -> {error, nodedown};
        exit:{Reason, {gen_server, call, _}} -> {error, Reason}
    end;
call(To, _Request, _Timeout) ->
    {error, {bad_manager, To}}.
