%% @doc Events through telemetry, when the telemetry application is
%% there. Nothing requires it: this process subscribes to a manager's
%% events (tarearbol_cnode:subscribe/3) only when `telemetry' can be
%% loaded, and turns each event into
%% `telemetry:execute([tarearbol_cnode, Event], Measurements, Metadata)':
%% Measurements are the event's integer fields (`count' is 1 unless the
%% event says otherwise), Metadata the whole event map with `manager' and
%% `node'. The launchers tell it of every manager of a node each time the
%% node is ready, so it follows the node across restarts; set the
%% application environment `telemetry' to `false' to keep it out.
-module(tarearbol_cnode_telemetry).
-behaviour(gen_server).

-export([start_link/0, forward/1, node_ready/2, available/0, forwarded/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SERVER, ?MODULE).

%% @doc Starts the forwarder, registered under its module's name.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% @doc Forwards every event of Manager to telemetry: `ok', or `{error,
%% no_telemetry}' when telemetry cannot be loaded (or is switched off),
%% or the subscription's error.
-spec forward(tarearbol_cnode:manager()) -> ok | {error, term()}.
forward(Manager) ->
    gen_server:call(?SERVER, {forward, Manager}, 10000).

%% @doc A node came up with these managers (the launcher's cast).
-spec node_ready(node(), [atom()]) -> ok.
node_ready(Node, Names) ->
    gen_server:cast(?SERVER, {node_ready, Node, Names}).

%% @doc Whether events go to telemetry: it loads, and is not switched off.
-spec available() -> boolean().
available() ->
    application:get_env(tarearbol_cnode, telemetry, true) =/= false andalso
        code:ensure_loaded(telemetry) =:= {module, telemetry}.

%% @doc The managers whose events are forwarded now.
-spec forwarded() -> [tarearbol_cnode:manager()].
forwarded() ->
    gen_server:call(?SERVER, forwarded).

%% @doc gen_server callback: no manager forwarded yet.
-spec init([]) -> {ok, #{tarearbol_cnode:manager() => reference()}}.
init([]) ->
    {ok, #{}}.

%% @doc gen_server callback: forward/1 and forwarded/0.
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call({forward, Manager}, _From, S) ->
    {Reply, S1} = subscribe(Manager, S),
    {reply, Reply, S1};
handle_call(forwarded, _From, S) ->
    {reply, maps:keys(S), S};
handle_call(_Other, _From, S) ->
    {reply, {error, unknown_request}, S}.

%% @doc gen_server callback: a launcher's node_ready/2.
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast({node_ready, Node, Names}, S) ->
    {noreply, lists:foldl(fun(Name, Acc) -> element(2, subscribe({Name, Node}, Acc)) end,
                          S, Names)};
handle_cast(_Other, S) ->
    {noreply, S}.

%% @doc gen_server callback: an event, passed to telemetry:execute/3,
%% or a forwarded manager gone.
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({tarearbol_cnode, {Name, Node}, Event, Map}, S) when is_map(Map) ->
    Measurements = maps:merge(#{count => 1}, maps:filter(fun(_, V) -> is_integer(V) end, Map)),
    Metadata = Map#{manager => Name, node => Node},
    try telemetry:execute([tarearbol_cnode, Event], Measurements, Metadata)
    catch _:_ -> ok
    end,
    {noreply, S};
handle_info({'DOWN', Ref, process, _, _}, S) ->
    %% The manager (or its node) is gone; the next node_ready subscribes again.
    {noreply, maps:filter(fun(_, R) -> R =/= Ref end, S)};
handle_info(_Other, S) ->
    {noreply, S}.

subscribe(Manager, S) ->
    case available() of
        false ->
            {{error, no_telemetry}, S};
        true ->
            case tarearbol_cnode:subscribe(Manager, all) of
                ok ->
                    _ = case S of
                            #{Manager := Old} -> erlang:demonitor(Old, [flush]);
                            _ -> ok
                        end,
                    {ok, S#{Manager => erlang:monitor(process, Manager)}};
                {error, _} = E ->
                    {E, S}
            end
    end.
