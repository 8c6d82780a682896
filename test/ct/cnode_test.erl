%% @doc Test helpers: start and stop the real tarearbol_cnode binary, await
%% conditions, start BEAM peers. Every suite goes through here.
%%
%% The binary is priv/tarearbol_cnode, or $TAREARBOL_CNODE_BIN (make test
%% points it at the AddressSanitizer build, c_src/_build/tarearbol_cnode_asan). Its stderr goes to a file in
%% the CT priv dir; stop/1 fails when the process did not exit 0 or when a
%% sanitizer wrote a report.
-module(cnode_test).

-export([bin/0, root/0, host/0, cookie/0, unique/1,
         start/2, stop/1, kill/1, os_pid/1, log/1, node/1,
         init_case/2, init_case/3, end_case/1, end_case/2,
         app_init_suite/1, app_end_suite/1, app_end_case/1, launcher_opts/3,
         wait_until/2, wait_until/3, wait_started/2, call/2, call/3,
         start_peer/1, start_peer/2, stats/1, run_until_ready/3,
         epmd_names/0, info_calls/2, epmd_names/1, assert_clean_log/1]).

-define(READY_TIMEOUT, 15000).

-spec bin() -> file:filename().
bin() ->
    case os:getenv("TAREARBOL_CNODE_BIN") of
        false ->
            %% rebar3 puts the app on a relative code path and CT moves the
            %% working directory per test: anchor it where the run began.
            Priv = filename:absname(code:priv_dir(tarearbol_cnode), os:getenv("PWD")),
            filename:join(Priv, "tarearbol_cnode");
        Bin -> Bin
    end.

%% @doc The checkout's top directory (physical: rebar3 reaches the
%% application's priv/ through a symlink in _build).
-spec root() -> file:filename().
root() ->
    Priv = filename:absname(code:priv_dir(tarearbol_cnode), os:getenv("PWD")),
    string:trim(os:cmd("cd -P '" ++ Priv ++ "' && cd .. && pwd -P")).

-spec host() -> string().
host() ->
    [_, Host] = string:split(atom_to_list(erlang:node()), "@"),
    Host.

-spec cookie() -> string().
cookie() -> atom_to_list(erlang:get_cookie()).

-spec unique(string()) -> string().
unique(Prefix) ->
    %% The test node's OS pid keeps names apart across runs too.
    Prefix ++ "_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

%% @doc Starts the binary and waits for READY. Opts: name (short name, made
%% unique by default), args (extra argv), cookie, env (extra environment),
%% dir (where the stderr log goes), nofile (its limit of open files), cd
%% (its working directory).
-spec start(string() | undefined, map()) -> map().
start(Name0, Opts) ->
    Name = case Name0 of undefined -> unique("cnode"); _ -> Name0 end,
    Dir = maps:get(dir, Opts, "/tmp"),
    Log = filename:join(Dir, Name ++ ".stderr"),
    Args = ["--sname", Name, "--log-level", "debug", "--exit-with-stdin" | maps:get(args, Opts, [])],
    Env = [{"TAREARBOL_CNODE_COOKIE", maps:get(cookie, Opts, cookie())},
           {"CNODE_LOG", Log},
           {"ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"},
           {"UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"}
           | maps:get(env, Opts, [])],
    Self = self(),
    %% Linked: if the test process dies, the owner and its port go, the
    %% node sees its stdin close and stops. No node outlives its test.
    Limit = case maps:get(nofile, Opts, undefined) of
                undefined -> "";
                NoFile -> "ulimit -n " ++ integer_to_list(NoFile) ++ " && "
            end ++ case maps:get(cd, Opts, undefined) of
                       undefined -> "";
                       Cd -> "cd '" ++ Cd ++ "' && "
                   end,
    Owner = spawn_link(fun() -> owner(Self, Limit, Args, Env) end),
    receive
        {Owner, ready, Node, OsPid} ->
            #{owner => Owner, node => Node, os_pid => OsPid, log => Log, name => Name};
        {Owner, failed, Why} ->
            error({cnode_start_failed, Why, file:read_file(Log)})
    after ?READY_TIMEOUT ->
        exit(Owner, kill),
        error({cnode_not_ready, file:read_file(Log)})
    end.

%% The port's owner lives apart from test-case processes, which come and go.
owner(Parent, Limit, Args, Env) ->
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", Limit ++ "exec \"$0\" \"$@\" 2>>\"$CNODE_LOG\"", bin() | Args]},
                      {env, Env}, exit_status, {line, 4096}, binary, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    receive
        {Port, {data, {eol, <<"READY ", Node/binary>>}}} ->
            Parent ! {self(), ready, binary_to_atom(Node), OsPid},
            owner_loop(Port, undefined);
        {Port, {exit_status, S}} ->
            Parent ! {self(), failed, {exit_status, S}}
    end.

