%% @doc The application's documentation is where h/1,2 (erl) and h
%% (iex) find it: doc chunks next to its ebin, written by the build, with a
%% doc for the module and for every exported function, and nothing for
%% what it does not export.
-module(docs_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0,
         the_build_puts_doc_chunks_next_to_ebin/1,
         every_exported_function_has_a_doc_and_nothing_else_is_listed/1,
         h_in_an_erl_shell_shows_put/1]).

all() ->
    [the_build_puts_doc_chunks_next_to_ebin,
     every_exported_function_has_a_doc_and_nothing_else_is_listed,
     h_in_an_erl_shell_shows_put].

modules() ->
    _ = application:load(tarearbol_cnode),
    {ok, Mods} = application:get_key(tarearbol_cnode, modules),
    Mods.

lib_dir() -> filename:absname(code:lib_dir(tarearbol_cnode), os:getenv("PWD")).

the_build_puts_doc_chunks_next_to_ebin(_Config) ->
    Mods = modules(),
    ?assert(lists:member(tarearbol_cnode, Mods), Mods),
    [?assert(filelib:is_regular(filename:join([lib_dir(), "doc", "chunks", atom_to_list(M) ++ ".chunk"])),
             {no_chunk, M, lib_dir()})
     || M <- Mods],
    {ok, {docs_v1, _, erlang, <<"application/erlang+html">>, #{<<"en">> := ModDoc}, _, Docs}} =
        code:get_doc(tarearbol_cnode),
    ?assertNotEqual([], ModDoc),
    {_, _, Sig, #{<<"en">> := PutDoc}, Meta} = lists:keyfind({function, put, 3}, 1, Docs),
    ?assertNotEqual([], Sig),
    ?assertMatch(#{signature := [_]}, Meta),
    ?assertNotEqual(nomatch, string:find(text(PutDoc), "starts the worker Id")).

every_exported_function_has_a_doc_and_nothing_else_is_listed(_Config) ->
    [begin
         {ok, {docs_v1, _, erlang, _, #{<<"en">> := MD}, _, Docs}} = code:get_doc(M),
         ?assertNotEqual([], MD, M),
         Exported = lists:sort([{function, F, A} || {F, A} <- M:module_info(exports),
                                                    F =/= module_info]),
         Listed = lists:sort([K || {{function, _, _} = K, _, _, _, _} <- Docs]),
         ?assertEqual(Exported, Listed, M),
         [?assertMatch({K, #{<<"en">> := [_ | _]}}, {K, D}) || {K, _, _, D, _} <- Docs]
     end || M <- modules()].

%% What a user types: h/2 in a fresh shell, on the application's code path.
h_in_an_erl_shell_shows_put(_Config) ->
    Ebin = filename:join(lib_dir(), "ebin"),
    Out = os:cmd("erl -noshell -pa '" ++ Ebin ++ "' -eval 'c:h(tarearbol_cnode, put), "
                 "c:h(tarearbol_cnode), halt().' 2>&1"),
    ct:log("~s", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "-spec put("), Out),
    ?assertNotEqual(nomatch, string:find(Out, "(Re)starts the worker Id"), Out),
    ?assertNotEqual(nomatch, string:find(Out, "Client API of tarearbol_cnode"), Out),
    ?assertEqual(nomatch, string:find(Out, "no documentation"), Out).

text(Doc) when is_binary(Doc) -> binary_to_list(Doc);
text(Doc) when is_list(Doc) -> lists:flatten([text(D) || D <- Doc]);
text({_, _, Content}) -> text(Content).
