%% @doc `make demo`: the seed's dashboard, live. A C node runs a `probe`
%% manager; this BEAM node opens a few endpoints on 127.0.0.1 (some
%% listening, some not), puts one probe per endpoint, and prints the state
%% the C node keeps for them, while one endpoint goes down and another
%% comes up. Everything runs on this machine and stops by itself.
-module(demo).
-export([main/0]).

-define(ROUNDS, 10).
-define(EVERY_MS, 700).

main() ->
    Bin = filename:absname("priv/tarearbol_cnode"),
    Name = "demo_cnode_" ++ os:getpid(),
    Port = open_port({spawn_executable, Bin},
                     [{args, ["--sname", Name, "--log-level", "warning",
                              "--manager", "probes=probe,timeout=500"]},
                      {env, [{"TAREARBOL_CNODE_COOKIE", atom_to_list(erlang:get_cookie())}]},
                      exit_status, {line, 1024}, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    Node = receive {Port, {data, {eol, <<"READY ", N/binary>>}}} -> binary_to_atom(N)
           after 15000 -> io:format("the C node did not start~n"), halt(1)
           end,
    io:format("C node ~s is up (OS pid ~B), BEAM node ~s connected~n", [Node, OsPid, node()]),
    {ok, Web} = listen(),
    {ok, Db} = listen(),
    {ok, Cache} = listen(),
    Mail = closed_port(),
    Legacy = closed_port(),
    Endpoints = [{<<"web">>, port(Web)}, {<<"db">>, port(Db)}, {<<"cache">>, port(Cache)},
                 {<<"mail">>, Mail}, {<<"legacy">>, Legacy}],
    [ok = gen_server:call({probes, Node},
                          {put, Id, [{payload, #{host => <<"127.0.0.1">>, port => P, timeout_ms => 200}},
                                     {timeout, 500}]})
     || {Id, P} <- Endpoints],
    io:format("put ~B probes; every 500 ms each one connects to its endpoint~n", [length(Endpoints)]),
    LegacyListener = rounds(Node, 1, Db, Legacy, undefined),
    Stats = gen_server:call({probes, Node}, stats),
    io:format("~nmanager stats: ~B performs, p50 lateness ~B us, p99 ~B us~n",
              [maps:get(performs, Stats), maps:get(lateness_p50_us, Stats),
               maps:get(lateness_p99_us, Stats)]),
    [catch gen_tcp:close(S) || S <- [Web, Cache, LegacyListener]],
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {Port, {exit_status, S}} -> io:format("C node stopped (exit status ~B)~n", [S])
    after 10000 -> io:format("C node did not stop~n")
    end,
    halt(0).

rounds(_Node, R, _Db, _Legacy, L) when R > ?ROUNDS -> L;
rounds(Node, R, Db, Legacy, L0) ->
    timer:sleep(?EVERY_MS),
    L = case R of
            4 ->
                io:format("~n>>> closing the db endpoint~n"),
                gen_tcp:close(Db),
                L0;
            6 ->
                io:format("~n>>> the legacy endpoint starts listening~n"),
                {ok, S} = serve(gen_tcp:listen(Legacy, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}])),
                S;
            _ -> L0
        end,
    table(R, gen_server:call({probes, Node}, state)),
    rounds(Node, R + 1, Db, Legacy, L).

table(Round, #{state := State, children := Children}) ->
    io:format("~nround ~B, manager ~s~n", [Round, State]),
    io:format("  ~-8s ~-6s ~12s  ~-12s  ~s~n", ["id", "status", "latency_us", "checked_at", "error"]),
    [row(Id, C) || {Id, C} <- lists:sort(maps:to_list(Children))],
    ok.

row(Id, #{value := #{status := St, latency_us := L, checked_at := At, error := E}}) ->
    io:format("  ~-8s ~-6s ~12B  ~-12s  ~p~n", [Id, St, L, time_of(At), E]);
row(Id, _) ->
    io:format("  ~-8s (not checked yet)~n", [Id]).

time_of(#{hour := H, minute := M, second := S, microsecond := {Us, _}}) ->
    io_lib:format("~2..0B:~2..0B:~2..0B.~3..0B", [H, M, S, Us div 1000]).

listen() -> serve(gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}])).

%% Accepts and closes every connection, as a small server would; without
%% it the backlog fills and later probes time out.
serve({ok, L}) ->
    spawn(fun() -> accept_loop(L) end),
    {ok, L};
serve(Error) -> Error.

accept_loop(L) ->
    case gen_tcp:accept(L) of
        {ok, S} -> gen_tcp:close(S), accept_loop(L);
        {error, _} -> ok
    end.

port(S) -> {ok, P} = inet:port(S), P.

closed_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    P = port(S),
    gen_tcp:close(S),
    P.
