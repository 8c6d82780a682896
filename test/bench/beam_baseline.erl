%% @doc The BEAM side of `make bench`: what a BEAM team would write instead
%% of the C node, run on a peer node of its own so its memory and CPU are
%% measured apart. One gen_server per worker, ticking with
%% erlang:send_after and registered in an ETS table (W1, W3, W4); a
%% gen_server answering {get, Id} from a map (W2); the W3 manager keeping
%% its children in a Mnesia disc_copies table (W6).
-module(beam_baseline).
-behaviour(gen_server).

-export([start_workers/2, start_workers/3, performs/0, boot/2, stop_workers/0,
         start_echo/1, start_null/0, start_manager/0, put/2, del/1, count/0, boot/1,
         start_mnesia/1, start_durable/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% W1: N workers ticking every Timeout ms; performs counted in an atomic.
-spec start_workers(pos_integer(), pos_integer()) -> ok.
start_workers(N, Timeout) ->
    N = start_workers(N, Timeout, infinity),
    ok.

%% The same, giving up at DeadlineMs (monotonic ms): a node too busy
%% ticking the workers it has may never finish starting the rest. Returns
%% how many were started.
-spec start_workers(pos_integer(), pos_integer(), integer() | infinity) -> non_neg_integer().
start_workers(N, Timeout, DeadlineMs) ->
    persistent_term:put(bench_performs, counters:new(1, [write_concurrency])),
    ets:new(bench_registry, [named_table, public, {read_concurrency, true}]),
    Owner = spawn(fun() -> receive stop -> ok end end),
    persistent_term:put(bench_owner, Owner),
    spawn_until(1, N, Timeout, DeadlineMs).

spawn_until(I, N, _, _) when I > N -> N;
spawn_until(I, N, Timeout, DeadlineMs) ->
    case I rem 1000 =:= 0 andalso DeadlineMs =/= infinity andalso
         erlang:monotonic_time(millisecond) >= DeadlineMs of
        true -> I - 1;
        false ->
            {ok, P} = gen_server:start(?MODULE, {worker, I, Timeout, rand:uniform(Timeout)}, []),
            ets:insert(bench_registry, {I, P}),
            spawn_until(I + 1, N, Timeout, DeadlineMs)
    end.

-spec performs() -> non_neg_integer().
performs() -> counters:get(persistent_term:get(bench_performs), 1).

-spec stop_workers() -> ok.
stop_workers() ->
    [exit(P, kill) || {_, P} <- ets:tab2list(bench_registry)],
    ok.

%% W2: a gen_server answering {get, Id} from a map of N entries.
-spec start_echo(pos_integer()) -> ok.
start_echo(N) ->
    {ok, _} = gen_server:start({local, bench_echo}, ?MODULE, {echo, N}, []),
    ok.

%% W3: a process that answers every call with ok and does nothing else:
%% what callers reach against it is the ceiling of calls on this machine.
-spec start_null() -> ok.
start_null() ->
    register(bench_null, spawn(fun null_loop/0)),
    ok.

null_loop() ->
    receive
        {'$gen_call', From, _} -> gen_server:reply(From, ok), null_loop();
        _ -> null_loop()
    end.

%% W3/W4: a manager that starts a worker process per put, as
%% DynamicSupervisor plus a state map would.
-spec start_manager() -> ok.
start_manager() ->
    persistent_term:put(bench_performs, counters:new(1, [write_concurrency])),
    {ok, _} = gen_server:start({local, bench_manager}, ?MODULE, manager, []),
    ok.

-spec put(term(), term()) -> ok.
put(Id, Payload) -> gen_server:call(bench_manager, {put, Id, Payload}, infinity).

-spec del(term()) -> ok | {error, not_found}.
del(Id) -> gen_server:call(bench_manager, {del, Id}, infinity).

-spec count() -> non_neg_integer().
count() -> gen_server:call(bench_manager, count, infinity).

%% W4: N workers started by the manager itself, as children_specs would.
-spec boot(pos_integer()) -> ok.
boot(N) -> {ok, N} = boot(N, infinity), ok.

%% The same, giving up at DeadlineMs (monotonic ms); {ok, Started}.
-spec boot(pos_integer(), integer() | infinity) -> {ok, non_neg_integer()}.
boot(N, DeadlineMs) -> gen_server:call(bench_manager, {boot, N, DeadlineMs}, infinity).

%% W6: Mnesia on this node, its directory Dir (fresh), with one
%% disc_copies table of children: {bench_child, Id, Payload}. Mnesia's
%% defaults otherwise, as a team would start it.
-spec start_mnesia(file:filename()) -> ok.
start_mnesia(Dir) ->
    ok = application:set_env(mnesia, dir, Dir),
    ok = mnesia:create_schema([node()]),
    ok = mnesia:start(),
    {atomic, ok} = mnesia:create_table(bench_child, [{disc_copies, [node()]},
                                                     {attributes, [id, payload]}]),
    ok = mnesia:wait_for_tables([bench_child], 60000),
    ok.

%% W6: the W3 manager (a worker process per put) that also records each
%% put and del in bench_child, registered as Name. Sync says when a call
%% is answered:
%%   transaction  after mnesia:transaction returns: the commit record is
%%                on its way to Mnesia's transaction log (disk_log), which
%%                writes it out within 2 s or 64 KB and never fsyncs it.
%%   fsync        after mnesia:sync_transaction (the record is in the log
%%                process) and a disk_log:sync of that log (written and
%%                fsynced), one sync for all the calls that arrived
%%                together: the guarantee and the grouping of the C node
%%                with --state-dir.
-spec start_durable(atom(), transaction | fsync) -> ok.
start_durable(Name, Sync) ->
    persistent_term:put(bench_performs, counters:new(1, [write_concurrency])),
    {ok, _} = gen_server:start({local, Name}, ?MODULE, {durable, Sync}, []),
    ok.

init({worker, Id, Timeout, First}) ->
    erlang:send_after(First, self(), work),
    {ok, {Id, Timeout, 0}};
init({echo, N}) ->
    %% The same reply a C node manager gives to {get, Id}: a Child map.
    Child = fun(K) -> #{'__struct__' => 'Elixir.Tarearbol.DynamicManager.Child', pid => self(),
                        value => K, 'busy?' => nil, opts => [{payload, 0}]} end,
    {ok, maps:from_list([{list_to_binary("c" ++ integer_to_list(K)), Child(K)} || K <- lists:seq(1, N)])};
init(manager) ->
    {ok, #{}};
init({durable, Sync}) ->
    {ok, {durable, Sync, #{}, []}}.

handle_call(Req, From, {durable, Sync, Map, Waiting}) ->
    Map1 = durable(Req, Sync, Map),
    case {Req, Sync} of
        {count, _} -> {reply, map_size(Map1), {durable, Sync, Map1, Waiting}, synced(Waiting)};
        {_, transaction} -> {reply, ok, {durable, Sync, Map1, Waiting}};
        %% Answered once the mailbox is empty: every call that came
        %% meanwhile shares the one fsync.
        {_, fsync} -> {noreply, {durable, Sync, Map1, [From | Waiting]}, 0}
    end;
handle_call({get, Id}, _From, Map) when is_map(Map) ->
    {reply, maps:get(Id, Map, #{}), Map};
handle_call({put, Id, Payload}, _From, Map) ->
    Map1 = case maps:take(Id, Map) of
               {Old, M} -> exit(Old, kill), M;
               error -> Map
           end,
    {ok, P} = gen_server:start(?MODULE, {worker, Id, 1000, 1000}, []),
    _ = Payload,
    {reply, ok, Map1#{Id => P}};
handle_call({del, Id}, _From, Map) ->
    case maps:take(Id, Map) of
        {P, M} -> exit(P, kill), {reply, ok, M};
        error -> {reply, {error, not_found}, Map}
    end;
handle_call(count, _From, Map) ->
    {reply, map_size(Map), Map};
handle_call({boot, N, DeadlineMs}, _From, Map) ->
    {Started, M} = boot_until(1, N, DeadlineMs, Map),
    {reply, {ok, Started}, M}.

handle_cast(Req, {durable, Sync, Map, Waiting}) ->
    {noreply, {durable, Sync, durable(Req, Sync, Map), Waiting}, synced(Waiting)};
handle_cast({put, Id, Payload}, Map) ->
    {reply, ok, Map1} = handle_call({put, Id, Payload}, undefined, Map),
    {noreply, Map1};
handle_cast({del, Id}, Map) ->
    {reply, _, Map1} = handle_call({del, Id}, undefined, Map),
    {noreply, Map1};
handle_cast(_Msg, S) -> {noreply, S}.

handle_info(timeout, {durable, fsync, Map, Waiting}) ->
    ok = disk_log:sync(latest_log),
    [gen_server:reply(From, ok) || From <- lists:reverse(Waiting)],
    {noreply, {durable, fsync, Map, []}};
handle_info(work, {Id, Timeout, V}) ->
    counters:add(persistent_term:get(bench_performs), 1, 1),
    erlang:send_after(Timeout, self(), work),
    {noreply, {Id, Timeout, V + 1}};
handle_info(_Msg, S) ->
    {noreply, S}.

%% A put or del of the W6 manager: recorded in bench_child, then done as
%% the W3 manager does it.
durable({put, Id, Payload}, Sync, Map) ->
    {atomic, ok} = transaction(Sync, fun() -> mnesia:write({bench_child, Id, Payload}) end),
    {reply, ok, Map1} = handle_call({put, Id, Payload}, undefined, Map),
    Map1;
durable({del, Id}, Sync, Map) ->
    {atomic, ok} = transaction(Sync, fun() -> mnesia:delete({bench_child, Id}) end),
    {reply, _, Map1} = handle_call({del, Id}, undefined, Map),
    Map1;
durable(count, _, Map) ->
    Map.

%% The timeout that keeps calls waiting for their fsync answered: the
%% sync runs when the mailbox is empty.
synced([]) -> infinity;
synced(_) -> 0.

transaction(transaction, F) -> mnesia:transaction(F);
transaction(fsync, F) -> mnesia:sync_transaction(F).

boot_until(K, N, _, Map) when K > N -> {N, Map};
boot_until(K, N, DeadlineMs, Map) ->
    case K rem 1000 =:= 0 andalso DeadlineMs =/= infinity andalso
         erlang:monotonic_time(millisecond) >= DeadlineMs of
        true -> {K - 1, Map};
        false ->
            Id = list_to_binary("c" ++ integer_to_list(K)),
            {ok, P} = gen_server:start(?MODULE, {worker, Id, 1000, 1000}, []),
            boot_until(K + 1, N, DeadlineMs, Map#{Id => P})
    end.
