%% @doc `make bench`: workloads of DESIGN.md against the real C node, read
%% from the node's own stats and from /proc. Not part of `make test`.
%%
%% W1 scale: N counter workers at timeout 1000 ms. Reports RSS per worker
%% beyond an empty node, CPU share (cores) while ticking, performs/s
%% achieved against expected, and tick lateness p50/p99/max.
-module(bench).
-export([main/1]).

-define(WINDOW_MS, 10000).

main(Args) ->
    Sizes = case Args of [] -> [100000, 1000000]; _ -> [list_to_integer(A) || A <- Args] end,
    Bin = filename:absname("priv/tarearbol_cnode"),
    Empty = start(Bin, "empty", "counters=counter,children=0,timeout=1000"),
    wait_started(Empty, 0, 60000),
    RssEmpty = rss_kb(Empty),
    stop(Empty),
    Rows = [w1(Bin, N, RssEmpty) || N <- Sizes],
    io:format("~n~-10s ~12s ~10s ~12s ~10s ~10s ~10s ~10s ~10s~n",
              ["workers", "boot_ms", "B/worker", "performs/s", "achieved", "cpu_cores",
               "p50_us", "p99_us", "max_us"]),
    [io:format("~-10B ~12B ~10.1f ~12.1f ~9.2f% ~10.3f ~10B ~10B ~10B~n",
               [maps:get(workers, R), maps:get(boot_ms, R), maps:get(bytes_per_worker, R),
                maps:get(performs_per_s, R), 100 * maps:get(achieved, R),
                maps:get(cpu_cores, R), maps:get(p50_us, R), maps:get(p99_us, R),
                maps:get(max_us, R)]) || R <- Rows],
    Json = ["{\"w1\": [", lists:join(",", [json(R) || R <- Rows]), "]}\n"],
    ok = filelib:ensure_dir("test/bench/results/x"),
    ok = file:write_file("test/bench/results/w1.json", Json),
    io:format("~nwritten test/bench/results/w1.json~n"),
    halt(0).

json(M) ->
    ["{", lists:join(",", [io_lib:format("\"~s\": ~p", [K, V]) || {K, V} <- lists:sort(maps:to_list(M))]), "}"].

w1(Bin, N, RssEmpty) ->
    Name = "w1_" ++ integer_to_list(N),
    T0 = erlang:monotonic_time(millisecond),
    C = start(Bin, Name, "counters=counter,children=" ++ integer_to_list(N) ++ ",timeout=1000"),
    wait_started(C, N, 600000),
    BootMs = erlang:monotonic_time(millisecond) - T0,
    %% Let the schedule spread and the allocator settle, then measure.
    timer:sleep(3000),
    S0 = stats(C),
    Cpu0 = cpu_ticks(C),
    W0 = erlang:monotonic_time(millisecond),
    timer:sleep(?WINDOW_MS),
    S1 = stats(C),
    Cpu1 = cpu_ticks(C),
    W1 = erlang:monotonic_time(millisecond),
    Secs = (W1 - W0) / 1000,
    Performs = maps:get(performs, S1) - maps:get(performs, S0),
    Rss = rss_kb(C),
    R = #{workers => N, boot_ms => BootMs,
          rss_kb => Rss, rss_empty_kb => RssEmpty,
          bytes_per_worker => (Rss - RssEmpty) * 1024 / max(N, 1),
          performs_per_s => Performs / Secs,
          achieved => Performs / (N * Secs),
          cpu_cores => (Cpu1 - Cpu0) / clk_tck() / Secs,
          p50_us => maps:get(lateness_p50_us, S1),
          p99_us => maps:get(lateness_p99_us, S1),
          max_us => maps:get(lateness_max_us, S1)},
    stop(C),
    R.

start(Bin, Name, Manager) ->
    Port = open_port({spawn_executable, Bin},
                     [{args, ["--sname", Name, "--log-level", "warning", "--manager", Manager]},
                      {env, [{"TAREARBOL_CNODE_COOKIE", atom_to_list(erlang:get_cookie())}]},
                      exit_status, {line, 1024}, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    receive {Port, {data, {eol, <<"READY ", Node/binary>>}}} ->
        #{port => Port, node => binary_to_atom(Node), os_pid => OsPid}
    after 30000 -> error(not_ready)
    end.

stop(#{port := Port, os_pid := OsPid}) ->
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {Port, {exit_status, _}} -> ok after 60000 -> ok end.

stats(#{node := N}) -> gen_server:call({counters, N}, stats, 60000).

wait_started(C, N, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_started_loop(C, N, Deadline).

wait_started_loop(C, N, Deadline) ->
    S = stats(C),
    case maps:get(state, S) =:= started andalso maps:get(workers, S) >= N of
        true -> ok;
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse error(boot_timeout),
            timer:sleep(50),
            wait_started_loop(C, N, Deadline)
    end.

rss_kb(#{os_pid := P}) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(P) ++ "/status"),
    [_, Rest] = binary:split(B, <<"VmRSS:">>),
    [Num | _] = string:lexemes(binary_to_list(Rest), " \t\n"),
    list_to_integer(Num).

cpu_ticks(#{os_pid := P}) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(P) ++ "/stat"),
    [_, AfterComm] = binary:split(B, <<") ">>),
    F = string:lexemes(binary_to_list(AfterComm), " "),
    %% Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    list_to_integer(lists:nth(12, F)) + list_to_integer(lists:nth(13, F)).

clk_tck() -> 100.
