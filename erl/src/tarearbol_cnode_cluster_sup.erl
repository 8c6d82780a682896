%% @doc The cluster supervisor: the pg scope `tarearbol_cnode_cluster'
%% that members join, then the members that start_member/1 adds. It sits
%% after tarearbol_cnode_sup under the top supervisor, so members stop
%% before the launchers of their C nodes.
-module(tarearbol_cnode_cluster_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervisor, registered as tarearbol_cnode_cluster_sup.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc supervisor callback: one_for_one, the pg scope first.
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Scope = tarearbol_cnode_cluster_server:scope(),
    {ok, {#{strategy => one_for_one, intensity => 5, period => 30},
          [#{id => pg, start => {pg, start_link, [Scope]},
             restart => permanent, shutdown => 5000, type => worker}]}}.
