%% @doc W10, cluster mode: three BEAM peers on this machine, each a
%% member of one cluster manager that launches its own C node (the release
%% binary), N workers per member at 1 Hz; per-member cost over a window;
%% the time to fail over a stopped peer's ids to the two others; and the
%% time for the ids to rebalance when a fourth peer joins. C only: a BEAM
%% baseline cannot start a million workers (W1).
%%
%% make bench runs 3 x 300k (BENCH_CLUSTER sets the size per member). The
%% ids go in through put_many/2 (a transaction per 1000 ids of one owner):
%% put/3, one transaction each, runs at some 3k/s here.
-module(cluster_bench).
-export([run/2]).

-define(M, w10).
-define(WINDOW_MS, 10000).
-define(CALLERS, 2).
-define(BULK, 3000).
-define(HANDOFF_MS, 5000).

run(Bin, PerMember) ->
    Ebin = filename:absname("_build/default/lib/tarearbol_cnode/ebin"),
    Total = 3 * PerMember,
    Peers = [start_member(Bin, Ebin, "w10m" ++ integer_to_list(I)) || I <- [1, 2, 3]],
    try
        [{_, A} | _] = Peers,
        mesh([N || {_, N} <- Peers]),
        await(fun() -> length(erpc:call(A, tarearbol_cnode_cluster, members, [?M])) =:= 3 end, 30000),
        {PutUs, ok} = timer:tc(fun() -> put_all(Peers, Total) end),
        {SingleUs, ok} = timer:tc(fun() -> put_ids(A, lists:seq(Total, Total + 1999)) end),
        ok = erpc:call(A, fun() -> [ok = tarearbol_cnode_cluster:del(?M, I)
                                    || I <- lists:seq(Total, Total + 1999)], ok end, infinity),
        log("W10: ~p ids put in ~p ms", [Total, PutUs div 1000]),
        await(fun() -> total(A) =:= Total end, 120000),
        timer:sleep(3000),
        Cost = window(A, Peers),
        %% Failover: a peer stopped; the two others take its ids.
        [_, {Victim, VNode} | Rest] = Peers,
        T0 = now_ms(),
        peer:stop(Victim),
        [{_, S} | _] = [P || P <- Peers, element(2, P) =/= VNode],
        await(fun() -> catch total(S) =:= Total end, 300000),
        Failover = now_ms() - T0,
        log("W10: failover of ~p ids: ~p ms", [PerMember, Failover]),
        %% Rebalance: a new peer joins; it gets its share, the others give it.
        T1 = now_ms(),
        Joiner = start_member(Bin, Ebin, "w10j"),
        {_, JNode} = Joiner,
        Survivors = [P || P <- Peers, element(2, P) =/= VNode],
        mesh([N || {_, N} <- [Joiner | Survivors]]),
        await(fun() -> balanced(S, Total) end, 300000),
        Rebalance = now_ms() - T1,
        log("W10: rebalance after a join: ~p ms", [Rebalance]),
        %% The last batches' window: the moves are over once no member is
        %% busy with one.
        await(fun() -> idle(S) end, 120000),
        Dups = total(S) - Total,
        Window = lists:max([maps:get(max_window_us, Cs, 0)
                            || #{counters := Cs} <- maps:values(erpc:call(S, tarearbol_cnode_cluster, info, [?M]))]),
        [stop_peer(P) || P <- [Joiner | Survivors]],
        _ = Rest, _ = JNode,
        L = "W10 3 x " ++ integer_to_list(PerMember div 1000) ++ "k ",
        [{L ++ "ids put through put_many, per s", Total / (PutUs / 1.0e6), undefined},
         {L ++ "ids put one by one through put, per s (1 caller)", 2000 / (SingleUs / 1.0e6), undefined},
         {L ++ "C node cpu cores per member", maps:get(cnode_cores, Cost), undefined},
         {L ++ "C node cpu us/perform", maps:get(cnode_us, Cost), undefined},
         {L ++ "C node bytes/worker", maps:get(cnode_bytes, Cost), undefined},
         {L ++ "member BEAM cpu cores (handoffs, Mnesia)", maps:get(beam_cores, Cost), undefined},
         {L ++ "member BEAM MB (Mnesia copy of all ids)", maps:get(beam_mb, Cost), undefined},
         {L ++ "performs/s, all members", maps:get(performs, Cost), undefined},
         {L ++ "ms to fail over a stopped member's ids", Failover, undefined},
         {L ++ "ms to rebalance after a join (each within 10% of a third)", Rebalance, undefined},
         {L ++ "ids on two C nodes once the moves are over", Dups, undefined},
         {L ++ "longest window of an id on two C nodes, ms", Window / 1000, undefined}]
    catch C:R:St ->
        log("W10 failed: ~p", [{C, R, St}]),
        [catch stop_peer(P) || P <- Peers],
        []
    end.

%% ---- members ---------------------------------------------------------------

start_member(Bin, Ebin, Prefix) ->
    Name = Prefix ++ "_" ++ os:getpid(),
    {ok, P, Node} = peer:start(#{name => Name,
                                 args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                                          "-pa", Ebin,
                                          "-pa", filename:dirname(code:which(?MODULE))]}),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [tarearbol_cnode]),
    [erpc:call(Node, net_kernel, connect_node, [N]) || N <- nodes(), N =/= Node],
    Opts = #{name => ?M, handoff_ms => ?HANDOFF_MS,
             node => #{name => Name ++ "_c", binary => Bin, threads => 1,
                       managers => [atom_to_list(?M) ++ "=counter"]}},
    {ok, _} = erpc:call(Node, tarearbol_cnode_cluster, start_member, [Opts], 120000),
    {P, Node}.

