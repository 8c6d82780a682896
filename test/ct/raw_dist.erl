%% @doc A minimal client side of the Erlang distribution handshake over
%% gen_tcp, for tests that must send frames no BEAM node would: after
%% connect/3 the socket is raw, so a test can write broken length prefixes,
%% undecodable control terms or unknown operations, and read what comes
%% back. It talks to real nodes on 127.0.0.1 only.
%%
%% The made-up node name and creation of a connection are kept in the
%% calling process's dictionary under {raw_dist, Sock}; fake_pid/2 builds
%% pids of that node.
-module(raw_dist).

-export([connect/3, flags/0, frame/2, send_frame/3, send_raw/2, recv_frame/2, recv_until/3,
         gen_call/5, fake_pid/2, close/1]).

-define(FLAGS, (16#04 bor 16#08 bor 16#10 bor 16#80 bor 16#100 bor 16#200 bor
                16#400 bor 16#800 bor 16#4000 bor 16#10000 bor 16#20000 bor
                16#40000 bor 16#01000000 bor 16#02000000 bor 16#04000000 bor
                (16#04 bsl 32))).

%% @doc The distribution flags connect/3 sends unless told otherwise.
-spec flags() -> non_neg_integer().
flags() -> ?FLAGS.

%% @doc Connects and runs the handshake. Opts: timeout, port, name,
%% flags (the send_name's flags, ?FLAGS by default), and alive (answer
%% true to an `alive' status, replacing the node's connection of the same
%% name; false by default, which fails with {status, <<"alive">>}).
-spec connect(node(), atom() | string(), map()) -> {ok, gen_tcp:socket()} | {error, term()}.
connect(Node, Cookie0, Opts) ->
    Cookie = if is_atom(Cookie0) -> atom_to_list(Cookie0); true -> Cookie0 end,
    [Alive, Host] = string:split(atom_to_list(Node), "@"),
    Timeout = maps:get(timeout, Opts, 5000),
    Port = case maps:get(port, Opts, undefined) of
               undefined ->
                   case erl_epmd:port_please(Alive, Host) of
                       {port, P, _} -> P;
                       _ -> undefined
                   end;
               P -> P
           end,
    Name = maps:get(name, Opts, list_to_atom("rawdist" ++ integer_to_list(erlang:unique_integer([positive]))
                                             ++ "@" ++ Host)),
    Creation = 16#10000 + erlang:unique_integer([positive]) rem 16#1000000,
    case Port of
        undefined -> {error, no_port};
        _ ->
            case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {packet, 2}], Timeout) of
                {ok, S} ->
                    Flags = maps:get(flags, Opts, ?FLAGS),
                    case handshake(S, Name, Flags, Creation, Cookie, Timeout,
                                   maps:get(alive, Opts, false)) of
                        ok ->
                            ok = inet:setopts(S, [{packet, raw}]),
                            put({raw_dist, S}, {Name, Creation}),
                            {ok, S};
                        Error ->
                            gen_tcp:close(S),
                            Error
                    end;
                Error -> Error
            end
    end.

%% Alive: what to answer a node that says it is connected to this name
%% already (true: that connection is stale and goes).
handshake(S, Name, Flags, Creation, Cookie, Timeout, Alive) ->
    NameB = atom_to_binary(Name),
    ok = gen_tcp:send(S, <<$N, Flags:64, Creation:32, (byte_size(NameB)):16, NameB/binary>>),
    case gen_tcp:recv(S, 0, Timeout) of
        {ok, <<$s, "ok", _/binary>>} -> challenge(S, Cookie, Timeout);
        {ok, <<$s, "alive">>} when Alive ->
            ok = gen_tcp:send(S, <<"strue">>),
            challenge(S, Cookie, Timeout);
        {ok, <<$s, Status/binary>>} -> {error, {status, Status}};
        {ok, Other} -> {error, {unexpected, Other}};
        Error -> Error
    end.

challenge(S, Cookie, Timeout) ->
    Their = case gen_tcp:recv(S, 0, Timeout) of
                {ok, <<$N, _Flags:64, C:32, _Cr:32, _/binary>>} -> C;
                {ok, <<$n, _Vsn:16, _Flags:32, C:32, _/binary>>} -> C;
                Other -> {error, Other}
            end,
    case Their of
        {error, _} = E -> E;
        _ ->
            Ours = rand:uniform(16#7fffffff),
            ok = gen_tcp:send(S, <<$r, Ours:32, (digest(Cookie, Their))/binary>>),
            Want = digest(Cookie, Ours),
            case gen_tcp:recv(S, 0, Timeout) of
                {ok, <<$a, Want:16/binary>>} -> ok;
                {ok, <<$a, _/binary>>} -> {error, bad_digest};
                {ok, Other2} -> {error, {unexpected, Other2}};
                Error -> Error
            end
    end.

digest(Cookie, Challenge) ->
    erlang:md5([Cookie, integer_to_list(Challenge)]).

%% @doc A frame: length, 112, the control term, and the message unless none.
%% @doc One pass-through frame, length prefix included; several can go
%% out in one write with send_raw/2.
-spec frame(term(), term() | none) -> iolist().
frame(Control, Msg) ->
    Body = [112, term_to_binary(Control) | case Msg of none -> []; _ -> [term_to_binary(Msg)] end],
    [<<(iolist_size(Body)):32>> | Body].

-spec send_frame(gen_tcp:socket(), term(), term() | none) -> ok | {error, term()}.
send_frame(S, Control, Msg) ->
    send_raw(S, frame(Control, Msg)).

-spec send_raw(gen_tcp:socket(), iodata()) -> ok | {error, term()}.
send_raw(S, Data) -> gen_tcp:send(S, Data).

-spec recv_frame(gen_tcp:socket(), timeout()) ->
    {ok, tick | {term(), term() | none}} | {error, term()}.
recv_frame(S, Timeout) ->
    case gen_tcp:recv(S, 4, Timeout) of
        {ok, <<0:32>>} -> {ok, tick};
        {ok, <<Len:32>>} ->
            case gen_tcp:recv(S, Len, Timeout) of
                {ok, <<112, Rest/binary>>} ->
                    {Control, Used} = binary_to_term(Rest, [used]),
                    case Rest of
                        <<_:Used/binary>> -> {ok, {Control, none}};
                        <<_:Used/binary, MsgB/binary>> -> {ok, {Control, binary_to_term(MsgB)}}
                    end;
                {ok, Other} -> {error, {not_pass_through, Other}};
                Error -> Error
            end;
        Error -> Error
    end.

%% @doc Skips ticks and frames Pred rejects, until the deadline.
-spec recv_until(gen_tcp:socket(), fun((term()) -> boolean()), timeout()) ->
    {ok, term()} | {error, term()}.
recv_until(S, Pred, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    recv_loop(S, Pred, Deadline).

recv_loop(S, Pred, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    case recv_frame(S, Left) of
        {ok, tick} -> recv_loop(S, Pred, Deadline);
        {ok, Frame} ->
            case Pred(Frame) of
                true -> {ok, Frame};
                false -> recv_loop(S, Pred, Deadline)
            end;
        Error -> Error
    end.

%% @doc A gen_server call by hand: REG_SEND, then the SEND with the reply.
-spec gen_call(gen_tcp:socket(), pid(), atom(), term(), timeout()) -> {ok, term()} | {error, term()}.
gen_call(S, From, To, Request, Timeout) ->
    Ref = make_ref(),
    ok = send_frame(S, {6, From, '', To}, {'$gen_call', {From, Ref}, Request}),
    case recv_until(S, fun({{2, _, P}, {R, _}}) -> P =:= From andalso R =:= Ref;
                          (_) -> false end, Timeout) of
        {ok, {_, {Ref, Reply}}} -> {ok, Reply};
        Error -> Error
    end.

%% @doc A pid of the connection's made-up node.
-spec fake_pid(gen_tcp:socket(), non_neg_integer()) -> pid().
fake_pid(S, Id) ->
    {Name, Creation} = get({raw_dist, S}),
    NameB = atom_to_binary(Name),
    binary_to_term(<<131, 88, 119, (byte_size(NameB)), NameB/binary, Id:32, 0:32, Creation:32>>).

-spec close(gen_tcp:socket()) -> ok.
close(S) ->
    erase({raw_dist, S}),
    gen_tcp:close(S).
