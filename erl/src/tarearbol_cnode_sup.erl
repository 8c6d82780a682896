%% @doc Top supervisor: one launcher per C node. Nodes listed in the
%% application environment (`nodes', a list of launcher options) start
%% with the application; start_node/1 adds more.
-module(tarearbol_cnode_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, launcher_spec/1]).

%% @doc Starts the supervisor, registered as tarearbol_cnode_sup.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc supervisor callback: one_for_one over a launcher per entry of
%% the application env `nodes'.
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Nodes = application:get_env(tarearbol_cnode, nodes, []),
    {ok, {#{strategy => one_for_one, intensity => 5, period => 30},
          [launcher_spec(Opts) || Opts <- Nodes]}}.

%% @doc The child spec of the launcher of one node, with id
%% `{launcher, Name}' (what tarearbol_cnode:stop_node/1 takes).
-spec launcher_spec(tarearbol_cnode_launcher:opts()) -> supervisor:child_spec().
launcher_spec(#{name := Name} = Opts) ->
    #{id => {launcher, Name},
      start => {tarearbol_cnode_launcher, start_link, [Opts]},
      restart => permanent,
      shutdown => 10000,
      type => worker}.