owner_loop(Port, Status) ->
    receive
        {Port, {exit_status, S}} -> owner_loop(Port, {exited, S});
        {Port, {data, _}} -> owner_loop(Port, Status);
        {status, From} ->
            From ! {self(), Status},
            owner_loop(Port, Status);
        {await_exit, From} when Status =/= undefined ->
            From ! {self(), Status};
        {await_exit, From} ->
            receive {Port, {exit_status, S}} -> From ! {self(), {exited, S}}
            after 20000 -> From ! {self(), still_running}
            end
    end.

%% @doc Runs the binary in Dir with Args (after a unique --sname and
%% --exit-with-stdin): {ready, Lines} once it prints READY (it is then
%% stopped), or {exit, Status, Lines} with everything it printed, stdout
%% and stderr in order. For the command line's refusals.
-spec run_until_ready(string(), [string()], string()) ->
          {ready, [binary()]} | {exit, integer(), [binary()]}.
run_until_ready(Prefix, Args, Dir) ->
    Port = open_port({spawn_executable, bin()},
                     [{args, ["--sname", unique(Prefix), "--exit-with-stdin" | Args]},
                      {env, [{"TAREARBOL_CNODE_COOKIE", cookie()}]}, {cd, Dir},
                      exit_status, stderr_to_stdout, binary, {line, 65536}]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, {eol, <<"READY ", _/binary>> = L}}} ->
            port_close(Port),
            {ready, lists:reverse([L | Acc])};
        {Port, {data, {_, L}}} -> collect(Port, [L | Acc]);
        {Port, {exit_status, S}} -> {exit, S, lists:reverse(Acc)}
    after 15000 ->
        port_close(Port),
        error({neither_ready_nor_exited, lists:reverse(Acc)})
    end.

