%% @doc `make demo`: the seed's dashboard, live. The tarearbol_cnode
%% application starts a C node running a `probe` manager; this BEAM node opens a few endpoints on 127.0.0.1 (some
%% listening, some not), puts one probe per endpoint, and prints the state
%% the C node keeps for them, while one endpoint goes down and another
%% comes up. Everything runs on this machine and stops by itself.
-module(demo).
-export([main/0]).

-define(ROUNDS, 10).
-define(EVERY_MS, 700).

main() ->
    %% The application runs the C node: the launcher starts the binary from
    %% priv, passes the cookie in the environment and waits for READY.
    {ok, _} = application:ensure_all_started(tarearbol_cnode),
    logger:set_application_level(tarearbol_cnode, warning),
    Name = "demo_cnode_" ++ os:getpid(),
    {ok, Node} = tarearbol_cnode:start_node(#{name => Name,
                                               managers => ["probes=probe,timeout=500"],
                                               args => ["--log-level", "warning"]}),
    #{creation := _, version := Vsn} = tarearbol_cnode:info(Node),
    io:format("C node ~s (version ~s) is up under the tarearbol_cnode application~n", [Node, Vsn]),
    M = {probes, Node},
    {ok, Web} = listen(),
    {ok, Db} = listen(),
    {ok, Cache} = listen(),
    Mail = closed_port(),
    Legacy = closed_port(),
    Endpoints = [{<<"web">>, port(Web)}, {<<"db">>, port(Db)}, {<<"cache">>, port(Cache)},
                 {<<"mail">>, Mail}, {<<"legacy">>, Legacy}],
    [ok = tarearbol_cnode:put(M, Id, [{payload, #{host => <<"127.0.0.1">>, port => P, timeout_ms => 200}},
                                      {timeout, 500}])
     || {Id, P} <- Endpoints],
    io:format("put ~B probes; every 500 ms each one connects to its endpoint~n", [length(Endpoints)]),
    LegacyListener = rounds(M, 1, Db, Legacy, undefined),
    Stats = tarearbol_cnode:stats(M),
    io:format("~nmanager stats: ~B performs, p50 lateness ~B us, p99 ~B us~n",
              [maps:get(performs, Stats), maps:get(lateness_p50_us, Stats),
               maps:get(lateness_p99_us, Stats)]),
    [catch gen_tcp:close(S) || S <- [Web, Cache, LegacyListener]],
    ok = tarearbol_cnode:stop_node(Name),
    io:format("C node stopped~n"),
    halt(0).

rounds(_M, R, _Db, _Legacy, L) when R > ?ROUNDS -> L;
rounds(M, R, Db, Legacy, L0) ->
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
    table(R, tarearbol_cnode:state(M)),
    rounds(M, R + 1, Db, Legacy, L).

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
