%% @doc Runs one C node as an OS process; restarts it within a bound.
%%
%% The binary comes from `code:priv_dir(tarearbol_cnode)', the node name
%% from argv and the cookie from the environment (never argv, where `ps'
%% shows it). The launcher is a gen_statem with three states:
%%
%% <ul>
%% <li>`launching': the port is open and the launcher waits for the node's
%%   READY line, then connects to it;</li>
%% <li>`ready': the node runs; every line it logs goes to `logger';</li>
%% <li>`backoff': the node died (or never became ready) and the launcher
%%   waits before starting it again.</li>
%% </ul>
%%
%% init/1 only checks the options and returns: it never waits for READY,
%% so neither the application's start nor its supervisor is held by a slow
%% binary. await_ready/2 is how a caller waits (tarearbol_cnode:start_node/1
%% uses it): the call is answered when READY arrives or the attempt fails.
%%
%% A binary that keeps dying is not hidden from the supervisor: after
%% `max_restarts' restarts within `restart_window_s' seconds, the next death
%% stops the launcher with `{too_many_restarts, #{max_restarts, within_s,
%% last_exit}}' and the supervisor decides. Between restarts the delay
%% starts at `backoff_ms' and doubles with each restart in the window, up
%% to `max_backoff_ms'.
%%
%% The node is started with --exit-with-stdin, so closing the port stops
%% it: on stop the launcher closes the port and waits (bounded) until the
%% OS process is gone. No signal is ever sent.
%%
%% Options (a map):
%% <ul>
%% <li>`name' (required): the node's short name;</li>
%% <li>`managers': `--manager' specs; `threads': `--threads'; `args': more argv;</li>
%% <li>`binary': the executable (default priv/tarearbol_cnode);</li>
%% <li>`ready_timeout' (15000 ms): a launch that takes longer fails;</li>
%% <li>`max_restarts' (3) and `restart_window_s' (10): the restart bound;</li>
%% <li>`backoff_ms' (100) and `max_backoff_ms' (5000): the delay between restarts;</li>
%% <li>`stop_timeout' (5000 ms): how long a stop waits for the OS process;</li>
%% <li>`start_distribution' (false, or the application env of that name):
%%   start distribution (and epmd) when this node is not distributed;
%%   otherwise init fails with `not_distributed'.</li>
%% <li>`tls': TLS for the node's distribution, a map of `cert', `key' and
%%   `ca' (PEM files, as `--tls-cert', `--tls-key', `--tls-ca'), `verify'
%%   (`peer', the default, or `none') and `only' (`true', the default:
%%   plain TCP peers are refused). This node must then run TLS
%%   distribution itself (`-proto_dist inet_tls') to reach it. A bad
%%   setting fails init with `{bad_tls_option, Key, Value}'.</li>
%% </ul>
-module(tarearbol_cnode_launcher).
-behaviour(gen_statem).

-include_lib("kernel/include/logger.hrl").

-export([start_link/1, await_ready/2, node_of/1, os_pid/1, info/1]).
-export([callback_mode/0, init/1, launching/3, ready/3, backoff/3, terminate/3]).

-type opts() :: #{name := string(),
                  managers => [string()],
                  threads => pos_integer(),
                  args => [string()],
                  binary => file:filename(),
                  ready_timeout => timeout(),
                  max_restarts => non_neg_integer(),
                  restart_window_s => pos_integer(),
                  backoff_ms => pos_integer(),
                  max_backoff_ms => pos_integer(),
                  stop_timeout => non_neg_integer(),
                  start_distribution => boolean(),
                  tls => tls_opts()}.
%% The options of a node (see the module doc).
-type tls_opts() :: #{cert := file:filename(),
                      key := file:filename(),
                      ca := file:filename(),
                      verify => peer | none,
                      only => boolean()}.
%% TLS settings (see the module doc).
-type state() :: launching | ready | backoff.
-type info() :: #{state := state(),
                  node := node() | undefined,
                  os_pid := integer() | undefined,
                  port := port() | undefined,
                  restarts := non_neg_integer(),
                  max_restarts := non_neg_integer(),
                  restart_window_s := pos_integer()}.
%% What info/1 returns.
-export_type([opts/0, tls_opts/0, info/0]).

-record(data, {opts :: opts(),
               bin :: file:filename(),
               port :: port() | undefined,
               os_pid :: integer() | undefined,
               node :: node() | undefined,
               %% The last lines the node printed before READY, newest first:
               %% they explain a failed launch.
               lines = [] :: [binary()],
               %% Monotonic times (ms) of the restarts within the window.
               restarts = [] :: [integer()],
               %% Callers of await_ready/2, answered by the launch outcome.
               waiters = [] :: [gen_statem:from()]}).

-define(READY_TIMEOUT, 15000).
-define(MAX_RESTARTS, 3).
-define(RESTART_WINDOW_S, 10).
-define(BACKOFF, 100).
-define(MAX_BACKOFF, 5000).
-define(STOP_TIMEOUT, 5000).
-define(KEPT_LINES, 20).

%% @doc Starts a launcher, which starts the node in the background: it
%% returns at once; await_ready/2 waits for the node. Fails only on bad
%% options (`{no_binary, Path}', `not_distributed').
-spec start_link(opts()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    gen_statem:start_link(?MODULE, Opts, []).

%% @doc Waits until the node is ready: `{ok, Node}' at once when it is,
%% else when READY arrives; `{error, Reason}' when this launch fails or
%% the launcher stops. Each launch is bounded by `ready_timeout'.
-spec await_ready(pid(), timeout()) -> {ok, node()} | {error, term()}.
await_ready(Launcher, Timeout) ->
    try
        gen_statem:call(Launcher, await_ready, Timeout)
    catch
        exit:{timeout, _} -> {error, timeout};
        exit:{Reason, {gen_statem, call, _}} -> {error, Reason}
    end.

%% @doc The C node this launcher runs (undefined while it restarts).
-spec node_of(pid()) -> node() | undefined.
node_of(Launcher) -> gen_statem:call(Launcher, node).

%% @doc The OS pid of the C node (undefined while it restarts).
-spec os_pid(pid()) -> integer() | undefined.
os_pid(Launcher) -> gen_statem:call(Launcher, os_pid).

%% @doc The launcher's state, its node, and the restarts within the window.
-spec info(pid()) -> info().
info(Launcher) -> gen_statem:call(Launcher, info).

%% @doc gen_statem callback: one function per state.
-spec callback_mode() -> gen_statem:callback_mode_result().
callback_mode() -> state_functions.

%% @doc gen_statem callback: checks the binary and distribution, then
%% launches (without waiting for READY).
-spec init(opts()) -> gen_statem:init_result(state()) | {stop, term()}.
init(Opts) ->
    process_flag(trap_exit, true),
    Bin = maps:get(binary, Opts, filename:join(code:priv_dir(tarearbol_cnode), "tarearbol_cnode")),
    case {filelib:is_regular(Bin), tls_args(maps:get(tls, Opts, undefined))} of
        {false, _} ->
            {stop, {no_binary, Bin}};
        {_, {error, Bad}} ->
            {stop, Bad};
        {true, {ok, _}} ->
            case ensure_distributed(Opts) of
                ok ->
                    {ok, launching, #data{opts = Opts, bin = Bin}, [{next_event, internal, launch}]};
                {error, Reason} ->
                    {stop, Reason}
            end
    end.

%% @doc gen_statem state: the port is open; the node has not printed
%% READY yet.
-spec launching(gen_statem:event_type(), term(), #data{}) -> gen_statem:event_handler_result(state()).
launching(internal, launch, D) ->
    case open(D) of
        {ok, D1} -> {keep_state, D1, [{state_timeout, opt(ready_timeout, D), not_ready}]};
        {error, Reason} -> died(Reason, D)
    end;
launching(info, {Port, {data, {eol, <<"READY ", Name/binary>>}}}, #data{port = Port} = D) ->
    Node = binary_to_atom(Name),
    case net_kernel:connect_node(Node) of
        true ->
            ?LOG_INFO("C node ~s is up (OS pid ~p)", [Node, D#data.os_pid]),
            tarearbol_cnode_telemetry:node_ready(Node, manager_names(D#data.opts)),
            {next_state, ready, D#data{node = Node, lines = []},
             [{reply, W, {ok, Node}} || W <- D#data.waiters]};
        _ ->
            died({cannot_connect, Node}, close(D))
    end;
launching(info, {Port, {data, {_, Line}}}, #data{port = Port} = D) ->
    log_line(D, Line),
    {keep_state, D#data{lines = lists:sublist([Line | D#data.lines], ?KEPT_LINES)}};
launching(info, {Port, {exit_status, Status}}, #data{port = Port} = D) ->
    died({exit_status, Status, lists:reverse(D#data.lines)}, gone(D));
launching(state_timeout, not_ready, D) ->
    Lines = lists:reverse(D#data.lines),
    died({not_ready, Lines}, close(D));
launching({call, From}, await_ready, D) ->
    {keep_state, D#data{waiters = [From | D#data.waiters]}};
launching(Type, Event, D) ->
    common(launching, Type, Event, D).

%% @doc gen_statem state: the node is up and connected.
-spec ready(gen_statem:event_type(), term(), #data{}) -> gen_statem:event_handler_result(state()).
ready(info, {Port, {data, {_, Line}}}, #data{port = Port} = D) ->
    log_line(D, Line),
    keep_state_and_data;
ready(info, {Port, {exit_status, Status}}, #data{port = Port} = D) ->
    ?LOG_WARNING("C node ~s (OS pid ~p) exited with status ~p", [D#data.node, D#data.os_pid, Status]),
    died({exit_status, Status, []}, gone(D));
ready({call, From}, await_ready, D) ->
    {keep_state_and_data, [{reply, From, {ok, D#data.node}}]};
ready(Type, Event, D) ->
    common(ready, Type, Event, D).

%% @doc gen_statem state: the node died; it starts again when the state
%% timeout fires.
-spec backoff(gen_statem:event_type(), term(), #data{}) -> gen_statem:event_handler_result(state()).
backoff(state_timeout, relaunch, D) ->
    {next_state, launching, D, [{next_event, internal, launch}]};
backoff({call, From}, await_ready, D) ->
    {keep_state, D#data{waiters = [From | D#data.waiters]}};
backoff(Type, Event, D) ->
    common(backoff, Type, Event, D).

%% Calls and messages every state answers the same way.
common(State, {call, From}, info, D) ->
    {keep_state_and_data, [{reply, From, #{state => State,
                                           node => D#data.node,
                                           os_pid => D#data.os_pid,
                                           port => D#data.port,
                                           restarts => length(recent(D)),
                                           max_restarts => opt(max_restarts, D),
                                           restart_window_s => opt(restart_window_s, D)}}]};
common(_State, {call, From}, node, D) ->
    {keep_state_and_data, [{reply, From, D#data.node}]};
common(_State, {call, From}, os_pid, D) ->
    {keep_state_and_data, [{reply, From, D#data.os_pid}]};
common(_State, {call, From}, _Request, _D) ->
    {keep_state_and_data, [{reply, From, {error, unknown_request}}]};
common(_State, info, {'EXIT', _Port, _Reason}, _D) ->
    %% Trapped so that terminate/3 runs; the exit_status message is what
    %% tells a node's death.
    keep_state_and_data;
common(_State, info, Msg, _D) ->
    ?LOG_DEBUG("unexpected message ~p", [Msg]),
    keep_state_and_data.

%% @doc gen_statem callback: closes the port, which stops the node.
-spec terminate(term(), state(), #data{}) -> ok.
terminate(_Reason, _State, D) ->
    _ = close(D),
    ok.

%% ---------------------------------------------------------------------------

%% A launch failed or the node died: answer the waiters, then either wait
%% and start again or, past the bound, stop so that the supervisor sees it.
died(Reason, D0) ->
    D = D0#data{port = undefined, os_pid = undefined, node = undefined, lines = [], waiters = []},
    Replies = [{reply, W, {error, Reason}} || W <- D0#data.waiters],
    Recent = recent(D),
    Max = opt(max_restarts, D),
    case length(Recent) >= Max of
        true ->
            Bound = #{max_restarts => Max, within_s => opt(restart_window_s, D), last_exit => Reason},
            ?LOG_ERROR("C node ~s: ~p restarts within ~p s, giving up; last exit ~p",
                       [maps:get(name, D#data.opts), Max, opt(restart_window_s, D), Reason]),
            {stop_and_reply, {too_many_restarts, Bound}, Replies, D};
        false ->
            Delay = min(opt(backoff_ms, D) bsl length(Recent), opt(max_backoff_ms, D)),
            ?LOG_WARNING("C node ~s: ~p; starting it again in ~p ms",
                         [maps:get(name, D#data.opts), Reason, Delay]),
            Now = erlang:monotonic_time(millisecond),
            {next_state, backoff, D#data{restarts = [Now | Recent]},
             Replies ++ [{state_timeout, Delay, relaunch}]}
    end.

recent(#data{restarts = Restarts} = D) ->
    Since = erlang:monotonic_time(millisecond) - opt(restart_window_s, D) * 1000,
    [T || T <- Restarts, T > Since].

open(#data{bin = Bin, opts = Opts} = D) ->
    Managers = lists:append([["--manager", M] || M <- maps:get(managers, Opts, [])]),
    Threads = case maps:get(threads, Opts, undefined) of
                  undefined -> [];
                  T -> ["--threads", integer_to_list(T)]
              end,
    {ok, Tls} = tls_args(maps:get(tls, Opts, undefined)),
    Args = ["--sname", maps:get(name, Opts), "--exit-with-stdin"]
        ++ Managers ++ Threads ++ Tls ++ maps:get(args, Opts, []),
    try open_port({spawn_executable, Bin},
                  [{args, Args},
                   {env, [{"TAREARBOL_CNODE_COOKIE", atom_to_list(erlang:get_cookie())}]},
                   exit_status, {line, 4096}, binary, stderr_to_stdout]) of
        Port ->
            {os_pid, OsPid} = erlang:port_info(Port, os_pid),
            {ok, D#data{port = Port, os_pid = OsPid, lines = []}}
    catch
        error:Why -> {error, {cannot_spawn, Bin, Why}}
    end.

%% Closes the port, which closes the node's stdin, and waits until the OS
%% process is gone. A closed port sends no exit_status, so the wait looks
%% at /proc. A node that outlives the wait is logged, not killed.
close(#data{port = undefined} = D) ->
    D;
close(#data{port = Port, os_pid = OsPid} = D) ->
    catch port_close(Port),
    Deadline = erlang:monotonic_time(millisecond) + opt(stop_timeout, D),
    case await_gone(OsPid, Deadline) of
        ok -> ok;
        timeout -> ?LOG_ERROR("C node OS pid ~p still runs after its port closed", [OsPid])
    end,
    gone(D).

gone(D) ->
    D#data{port = undefined, os_pid = undefined}.

await_gone(OsPid, Deadline) ->
    case filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) of
        false -> ok;
        true ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> receive after 10 -> await_gone(OsPid, Deadline) end
            end
    end.

%% The registered names of the managers the node was started with.
manager_names(Opts) ->
    [list_to_atom(Name) || Spec <- maps:get(managers, Opts, []),
                           [Name, _] <- [string:split(unicode:characters_to_list(Spec), "=")],
                           Name =/= ""].

opt(ready_timeout, #data{opts = O}) -> maps:get(ready_timeout, O, ?READY_TIMEOUT);
opt(max_restarts, #data{opts = O}) -> maps:get(max_restarts, O, ?MAX_RESTARTS);
opt(restart_window_s, #data{opts = O}) -> maps:get(restart_window_s, O, ?RESTART_WINDOW_S);
opt(backoff_ms, #data{opts = O}) -> maps:get(backoff_ms, O, ?BACKOFF);
opt(max_backoff_ms, #data{opts = O}) -> maps:get(max_backoff_ms, O, ?MAX_BACKOFF);
opt(stop_timeout, #data{opts = O}) -> maps:get(stop_timeout, O, ?STOP_TIMEOUT).

%% The node's TLS argv, or why the settings are refused.
tls_args(undefined) ->
    {ok, []};
tls_args(Tls) when is_map(Tls) ->
    Files = [{cert, "--tls-cert"}, {key, "--tls-key"}, {ca, "--tls-ca"}],
    Missing = [K || {K, _} <- Files, not maps:is_key(K, Tls)],
    BadFile = [{K, V} || {K, _} <- Files, V <- [maps:get(K, Tls, "")],
                         not (is_list(V) orelse is_binary(V))],
    Verify = maps:get(verify, Tls, peer),
    Only = maps:get(only, Tls, true),
    Unknown = maps:keys(Tls) -- [cert, key, ca, verify, only],
    if
        Missing =/= [] -> {error, {bad_tls_option, hd(Missing), missing}};
        BadFile =/= [] -> {error, {bad_tls_option, element(1, hd(BadFile)), element(2, hd(BadFile))}};
        Verify =/= peer, Verify =/= none -> {error, {bad_tls_option, verify, Verify}};
        not is_boolean(Only) -> {error, {bad_tls_option, only, Only}};
        Unknown =/= [] -> {error, {bad_tls_option, hd(Unknown), maps:get(hd(Unknown), Tls)}};
        true ->
            {ok, lists:append([[Flag, unicode:characters_to_list(maps:get(K, Tls))] || {K, Flag} <- Files])
                 ++ ["--tls-verify", atom_to_list(Verify), "--tls-only=" ++ atom_to_list(Only)]}
    end;
tls_args(Other) ->
    {error, {bad_tls_option, tls, Other}}.

%% Distribution is this node's business: the launcher starts it only when
%% asked to, through the option or the application env.
ensure_distributed(Opts) ->
    Wanted = maps:get(start_distribution, Opts,
                      application:get_env(tarearbol_cnode, start_distribution, false)),
    case {is_alive(), Wanted} of
        {true, _} -> ok;
        {false, false} -> {error, not_distributed};
        {false, true} -> start_distribution()
    end.

start_distribution() ->
    case start_epmd() of
        ok ->
            Name = list_to_atom("tarearbol_cnode_" ++ os:getpid()),
            case net_kernel:start([Name, shortnames]) of
                {ok, _} -> ok;
                {error, Reason} -> {error, {not_distributed, Reason}}
            end;
        {error, _} = E ->
            E
    end.

%% `epmd -daemon' returns at once, whether an epmd runs already or not.
start_epmd() ->
    case os:find_executable("epmd") of
        false ->
            {error, {not_distributed, no_epmd}};
        Epmd ->
            Port = open_port({spawn_executable, Epmd}, [{args, ["-daemon"]}, exit_status]),
            receive
                {Port, {exit_status, 0}} -> ok;
                {Port, {exit_status, S}} -> {error, {not_distributed, {epmd_exit_status, S}}}
            after 5000 ->
                catch port_close(Port),
                {error, {not_distributed, epmd_timeout}}
            end
    end.

%% The node's log lines are "HH:MM:SS.mmm LEVEL file:line: text"; lines a
%% behaviour prints itself are text alone, logged at info. logger keeps
%% the time and the level, so the message is the node's name and the text
%% only; the C source's file and line, the node, and the manager and worker
%% the text names ("manager M: worker W ...") go in the metadata. There is
%% no domain: OTP's default handler drops events of a domain it does not
%% know. Before READY the node is named by its short name.
log_line(#data{node = Node, opts = #{name := SName}}, Line) ->
    {Level, Meta, Text} = parse_line(Line),
    {Name, NodeMeta} = case Node of
                           undefined -> {SName, #{}};
                           _ -> {atom_to_list(Node), #{node => Node}}
                       end,
    logger:log(Level, "~ts: ~ts", [Name, Text], maps:merge(Meta, about(Text, NodeMeta))).

-spec parse_line(binary()) -> {logger:level(), logger:metadata(), binary()}.
parse_line(Line) ->
    case re:run(Line, "^[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} (debug|info|warning|error) ([^ :]+):([0-9]+): (.*)$",
                [{capture, all_but_first, binary}, dotall]) of
        {match, [Level, File, No, Text]} ->
            {binary_to_existing_atom(Level), #{file => binary_to_list(File), line => binary_to_integer(No)}, Text};
        nomatch ->
            {info, #{}, Line}
    end.

%% Strings, which logger's and Elixir's formatters both print as text.
text(B) -> unicode:characters_to_list(B).

about(Text, Meta) ->
    case re:run(Text, "^(?:[a-z_]+: )?manager ([^ :]+)(?:(?::| is) (?:worker ([^ :]+))?)?",
                [{capture, all_but_first, binary}]) of
        {match, [M]} -> Meta#{manager => text(M)};
        {match, [M, <<>>]} -> Meta#{manager => text(M)};
        {match, [M, W]} -> Meta#{manager => text(M), worker => text(W)};
        nomatch -> Meta
    end.
