%% @doc The tarearbol_cnode application: starts the top supervisor
%% (tarearbol_cnode_top_sup), which runs the launchers' supervisor and
%% the telemetry forwarder.
-module(tarearbol_cnode_app).
-behaviour(application).

-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    tarearbol_cnode_top_sup:start_link().

-spec stop(term()) -> ok.
stop(_State) ->
    ok.
