%% @doc Placement of a cluster manager's ids on its members: rendezvous
%% (highest random weight) hashing, pure.
%%
%% The owner of Id among Members is the member with the greatest
%% `erlang:phash2({Id, Member})', ties broken by the greater member. Every
%% member computes the same owner from the same member list, whatever its
%% order, with nothing to agree on beforehand. Adding one member to K moves
%% exactly the ids whose greatest weight is the newcomer's, about 1/(K+1)
%% of them, and only to it; removing one moves only that member's ids,
%% spread over the others. A ring with virtual nodes would need a table per
%% membership; here an owner costs K hashes, cheap for the tens of members a
%% cluster of C nodes has.
-module(tarearbol_cnode_cluster_place).

-export([owner/2, owners/2]).

%% @doc The member that owns Id; `undefined' when there is no member.
-spec owner(term(), [node()]) -> node() | undefined.
owner(_Id, []) ->
    undefined;
owner(Id, [M | Ms]) ->
    best(Id, Ms, M, erlang:phash2({Id, M})).

best(_Id, [], Best, _W) ->
    Best;
best(Id, [M | Ms], Best, W) ->
    case erlang:phash2({Id, M}) of
        W1 when W1 > W; W1 =:= W, M > Best -> best(Id, Ms, M, W1);
        _ -> best(Id, Ms, Best, W)
    end.

%% @doc The ids grouped by owner: a map of member to its ids (in the order
%% given); empty when there is no member.
-spec owners([term()], [node()]) -> #{node() => [term()]}.
owners(_Ids, []) ->
    #{};
owners(Ids, Members) ->
    maps:map(fun(_, L) -> lists:reverse(L) end,
             lists:foldl(fun(Id, Acc) ->
                                 O = owner(Id, Members),
                                 maps:update_with(O, fun(L) -> [Id | L] end, [Id], Acc)
                         end, #{}, Ids)).
