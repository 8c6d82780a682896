%% @doc The tarearbol_cnode application: starts the top supervisor
%% (tarearbol_cnode_top_sup), which runs the launchers' supervisor and
%% the telemetry forwarder.
-module(tarearbol_cnode_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @doc Starts tarearbol_cnode_sup, and with it the nodes listed in the
%% application env `nodes'.
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    tarearbol_cnode_top_sup:start_link().

%% @doc Nothing to clean up: the supervisor's launchers stop their nodes.
-spec stop(term()) -> ok.
stop(_State) ->
    ok.