stop_peer({P, _}) -> catch peer:stop(P).

mesh(Nodes) ->
    [erpc:call(A, net_kernel, connect_node, [B]) || A <- Nodes, B <- Nodes, A =/= B],
    ok.

%% The ids, put from every member at once, ?CALLERS callers each, with
%% put_many/2 in lists of ?BULK.
put_all(Peers, Total) ->
    Parts = length(Peers) * ?CALLERS,
    Self = self(),
    Pids = [begin
                {_, Node} = lists:nth(K rem length(Peers) + 1, Peers),
                spawn_link(fun() ->
                                   Ids = lists:seq(K, Total - 1, Parts),
                                   ok = erpc:call(Node, fun() -> put_many(Ids) end, infinity),
                                   Self ! {self(), done}
                           end)
            end || K <- lists:seq(0, Parts - 1)],
    [receive {P, done} -> ok end || P <- Pids],
    ok.

put_many([]) -> ok;
put_many(Ids) ->
    {B, Rest} = lists:split(min(?BULK, length(Ids)), Ids),
    [ok] = lists:usort(tarearbol_cnode_cluster:put_many(?M, [{I, [{payload, 0}, {timeout, 1000}]} || I <- B])),
    put_many(Rest).

%% Puts one by one, from one caller on Node.
put_ids(Node, Ids) ->
    erpc:call(Node, fun() ->
                            [ok = tarearbol_cnode_cluster:put(?M, I, [{payload, 0}, {timeout, 1000}]) || I <- Ids],
                            ok
                    end, infinity).

%% No member has a move or a restore running.
idle(Via) ->
    lists:all(fun(#{busy := B}) -> not B; (_) -> false end,
              maps:values(erpc:call(Via, tarearbol_cnode_cluster, info, [?M], 30000))).

%% The workers of every member's C node, asked of the C nodes.
counts(Via) ->
    Info = erpc:call(Via, tarearbol_cnode_cluster, info, [?M], 30000),
    [{M, erpc:call(Via, tarearbol_cnode, count, [{?M, C}], 30000)}
     || {M, #{cnode := C}} <- maps:to_list(Info)].

total(Via) -> lists:sum([N || {_, N} <- counts(Via), is_integer(N)]).

balanced(Via, Total) ->
    case catch counts(Via) of
        Cs when is_list(Cs), length(Cs) =:= 3 ->
            Ns = [N || {_, N} <- Cs, is_integer(N)],
            length(Ns) =:= 3 andalso lists:sum(Ns) =:= Total andalso
                lists:all(fun(N) -> abs(N - Total / 3) =< Total * 0.1 / 3 end, Ns);
        _ -> false
    end.

%% ---- the window ------------------------------------------------------------

window(Via, Peers) ->
    Info = erpc:call(Via, tarearbol_cnode_cluster, info, [?M], 30000),
    CNodes = [C || {_, #{cnode := C}} <- maps:to_list(Info)],
    COs = [erpc:call(N, fun() ->
                                [L] = [L0 || {{launcher, _}, L0, _, _} <-
                                                 supervisor:which_children(tarearbol_cnode_sup)],
                                tarearbol_cnode_launcher:os_pid(L)
                        end) || {_, N} <- Peers],
    BOs = [list_to_integer(erpc:call(N, os, getpid, [])) || {_, N} <- Peers],
    Perf0 = [performs(Via, C) || C <- CNodes],
    CC0 = [cpu(P) || P <- COs], BC0 = [cpu(P) || P <- BOs], T0 = now_ms(),
    timer:sleep(?WINDOW_MS),
    Perf1 = [performs(Via, C) || C <- CNodes],
    CC1 = [cpu(P) || P <- COs], BC1 = [cpu(P) || P <- BOs], T1 = now_ms(),
    Secs = (T1 - T0) / 1000,
    Performs = (lists:sum(Perf1) - lists:sum(Perf0)) / Secs,
    CCores = (lists:sum(CC1) - lists:sum(CC0)) / 100 / Secs / length(COs),
    BCores = (lists:sum(BC1) - lists:sum(BC0)) / 100 / Secs / length(BOs),
    Workers = total(Via),
    RssC = lists:sum([rss_kb(P) || P <- COs]) * 1024,
    #{performs => Performs,
      cnode_cores => CCores,
      cnode_us => CCores * length(COs) * 1.0e6 / max(Performs, 1),
      cnode_bytes => RssC / max(Workers, 1),
      beam_cores => BCores,
      beam_mb => lists:sum([rss_kb(P) || P <- BOs]) / 1024 / length(BOs)}.

performs(Via, C) ->
    maps:get(performs, erpc:call(Via, tarearbol_cnode, stats, [{?M, C}], 30000)).

%% ---- helpers ---------------------------------------------------------------

await(F, Ms) -> await(F, now_ms() + Ms, Ms).
await(F, Deadline, Ms) ->
    case F() of
        true -> ok;
        _ ->
            now_ms() < Deadline orelse error({timeout_after_ms, Ms}),
            timer:sleep(100),
            await(F, Deadline, Ms)
    end.

now_ms() -> erlang:monotonic_time(millisecond).

cpu(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    [_, AfterComm] = binary:split(B, <<") ">>),
    F = string:lexemes(binary_to_list(AfterComm), " "),
    list_to_integer(lists:nth(12, F)) + list_to_integer(lists:nth(13, F)).

rss_kb(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    [_, Rest] = binary:split(B, <<"VmRSS:">>),
    [Num | _] = string:lexemes(binary_to_list(Rest), " \t\n"),
    list_to_integer(Num).

log(F, A) -> io:format(standard_error, F ++ "~n", A).
