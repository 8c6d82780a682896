%% @doc Runs one C node as an OS process and keeps it running.
%%
%% The binary comes from `code:priv_dir(tarearbol_cnode)', the node name
%% from argv and the cookie from the environment (never argv, where `ps'
%% shows it). The launcher waits for the node's READY line, connects to
%% it, forwards every line the node logs to `logger', and when the OS
%% process dies starts it again after a backoff that doubles up to a
%% ceiling. The node is started with --exit-with-stdin, so it stops when
%% the launcher's port closes: no orphan outlives the launcher.
-module(tarearbol_cnode_launcher).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/1, node_of/1, os_pid/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-type opts() :: #{name := string(),
                  managers => [string()],
                  threads => pos_integer(),
                  args => [string()],
                  binary => file:filename(),
                  ready_timeout => timeout(),
                  backoff_ms => pos_integer(),
                  max_backoff_ms => pos_integer()}.
-export_type([opts/0]).

-record(st, {opts :: opts(),
             port :: port() | undefined,
             os_pid :: integer() | undefined,
             node :: node() | undefined,
             backoff :: pos_integer(),
             restarts = 0 :: non_neg_integer()}).

-define(READY_TIMEOUT, 15000).
-define(BACKOFF, 100).
-define(MAX_BACKOFF, 5000).

-spec start_link(opts()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    gen_server:start_link(?MODULE, Opts, []).

%% @doc The C node this launcher runs (undefined while it restarts).
-spec node_of(pid()) -> node() | undefined.
node_of(Launcher) -> gen_server:call(Launcher, node).

%% @doc The OS pid of the C node (undefined while it restarts).
-spec os_pid(pid()) -> integer() | undefined.
os_pid(Launcher) -> gen_server:call(Launcher, os_pid).

-spec init(opts()) -> {ok, #st{}} | {stop, term()}.
init(Opts) ->
    process_flag(trap_exit, true),
    case ensure_distributed() of
        ok ->
            St = #st{opts = Opts, backoff = maps:get(backoff_ms, Opts, ?BACKOFF)},
            case launch(St) of
                {ok, St1} -> {ok, St1};
                {error, Reason} -> {stop, Reason}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(node, _From, St) -> {reply, St#st.node, St};
handle_call(os_pid, _From, St) -> {reply, St#st.os_pid, St};
handle_call(_Req, _From, St) -> {reply, {error, unknown_request}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) -> {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}} | {stop, term(), #st{}}.
handle_info({Port, {data, {eol, Line}}}, #st{port = Port} = St) ->
    log_line(St#st.node, Line),
    {noreply, St};
handle_info({Port, {data, {noeol, Line}}}, #st{port = Port} = St) ->
    log_line(St#st.node, Line),
    {noreply, St};
handle_info({Port, {exit_status, Status}}, #st{port = Port, backoff = B} = St) ->
    ?LOG_WARNING("C node ~s (OS pid ~p) exited with status ~p; starting it again in ~p ms",
                 [St#st.node, St#st.os_pid, Status, B]),
    erlang:send_after(B, self(), relaunch),
    Max = maps:get(max_backoff_ms, St#st.opts, ?MAX_BACKOFF),
    {noreply, St#st{port = undefined, os_pid = undefined, backoff = min(B * 2, Max)}};
handle_info(relaunch, St) ->
    case launch(St) of
        {ok, St1} ->
            {noreply, St1#st{restarts = St#st.restarts + 1,
                             backoff = maps:get(backoff_ms, St#st.opts, ?BACKOFF)}};
        {error, Reason} ->
            %% The supervisor's intensity bounds how often this repeats.
            {stop, Reason, St}
    end;
handle_info({'EXIT', Port, _}, #st{port = Port} = St) ->
    {noreply, St};
handle_info(_Other, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, #st{port = undefined}) -> ok;
terminate(_Reason, #st{port = Port, os_pid = OsPid}) ->
    %% SIGTERM for a clean stop; closing the port would do it too.
    _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {Port, {exit_status, _}} -> ok after 5000 -> catch port_close(Port), ok end.

%% ---------------------------------------------------------------------------

ensure_distributed() ->
    case is_alive() of
        true -> ok;
        false ->
            _ = os:cmd("epmd -daemon"),
            Name = list_to_atom("tarearbol_cnode_" ++ os:getpid()),
            case net_kernel:start([Name, shortnames]) of
                {ok, _} -> ok;
                {error, Reason} -> {error, {not_distributed, Reason}}
            end
    end.

launch(#st{opts = Opts} = St) ->
    Bin = maps:get(binary, Opts, filename:join(code:priv_dir(tarearbol_cnode), "tarearbol_cnode")),
    case filelib:is_regular(Bin) of
        false -> {error, {no_binary, Bin}};
        true -> spawn_node(Bin, St)
    end.

spawn_node(Bin, #st{opts = Opts} = St) ->
    Name = maps:get(name, Opts),
    Managers = lists:append([["--manager", M] || M <- maps:get(managers, Opts, [])]),
    Threads = case maps:get(threads, Opts, undefined) of
                  undefined -> [];
                  T -> ["--threads", integer_to_list(T)]
              end,
    Args = ["--sname", Name, "--exit-with-stdin"] ++ Managers ++ Threads ++ maps:get(args, Opts, []),
    Port = open_port({spawn_executable, Bin},
                     [{args, Args},
                      {env, [{"TAREARBOL_CNODE_COOKIE", atom_to_list(erlang:get_cookie())}]},
                      exit_status, {line, 4096}, binary, stderr_to_stdout]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    Deadline = erlang:monotonic_time(millisecond) + maps:get(ready_timeout, Opts, ?READY_TIMEOUT),
    case wait_ready(Port, Deadline, []) of
        {ok, Node} ->
            case net_kernel:connect_node(Node) of
                true ->
                    ?LOG_INFO("C node ~s is up (OS pid ~p)", [Node, OsPid]),
                    {ok, St#st{port = Port, os_pid = OsPid, node = Node}};
                _ ->
                    kill(Port, OsPid),
                    {error, {cannot_connect, Node}}
            end;
        {error, _} = Error ->
            kill(Port, OsPid),
            Error
    end.

wait_ready(Port, Deadline, Lines) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {eol, <<"READY ", Node/binary>>}}} ->
            {ok, binary_to_atom(Node)};
        {Port, {data, {_, Line}}} ->
            log_line(undefined, Line),
            wait_ready(Port, Deadline, lists:sublist([Line | Lines], 20));
        {Port, {exit_status, Status}} ->
            {error, {exit_status, Status, lists:reverse(Lines)}}
    after Left ->
        {error, {not_ready, lists:reverse(Lines)}}
    end.

kill(Port, OsPid) ->
    _ = os:cmd("kill -KILL " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    catch port_close(Port),
    ok.

%% The node's log lines are "HH:MM:SS.mmm LEVEL file:line: text".
log_line(Node, Line) ->
    Level = case binary:split(Line, <<" ">>, [global]) of
                [_, <<"error">> | _] -> error;
                [_, <<"warning">> | _] -> warning;
                [_, <<"debug">> | _] -> debug;
                _ -> info
            end,
    logger:log(Level, "~s: ~s", [case Node of undefined -> "tarearbol_cnode"; _ -> Node end, Line],
               #{domain => [tarearbol_cnode]}).
