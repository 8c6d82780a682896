%% @doc Every example of README.md runs as written: the command lines of
%% its ```sh blocks start real nodes (the cookie in them included), the
%% erl sessions of its ```erlang blocks run against them, and each result
%% is matched against the output the README shows.
%%
%% A section (a `##' or `###' heading) is one session: its nodes are
%% started by its sh blocks, in order, and stopped at its end; its erlang
%% blocks share their bindings. The README's names are its own: `cnode',
%% `other' (C nodes) and `a' (the erl shell, which is this node), each
%% `@host'; they are mapped to unique names here, and the cookie of the
%% shell (`erl -sname a -setcookie C') is the one this node uses towards
%% the section's nodes. Shown output is a pattern: `...' stands for any
%% term (and, last in a map, for the other keys), a pid for any pid, `%'
%% starts a comment, and `** exception Class: Reason' for a raise.
%%
%% Other command lines (openssl, printf, a `cat > F <<END' here-document)
%% run in the section's directory, where its nodes run too. An erl shell
%% started with `-proto_dist inet_tls' cannot be this node: it is a TLS
%% peer, and the section's erlang blocks run on it.
-module(readme_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         every_erlang_example_of_the_readme_runs_as_written/1,
         the_readme_still_has_its_examples/1,
         every_option_the_node_takes_is_in_the_options_table_and_its_usage/1]).

all() ->
    [the_readme_still_has_its_examples,
     every_option_the_node_takes_is_in_the_options_table_and_its_usage,
     every_erlang_example_of_the_readme_runs_as_written].

init_per_suite(Config) ->
    %% The README's application session starts the application itself.
    _ = application:stop(tarearbol_cnode),
    [{readme, filename:join(cnode_test:root(), "README.md")} | Config].

end_per_suite(_Config) ->
    _ = application:stop(tarearbol_cnode),
    ok.

%% A README that lost its fences would make the other case pass on
%% nothing: the sections with sessions are the ones it is known to have.
the_readme_still_has_its_examples(Config) ->
    Sections = [{Title, Blocks} || {Title, Blocks} <- sections(?config(readme, Config)),
                                   lists:keymember(erlang, 1, Blocks)],
    Titles = [T || {T, _} <- Sections],
    ct:log("sections with erl sessions: ~p", [Titles]),
    [?assert(lists:member(T, Titles), {missing_section, T, Titles})
     || T <- ["Running a node by hand", "Managers", "Hidden node, and rpc", "TLS distribution",
              "From an Erlang application", "Write your own behaviour in 30 lines"]],
    ?assertMatch([_, _, _, _, _ | _], Titles),
    %% The first two commands stay at the very top.
    {ok, Readme} = file:read_file(?config(readme, Config)),
    [_Title, <<>>, Demo, Test | _] = binary:split(Readme, <<"\n">>, [global]),
    ?assertMatch(<<"    make demo", _/binary>>, Demo),
    ?assertMatch(<<"    make test", _/binary>>, Test).

%% main.c's getopt table is what the node takes; the README's options
%% table (rows starting with an option) and --help must say the same.
every_option_the_node_takes_is_in_the_options_table_and_its_usage(Config) ->
    {ok, Main} = file:read_file(filename:join([cnode_test:root(), "c_src", "main.c"])),
    {match, Taken0} = re:run(Main, "\\{\"([a-z-]+)\", (?:required|no|optional)_argument",
                             [global, {capture, all_but_first, list}]),
    Taken = lists:usort(lists:append(Taken0)),
    ?assert(length(Taken) >= 17, Taken),
    {ok, Readme} = file:read_file(?config(readme, Config)),
    {match, Rows} = re:run(Readme, "^\\| (`--.*?) \\|", [global, multiline, {capture, all_but_first, list}]),
    {match, InTable0} = re:run(lists:append(lists:append(Rows)), "`--([a-z-]+)",
                               [global, {capture, all_but_first, list}]),
    InTable = lists:usort(lists:append(InTable0)),
    ?assertEqual(Taken, InTable),
    Usage = os:cmd(cnode_test:bin() ++ " --help; echo exit=$?"),
    [?assertNotEqual(nomatch, string:find(Usage, "--" ++ O), {not_in_usage, O, Usage}) || O <- Taken],
    ?assertNotEqual(nomatch, string:find(Usage, "exit=0"), Usage).

every_erlang_example_of_the_readme_runs_as_written(Config) ->
    Sections = [S || {_, Blocks} = S <- sections(?config(readme, Config)),
                     lists:keymember(erlang, 1, Blocks)],
    Steps = lists:sum([run_section(S, Config) || S <- Sections]),
    ct:log("~b shell steps run", [Steps]),
    ?assert(Steps >= 25, Steps).

%% ---------------------------------------------------------------------------
%% A section: its nodes, its session, its cleanup.

%% peer: the TLS shell, when the section starts one; tls_waits: the
%% managers of TLS nodes, whose start only that shell can see.
-record(session, {dir, names, cookie, nodes = [], bindings, files = #{}, steps = 0,
                  peer, tls_waits = []}).

run_section({Title, Blocks}, Config) ->
    ct:log("== ~s", [Title]),
    Dir = filename:join(?config(priv_dir, Config), slug(Title)),
    ok = filelib:ensure_path(Dir),
    %% The behaviour example builds against c_src/include, as from the top.
    _ = file:make_symlink(filename:join(cnode_test:root(), "c_src"), filename:join(Dir, "c_src")),
    [_, Host] = string:split(atom_to_list(node()), "@"),
    [Self, _] = string:split(atom_to_list(node()), "@"),
    Names = #{"cnode" => cnode_test:unique("readme"), "other" => cnode_test:unique("readme_other"),
              "a" => Self, host => Host},
    S0 = #session{dir = Dir, names = Names, bindings = erl_eval:new_bindings()},
    try lists:foldl(fun block/2, S0, Blocks) of
        #session{nodes = Nodes, steps = Steps, peer = Peer} ->
            Peer =:= undefined orelse peer:stop(Peer),
            [cnode_test:stop(C) || C <- Nodes],
            _ = application:stop(tarearbol_cnode),
            Steps
    catch
        C:R:St ->
            _ = application:stop(tarearbol_cnode),
            ct:fail({Title, C, R, St})
    end.

