#!/usr/bin/env escript
%% Writes the doc chunks of erl/src/*.erl (EEP 48, edoc_doclet_chunks)
%% into the application's doc/chunks, next to its ebin: where
%% code:get_doc/1 (h/1,2 in erl) and Code.fetch_docs/1 (h in iex) look for
%% them, in a checkout and in a project that depends on this one alike.
%%
%%   escript erl/doc_chunks.escript [OUT_DIR]
%%
%% Run from the application's directory: by rebar3's compile post_hook,
%% which gives no OUT_DIR (it is found from rebar3's environment), and by
%% mix.exs, which gives Mix.Project.app_path(). Chunks newer than their
%% sources are left alone, so a compile with nothing new costs no edoc run.
-mode(compile).

main([]) -> main([rebar3_out_dir()]);
main([Out]) ->
    Dir = filename:join([Out, "doc", "chunks"]),
    Srcs = filelib:wildcard("erl/src/*.erl"),
    Stale = [S || S <- Srcs, stale(S, Dir)],
    case Stale of
        [] -> ok;
        _ -> write(Srcs, filename:join(Out, "doc"))
    end.

%% Every source again when one changed: a type or a link in one module
%% may be another's.
write(Srcs, Out) ->
    Opts = [{doclet, edoc_doclet_chunks}, {layout, edoc_layout_chunks},
            {preprocess, true}, {dir, Out}],
    case catch edoc:files(Srcs, Opts) of
        ok ->
            [only_exported(filename:join([Out, "chunks", filename:basename(S, ".erl") ++ ".chunk"]),
                           filename:join([filename:dirname(Out), "ebin",
                                          filename:basename(S, ".erl") ++ ".beam"]))
             || S <- Srcs],
            ok;
        Error ->
            io:format(standard_error, "doc_chunks: edoc failed: ~p~n", [Error]),
            halt(1)
    end.

%% The edoc of OTP 25 lists every function and type in a chunk, exported
%% or not, so h/2 would show private helpers ("There is no documentation
%% for call/2"). What the beam does not export is dropped.
only_exported(Chunk, Beam) ->
    {ok, Bin} = file:read_file(Chunk),
    {docs_v1, A, L, F, MD, Meta, Entries} = binary_to_term(Bin),
    {ok, {_, [{exports, Exports}, {abstract_code, Code}]}} =
        beam_lib:chunks(Beam, [exports, abstract_code]),
    Types = case Code of
                {raw_abstract_v1, Forms} ->
                    lists:append([Ts || {attribute, _, export_type, Ts} <- Forms]);
                _ -> all
            end,
    Keep = fun({{function, N, Ar}, _, _, _, _}) -> lists:member({N, Ar}, Exports);
              ({{type, N, Ar}, _, _, _, _}) -> Types =:= all orelse lists:member({N, Ar}, Types);
              (_) -> true
           end,
    ok = file:write_file(Chunk, term_to_binary({docs_v1, A, L, F, MD, Meta,
                                                lists:filter(Keep, Entries)})).

stale(Src, Dir) ->
    Chunk = filename:join(Dir, filename:basename(Src, ".erl") ++ ".chunk"),
    filelib:last_modified(Chunk) < filelib:last_modified(Src).

%% rebar3 builds an application into REBAR_DEPS_DIR/tarearbol_cnode (the
%% top-level project and a git dependency) or, from _checkouts, into
%% REBAR_CHECKOUTS_OUT_DIR/tarearbol_cnode. The hook runs in the
%% application's source directory, which says neither (a _checkouts entry
%% is often a symlink), so the one holding the freshest beam is it.
rebar3_out_dir() ->
    Candidates = [filename:join(D, "tarearbol_cnode")
                  || V <- ["REBAR_CHECKOUTS_OUT_DIR", "REBAR_DEPS_DIR"],
                     D <- [os:getenv(V)], D =/= false],
    Built = [{filelib:last_modified(filename:join([C, "ebin", "tarearbol_cnode.beam"])), C}
             || C <- Candidates],
    case lists:reverse(lists:sort([B || {T, _} = B <- Built, T =/= 0])) of
        [{_, Out} | _] -> Out;
        [] ->
            io:format(standard_error, "doc_chunks: no tarearbol_cnode.beam in ~p~n", [Candidates]),
            halt(1)
    end.
