%% @doc The application's top supervisor: the telemetry forwarder (which
%% does nothing unless telemetry is loaded) beside tarearbol_cnode_sup,
%% whose children stay the launchers alone, as callers of
%% supervisor:which_children(tarearbol_cnode_sup) expect, and the cluster
%% supervisor after it (tarearbol_cnode_cluster_sup).
-module(tarearbol_cnode_top_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the top supervisor, registered as tarearbol_cnode_top_sup.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc supervisor callback: the forwarder, tarearbol_cnode_sup, then the
%% cluster supervisor (pg scope and cluster members).
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 30},
          [#{id => telemetry,
             start => {tarearbol_cnode_telemetry, start_link, []},
             restart => permanent, shutdown => 5000, type => worker},
           #{id => tarearbol_cnode_sup,
             start => {tarearbol_cnode_sup, start_link, []},
             restart => permanent, shutdown => infinity, type => supervisor},
           #{id => tarearbol_cnode_cluster_sup,
             start => {tarearbol_cnode_cluster_sup, start_link, []},
             restart => permanent, shutdown => infinity, type => supervisor}]}}.
