%% @doc Client API of a tarearbol_cnode C node.
%%
%% Node is the C node's name (`name@host'); every call goes to the node's
%% `tarearbol_cnode' service with an ordinary gen_server call.
-module(tarearbol_cnode).

-export([info/1, stats/1]).

-define(TIMEOUT, 5000).

%% @doc The node's identity and health: node, version, creation, uptime_ms,
%% port, pid, peers and managers.
-spec info(node()) -> {ok, map()} | {error, term()}.
info(Node) ->
    call(Node, info).

%% @doc The node's counters (connections, packets, bytes, ticks, bad input).
-spec stats(node()) -> {ok, map()} | {error, term()}.
stats(Node) ->
    call(Node, stats).

-spec call(node(), term()) -> {ok, term()} | {error, term()}.
call(Node, Request) ->
    try gen_server:call({tarearbol_cnode, Node}, Request, ?TIMEOUT) of
        {error, _} = Error -> Error;
        Reply -> {ok, Reply}
    catch
        exit:{{nodedown, _}, _} -> {error, nodedown};
        exit:{timeout, _} -> {error, timeout};
        exit:{noproc, _} -> {error, noproc};
        exit:{Reason, _} -> {error, Reason}
    end.