-spec node(map()) -> node().
node(#{node := N}) -> N.
-spec os_pid(map()) -> integer().
os_pid(#{os_pid := P}) -> P.
-spec log(map()) -> binary().
log(#{log := L}) -> {ok, B} = file:read_file(L), B.

%% @doc The init_per_testcase of a suite whose every case has a node of its
%% own: starts one with the extra argv Args, its log in the case's priv dir,
%% and, when Manager is given, waits until that manager is started.
%% Returns Config with {cnode, C} and {node, Node}.
-spec init_case(list(), [string()]) -> list().
init_case(Config, Args) -> init_case(Config, Args, none).
-spec init_case(list(), [string()], atom() | none) -> list().
init_case(Config, Args, Manager) ->
    #{node := N} = C = start(undefined, #{dir => proplists:get_value(priv_dir, Config),
                                         args => Args}),
    Manager =:= none orelse wait_started({Manager, N}, 10000),
    [{cnode, C}, {node, N} | Config].

%% @doc The end_per_testcase that goes with init_case: stops the node and
%% asserts a clean exit and log. With if_running, a node that the test
%% stopped itself (it is no longer connected, its OS process is gone) is
%% left alone.
-spec end_case(list()) -> ok.
end_case(Config) -> stop(proplists:get_value(cnode, Config)).
-spec end_case(list(), if_running) -> ok.
end_case(Config, if_running) ->
    #{node := N, os_pid := OsPid} = C = proplists:get_value(cnode, Config),
    case lists:member(N, nodes(hidden)) orelse
         os:cmd("kill -0 " ++ integer_to_list(OsPid) ++ " 2>&1") =:= "" of
        true -> stop(C);
        false -> ok
    end.

%% @doc The init_per_suite of a suite that starts its nodes through the
%% tarearbol_cnode application (its launchers) rather than by hand.
-spec app_init_suite(list()) -> list().
app_init_suite(Config) ->
    {ok, _} = application:ensure_all_started(tarearbol_cnode),
    Config.

-spec app_end_suite(list()) -> ok.
app_end_suite(_Config) ->
    application:stop(tarearbol_cnode).

%% @doc The end_per_testcase that goes with app_init_suite: every node a
%% case started through the application is stopped.
-spec app_end_case(list()) -> ok.
app_end_case(_Config) ->
    [tarearbol_cnode:stop_node(Name)
     || {{launcher, Name}, _, _, _} <- supervisor:which_children(tarearbol_cnode_sup)],
    ok.

%% @doc start_node options: a unique name from Prefix, the binary under
%% test and Managers, then Extra over them.
-spec launcher_opts(string(), [string()], map()) -> map().
launcher_opts(Prefix, Managers, Extra) ->
    maps:merge(#{name => unique(Prefix), binary => bin(), managers => Managers}, Extra).

%% @doc SIGTERM, then the exit status; asserts a clean exit and log.
-spec stop(map()) -> ok.
stop(#{owner := Owner, os_pid := OsPid} = C) ->
    _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    Owner ! {await_exit, self()},
    receive
        {Owner, {exited, 0}} -> assert_clean_log(C);
        {Owner, Other} -> error({unclean_exit, Other, log(C)})
    after 25000 -> error({no_exit, log(C)})
    end.

%% @doc SIGKILL, for cleanup after a test that failed half-way.
-spec kill(map()) -> ok.
kill(#{os_pid := OsPid}) ->
    _ = os:cmd("kill -KILL " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

-spec assert_clean_log(map()) -> ok.
assert_clean_log(C) ->
    Log = log(C),
    Bad = [P || P <- [<<"AddressSanitizer">>, <<"LeakSanitizer">>,
                      <<"runtime error:">>, <<"UndefinedBehaviorSanitizer">>],
                binary:match(Log, P) =/= nomatch],
    case Bad of
        [] -> ok;
        _ -> error({sanitizer_report, Bad, Log})
    end.

%% @doc Polls Fun every 20 ms until it returns true (or {true, V}).
-spec wait_until(fun(() -> boolean() | {true, term()}), timeout()) -> term().
wait_until(Fun, Timeout) -> wait_until(Fun, Timeout, 20).
-spec wait_until(fun(() -> boolean() | {true, term()}), timeout(), pos_integer()) -> term().
wait_until(Fun, Timeout, Step) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_loop(Fun, Deadline, Step).

wait_loop(Fun, Deadline, Step) ->
    R = try Fun() catch C:E -> {caught, C, E} end,
    case R of
        true -> true;
        {true, V} -> V;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({condition_not_met, R});
                false -> timer:sleep(Step), wait_loop(Fun, Deadline, Step)
            end
    end.

%% @doc Waits until the manager {Name, Node} has put its children_specs.
-spec wait_started({atom(), node()}, timeout()) -> true.
wait_started(Manager, Timeout) ->
    wait_until(fun() -> maps:get(state, gen_server:call(Manager, state, 30000)) =:= started end, Timeout).

-spec call(map() | node(), term()) -> term().
call(C, Req) -> call(C, Req, 5000).
-spec call(map() | node(), term(), timeout()) -> term().
call(#{node := N}, Req, T) -> call(N, Req, T);
call(N, Req, T) when is_atom(N) -> gen_server:call({tarearbol_cnode, N}, Req, T).

-spec stats(map() | node()) -> map().
stats(C) -> call(C, stats).

%% @doc A BEAM peer controlled over stdio (so it needs no cookie in common
%% with this node). Extra args, e.g. ["-setcookie", "x"].
-spec start_peer(string()) -> {pid(), node()}.
start_peer(Prefix) -> start_peer(Prefix, []).
-spec start_peer(string(), [string()]) -> {pid(), node()}.
start_peer(Prefix, Args0) ->
    Args = ["-pa", filename:dirname(code:which(?MODULE)) | Args0],
    Cookie = case lists:member("-setcookie", Args) of
                 true -> [];
                 false -> ["-setcookie", cookie()]
             end,
    {ok, Peer, Node} = peer:start_link(#{name => unique(Prefix),
                                         args => Cookie ++ Args,
                                         connection => standard_io}),
    {Peer, Node}.

%% @doc Runs on a peer: Count info calls, returns how many answered right.
-spec info_calls(node(), pos_integer()) -> non_neg_integer().
info_calls(N, Count) ->
    Rs = [gen_server:call({tarearbol_cnode, N}, info) || _ <- lists:seq(1, Count)],
    length([ok || #{node := X} <- Rs, X =:= N]).

-spec epmd_names() -> [string()].
epmd_names() ->
    {ok, Names} = erl_epmd:names(),
    [N || {N, _Port} <- Names].

%% @doc Names registered with the epmd listening on Port.
-spec epmd_names(integer()) -> [string()] | down.
epmd_names(Port) ->
    Out = os:cmd("ERL_EPMD_PORT=" ++ integer_to_list(Port) ++ " epmd -names 2>&1"),
    case string:find(Out, "up and running") of
        nomatch -> down;
        _ -> [N || "name " ++ Rest <- string:split(Out, "\n", all),
                   [N | _] <- [string:split(Rest, " at port")]]
    end.
