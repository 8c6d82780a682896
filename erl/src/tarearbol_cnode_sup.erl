%% @doc Top supervisor: one launcher per C node. Nodes listed in the
%% application environment (`nodes', a list of launcher options) start
%% with the application; start_node/1 adds more.
-module(tarearbol_cnode_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, launcher_spec/1]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Nodes = application:get_env(tarearbol_cnode, nodes, []),
    {ok, {#{strategy => one_for_one, intensity => 5, period => 30},
          [launcher_spec(Opts) || Opts <- Nodes]}}.

-spec launcher_spec(tarearbol_cnode_launcher:opts()) -> supervisor:child_spec().
launcher_spec(#{name := Name} = Opts) ->
    #{id => {launcher, Name},
      start => {tarearbol_cnode_launcher, start_link, [Opts]},
      restart => permanent,
      shutdown => 10000,
      type => worker}.