block({c, Text}, S) ->
    %% Named after the file the next cc command compiles (`mine.c').
    S#session{files = maps:put(c, Text, S#session.files)};
block({sh, Text}, S) ->
    lists:foldl(fun command/2, S, commands(Text));
block({erlang, Text}, S) ->
    lists:foldl(fun step/2, S, steps(Text)).

commands(Text) ->
    Joined = re:replace(Text, "\\\\\n\\s*", "", [global, {return, list}]),
    here_docs([string:trim(L) || L <- string:split(Joined, "\n", all),
                                 string:trim(L) =/= "", hd(string:trim(L)) =/= $#]).

%% `cmd <<END', its lines and `END' are one command.
here_docs([]) -> [];
here_docs([L | Rest]) ->
    case re:run(L, "<<([A-Z]+)$", [{capture, all_but_first, list}]) of
        {match, [End]} ->
            {Body, [End | Rest1]} = lists:splitwith(fun(X) -> X =/= End end, Rest),
            [lists:flatten(lists:join("\n", [L | Body] ++ [End])) | here_docs(Rest1)];
        nomatch ->
            [L | here_docs(Rest)]
    end.

command("make all", S) -> S;      % done by make test before this suite
command("epmd -daemon", S) -> S;  % likewise
command("erl " ++ Args, S) ->
    case string:lexemes(Args, " ") of
        ["-sname", "a", "-setcookie", Cookie] ->
            S#session{cookie = list_to_atom(Cookie)};
        ["-sname", "a", "-setcookie", Cookie, "-proto_dist", "inet_tls", "-ssl_dist_optfile", Opt] ->
            tls_shell(Cookie, in_dir(Opt, S#session.dir), S)
    end;
command("cc " ++ _ = Cmd, #session{dir = Dir, files = Files} = S) ->
    [Src] = [W || W <- string:lexemes(Cmd, " "), filename:extension(W) =:= ".c"],
    ok = file:write_file(filename:join(Dir, Src), maps:get(c, Files)),
    Out = os:cmd("cd '" ++ Dir ++ "' && " ++ Cmd ++ " 2>&1; echo rc=$?"),
    ct:log("~s~n~s", [Cmd, Out]),
    ?assertNotEqual(nomatch, string:find(Out, "rc=0"), {Cmd, Out}),
    S;
command("TAREARBOL_CNODE_COOKIE=" ++ Rest = Cmd, #session{names = Names} = S) ->
    ct:log("$ ~s", [Cmd]),
    [Cookie, "priv/tarearbol_cnode" | Args0] = string:lexemes(Rest, " "),
    {Short, Args} = take_sname(Args0, []),
    C = cnode_test:start(maps:get(Short, Names), #{dir => S#session.dir, cd => S#session.dir,
                                                    cookie => Cookie, args => Args}),
    N = cnode_test:node(C),
    %% A user reads READY, then types: by then children_specs is in.
    Managers = [{list_to_atom(M), N} || M <- managers(Args)],
    case lists:member("--tls-cert", Args) of
        true ->
            S#session{nodes = S#session.nodes ++ [C], tls_waits = S#session.tls_waits ++ Managers};
        false ->
            erlang:set_cookie(N, list_to_atom(Cookie)),
            [cnode_test:wait_started(M, 10000) || M <- Managers],
            S#session{nodes = S#session.nodes ++ [C]}
    end;
command(Cmd, S) ->
    [Prog | _] = string:lexemes(Cmd, " "),
    lists:member(Prog, ["openssl", "printf", "cat"]) orelse ct:fail({readme_command_not_understood, Cmd}),
    Out = os:cmd("cd '" ++ S#session.dir ++ "' && " ++ Cmd ++ "\necho rc=$?"),
    ct:log("$ ~s~n~s", [Cmd, Out]),
    ?assertNotEqual(nomatch, string:find(Out, "rc=0"), {Cmd, Out}),
    S.

%% The shell of a TLS section: a peer with TLS distribution, which then
%% sees the section's TLS nodes start.
tls_shell(Cookie, Opt, S) ->
    Ebin = filename:dirname(code:which(tarearbol_cnode)),
    {P, _} = cnode_test:start_peer("readme_tls", ["-setcookie", Cookie, "-proto_dist", "inet_tls",
                                                  "-ssl_dist_optfile", Opt, "-pa", Ebin]),
    [peer:call(P, cnode_test, wait_started, [M, 10000], 15000) || M <- S#session.tls_waits],
    S#session{peer = P, tls_waits = []}.

in_dir(Path, Dir) -> re:replace(Path, "\\$PWD", Dir, [global, {return, list}]).

take_sname(["--sname", Name | Rest], Acc) -> {Name, lists:reverse(Acc, Rest)};
take_sname([A | Rest], Acc) -> take_sname(Rest, [A | Acc]).

managers(["--manager", Spec | Rest]) ->
    [hd(string:split(Spec, "=")) | managers(Rest)];
managers([_ | Rest]) -> managers(Rest);
managers([]) -> [].

%% One prompt: the input (which may run over several lines) and the
%% output shown under it.
steps(Text) ->
    steps(string:split(Text, "\n", all), []).

steps([], Acc) -> lists:reverse(Acc);
steps([Line | Rest], Acc) ->
    case re:run(Line, "^\\d+> (.*)$", [{capture, all_but_first, list}]) of
        {match, [First]} ->
            {Input, Rest1} = input(First ++ "\n", Rest),
            {Output, Rest2} = lists:splitwith(fun(L) -> not prompt(L) end, Rest1),
            steps(Rest2, [{Input, string:trim(lists:join("\n", Output))} | Acc]);
        nomatch ->
            ?assertEqual("", string:trim(Line), {text_outside_a_prompt, Line}),
            steps(Rest, Acc)
    end.

prompt(L) -> re:run(L, "^\\d+> ") =/= nomatch.

input(Acc, Rest) ->
    case erl_scan:tokens([], Acc, 1) of
        {done, {ok, _, _}, _} -> {Acc, Rest};
        {more, _} ->
            [Next | Rest1] = Rest,
            input(Acc ++ Next ++ "\n", Rest1)
    end.

step({Input0, Shown}, #session{bindings = B, names = Names} = S) ->
    Input = rename(Input0, Names),
    [erlang:set_cookie(cnode_test:node(C), S#session.cookie)
     || S#session.cookie =/= undefined, C <- S#session.nodes],
    {ok, Tokens, _} = erl_scan:string(Input),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    Result = try eval(Exprs, B, S#session.peer) of
                 {value, V, B1} -> {value, V, B1}
             catch
                 Class:Reason -> {raised, Class, Reason}
             end,
    ct:log("~s~p~n(shown: ~s)", [Input, case Result of {value, V0, _} -> V0; _ -> Result end, Shown]),
    check(Result, rename(Shown, Names), Input),
    B2 = case Result of {value, _, NewB} -> NewB; _ -> B end,
    S#session{bindings = B2, steps = S#session.steps + 1}.

%% In this node's shell, or on the section's TLS shell.
eval(Exprs, B, undefined) -> erl_eval:exprs(Exprs, B);
eval(Exprs, B, Peer) -> peer:call(Peer, erl_eval, exprs, [Exprs, B], 30000).

check({value, V, _}, "** exception" ++ _ = Shown, Input) ->
    ct:fail({did_not_raise, Input, {shown, Shown}, {got, V}});
check({value, V, _}, Shown, Input) ->
    matches(V, Shown, Input);
check({raised, Class, Reason}, Shown, Input) ->
    case re:run(Shown, "^\\*\\* exception (error|exit|throw): (.*)$",
                [dotall, {capture, all_but_first, list}]) of
        {match, [C, Pattern]} ->
            ?assertEqual(list_to_atom(C), Class, {Input, Reason}),
            matches(Reason, Pattern, Input);
        nomatch ->
            ct:fail({raised, Input, Class, Reason})
    end.

matches(_V, "", Input) -> ct:fail({no_output_shown, Input});
matches(V, Shown, Input) ->
    Pattern = pattern(Shown),
    Match = {match, 1, Pattern, {var, 1, 'Actual__'}},
    try erl_eval:expr(Match, erl_eval:add_binding('Actual__', V, erl_eval:new_bindings())) of
        _ -> ok
    catch
        error:{badmatch, _} -> ct:fail({not_as_shown, Input, {shown, Shown}, {got, V}})
    end.

%% The output as shown, as a pattern.
pattern(Shown) ->
    NoPids = re:replace(Shown, "<\\d+\\.\\d+\\.\\d+>", "_", [global, {return, list}]),
    {ok, Tokens, _} = erl_scan:string(NoPids),
    {ok, [Pattern]} = erl_parse:parse_exprs(ellipses(Tokens, [], []) ++ [{dot, 1}]),
    Pattern.

%% `=>' becomes `:=', `...' a `_', except where it stands for the other
%% keys of a map, which a map pattern leaves out anyway.
ellipses([], _Stack, Out) -> lists:reverse(Out);
ellipses([{'#', _} = H, {'{', _} = O | T], Stack, Out) -> ellipses(T, [map | Stack], [O, H | Out]);
ellipses([{'{', _} = O | T], Stack, Out) -> ellipses(T, [tuple | Stack], [O | Out]);
ellipses([{'[', _} = O | T], Stack, Out) -> ellipses(T, [list | Stack], [O | Out]);
ellipses([{Close, _} = C | T], [_ | Stack], Out) when Close =:= '}'; Close =:= ']' ->
    ellipses(T, Stack, [C | Out]);
ellipses([{'=>', L} | T], Stack, Out) -> ellipses(T, Stack, [{':=', L} | Out]);
ellipses([{'...', L} | T], Stack, [{':=', _} | _] = Out) -> ellipses(T, Stack, [{var, L, '_'} | Out]);
ellipses([{'...', _} | T], [map | _] = Stack, [{',', _} | Out]) -> ellipses(T, Stack, Out);
ellipses([{'...', _}, {',', _} | T], [map | _] = Stack, Out) -> ellipses(T, Stack, Out);
ellipses([{'...', _} | T], [map | _] = Stack, Out) -> ellipses(T, Stack, Out);
ellipses([{'...', L} | T], Stack, Out) -> ellipses(T, Stack, [{var, L, '_'} | Out]);
ellipses([H | T], Stack, Out) -> ellipses(T, Stack, [H | Out]).

%% The README's node names, and "cnode" as the launcher's name, made this
%% run's.
rename(Text, Names) ->
    Host = maps:get(host, Names),
    lists:foldl(
      fun({host, _}, T) -> T;
         ({Short, Real}, T) ->
              T1 = re:replace(T, "'?\\b" ++ Short ++ "@host\\b'?", "'" ++ Real ++ "@" ++ Host ++ "'",
                              [global, {return, list}]),
              re:replace(T1, "\"" ++ Short ++ "\"", "\"" ++ Real ++ "\"", [global, {return, list}])
      end, Text, maps:to_list(Names)).

%% ---------------------------------------------------------------------------
%% README.md as sections of fenced blocks.

sections(File) ->
    {ok, Bin} = file:read_file(File),
    sections(string:split(unicode:characters_to_list(Bin), "\n", all), "(top)", [], []).

sections([], Title, Blocks, Acc) ->
    lists:reverse([{Title, lists:reverse(Blocks)} | Acc]);
sections(["```" ++ Lang | Rest], Title, Blocks, Acc) when Lang =/= "" ->
    {Body, ["```" | Rest1]} = lists:splitwith(fun(L) -> L =/= "```" end, Rest),
    Kind = case Lang of "erlang" -> erlang; "sh" -> sh; "c" -> c; _ -> other end,
    sections(Rest1, Title, [{Kind, lists:flatten(lists:join("\n", Body))} | Blocks], Acc);
sections(["#" ++ _ = Line | Rest], Title, Blocks, Acc) ->
    case re:run(Line, "^###? (.*)$", [{capture, all_but_first, list}]) of
        {match, [New]} -> sections(Rest, New, [], [{Title, lists:reverse(Blocks)} | Acc]);
        nomatch -> sections(Rest, Title, Blocks, Acc)
    end;
sections([_ | Rest], Title, Blocks, Acc) ->
    sections(Rest, Title, Blocks, Acc).

slug(Title) ->
    re:replace(string:lowercase(Title), "[^a-z0-9]+", "_", [global, {return, list}]).
