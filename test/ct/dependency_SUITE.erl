%% @doc This checkout is a dependency like any other: a throwaway rebar3
%% project (through _checkouts and through a git dependency) and a
%% throwaway mix project (through a path dependency) build it with their
%% own tool, offline and with no extra environment, start a C node from
%% their configuration (the application env `nodes') and call it, and
%% find its docs as h/2 and iex's h do (code:get_doc, Code.fetch_docs);
%% the mix project also runs a manager of its own through
%% TarearbolCnode.DynamicManager.
-module(dependency_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         rebar3_checkout_dependency_starts_a_node_from_its_config/1,
         rebar3_git_dependency_builds_the_c_node_and_starts_it/1,
         mix_path_dependency_starts_a_node_from_its_config/1,
         mix_git_dependency_builds_the_c_node_and_starts_it/1,
         priv_holds_only_what_a_release_ships/1]).

all() ->
    [priv_holds_only_what_a_release_ships,
     rebar3_checkout_dependency_starts_a_node_from_its_config,
     rebar3_git_dependency_builds_the_c_node_and_starts_it,
     mix_path_dependency_starts_a_node_from_its_config,
     mix_git_dependency_builds_the_c_node_and_starts_it].

init_per_suite(Config) ->
    [{root, cnode_test:root()} | Config].

end_per_suite(_Config) ->
    ok.

%% A release copies the application's priv/: the sanitizer build and the
%% objects stay under c_src/_build.
priv_holds_only_what_a_release_ships(Config) ->
    Priv = filename:join(?config(root, Config), "priv"),
    {ok, Files} = file:list_dir(Priv),
    ?assert(lists:member("tarearbol_cnode", Files), Files),
    ?assertEqual([], [F || F <- Files, F =/= "tarearbol_cnode", filename:extension(F) =/= ".so"]).

rebar3_checkout_dependency_starts_a_node_from_its_config(Config) ->
    {Dir, _} = P = rebar3_project(Config, "dep_checkout", "{deps, [tarearbol_cnode]}.\n"),
    ok = file:make_dir(filename:join(Dir, "_checkouts")),
    ok = file:make_symlink(?config(root, Config), filename:join([Dir, "_checkouts", "tarearbol_cnode"])),
    run_rebar3_project(P).

%% What a git dependency sees is the checkout's HEAD commit: rebar3
%% clones it and builds the C node in the clone through the pre_hook.
rebar3_git_dependency_builds_the_c_node_and_starts_it(Config) ->
    Root = ?config(root, Config),
    Head = string:trim(os:cmd("git -C '" ++ Root ++ "' rev-parse HEAD")),
    ?assertEqual(40, length(Head), Head),
    {Dir, _} = P = rebar3_project(Config, "dep_git",
                         "{deps, [{tarearbol_cnode, {git, \"file://" ++ Root ++ "\", {ref, \""
                         ++ Head ++ "\"}}}]}.\n"),
    run_rebar3_project(P),
    ?assert(filelib:is_regular(filename:join(Dir, "_build/default/lib/tarearbol_cnode/priv/tarearbol_cnode"))).

mix_path_dependency_starts_a_node_from_its_config(Config) ->
    mix_project(Config, "dep_mix", "path: \"" ++ ?config(root, Config) ++ "\"").

%% Mix clones the checkout's HEAD and builds it, C node included, with
%% nothing but the mix.exs at its root.
mix_git_dependency_builds_the_c_node_and_starts_it(Config) ->
    Root = ?config(root, Config),
    Head = string:trim(os:cmd("git -C '" ++ Root ++ "' rev-parse HEAD")),
    mix_project(Config, "dep_mix_git", "git: \"file://" ++ Root ++ "\", ref: \"" ++ Head ++ "\"").

mix_project(Config, Prefix, Dep) ->
    Dir = filename:join(?config(priv_dir, Config), Prefix),
    Name = cnode_test:unique(Prefix),
    write(Dir, "mix.exs",
          "defmodule DepMix.MixProject do\n"
          "  use Mix.Project\n"
          "  def project, do: [app: :dep_mix, version: \"0.1.0\",\n"
          "                    deps: [{:tarearbol_cnode, " ++ Dep ++ "}]]\n"
          "  def application, do: [extra_applications: [:logger]]\n"
          "end\n"),
    write(Dir, "config/config.exs",
          "import Config\n"
          "config :tarearbol_cnode, nodes: [%{name: \"" ++ Name ++ "\", managers: [\"" ++ manager() ++ "\"]}]\n"),
    write(Dir, "lib/dep_mix/jobs.ex",
          "defmodule DepMix.Jobs do\n"
          "  use TarearbolCnode.DynamicManager, node: \"" ++ Name ++ "_dm\", manager: \"" ++ behaviour() ++ "\"\n"
          "end\n"),
    write(Dir, "lib/dep_mix.ex",
          "defmodule DepMix do\n"
          "  def main do\n"
          "    [{_, l, _, _}] = Supervisor.which_children(:tarearbol_cnode_sup)\n"
          "    {:ok, node} = :tarearbol_cnode_launcher.await_ready(l, 15000)\n"
          "    %{node: ^node} = :tarearbol_cnode.info(node)\n"
          "    :ok = :tarearbol_cnode.put({:counters, node}, \"a\", payload: 41, timeout: 0)\n"
          "    {:ok, 41} = :tarearbol_cnode.synch_call({:counters, node}, \"a\", :get)\n"
          "    {:ok, _} = DepMix.Jobs.start_link([])\n"
          "    :ok = DepMix.Jobs.put(\"b\", payload: 1, timeout: 0)\n"
          "    %DepMix.Jobs.State{children: %{\"b\" => %Tarearbol.DynamicManager.Child{}}} = DepMix.Jobs.state()\n"
          "    {:docs_v1, _, :erlang, _, %{\"en\" => _}, _, docs} = Code.fetch_docs(:tarearbol_cnode)\n"
          "    {_, _, _, %{\"en\" => _}, _} = List.keyfind(docs, {:function, :put, 3}, 0)\n"
          "    {:docs_v1, _, :elixir, _, %{\"en\" => _}, _, _} = Code.fetch_docs(TarearbolCnode.DynamicManager)\n"
          "    IO.puts(\"DEP OK #{node}\")\n"
          "  end\n"
          "end\n"),
    Out = sh(Dir, "mix deps.get && mix compile && timeout 60 elixir --sname " ++ cnode_test:unique("mixrun")
                  ++ " --cookie " ++ cnode_test:unique("c") ++ " -S mix run -e DepMix.main"),
    assert_ran(Out, Name).

%% ---------------------------------------------------------------------------

manager() -> "counters=" ++ behaviour().
behaviour() -> "counter,children=1,timeout=1000".

rebar3_project(Config, Prefix, RebarConfig) ->
    Dir = filename:join(?config(priv_dir, Config), Prefix),
    Name = cnode_test:unique(Prefix),
    write(Dir, "rebar.config", RebarConfig),
    write(Dir, "src/dep_app.app.src",
          "{application, dep_app, [{description, \"a user of tarearbol_cnode\"}, {vsn, \"0.1.0\"},\n"
          " {applications, [kernel, stdlib, tarearbol_cnode]}]}.\n"),
    write(Dir, "src/dep_app.erl",
          "-module(dep_app).\n"
          "-export([main/0]).\n"
          "main() ->\n"
          "    try run() catch C:R:S -> io:format(\"~p~n\", [{C, R, S}]), halt(1) end.\n"
          "run() ->\n"
          "    {ok, _} = application:ensure_all_started(dep_app),\n"
          "    [{_, L, _, _}] = supervisor:which_children(tarearbol_cnode_sup),\n"
          "    {ok, Node} = tarearbol_cnode_launcher:await_ready(L, 15000),\n"
          "    #{node := Node} = tarearbol_cnode:info(Node),\n"
          "    ok = tarearbol_cnode:put({counters, Node}, <<\"a\">>, [{payload, 41}, {timeout, 0}]),\n"
          "    {ok, 41} = tarearbol_cnode:synch_call({counters, Node}, <<\"a\">>, get),\n"
          "    {ok, {docs_v1, _, erlang, _, #{<<\"en\">> := _}, _, Docs}} = code:get_doc(tarearbol_cnode),\n"
          "    {_, _, _, #{<<\"en\">> := _}, _} = lists:keyfind({function, put, 3}, 1, Docs),\n"
          "    io:format(\"DEP OK ~s~n\", [Node]),\n"
          "    halt(0).\n"),
    write(Dir, "config/sys.config",
          "[{tarearbol_cnode, [{nodes, [#{name => \"" ++ Name ++ "\", managers => [\"" ++ manager() ++ "\"]}]}]}].\n"),
    {Dir, Name}.

run_rebar3_project({Dir, Name}) ->
    Out = sh(Dir, "rebar3 compile && timeout 60 erl -noshell -sname " ++ cnode_test:unique("r3run")
                  ++ " -setcookie " ++ cnode_test:unique("c") ++ " -config config/sys.config"
                  ++ " -pa _build/default/lib/*/ebin _build/default/checkouts/*/ebin -eval 'dep_app:main()'"),
    assert_ran(Out, Name).

%% The throwaway projects run with the environment a user has: none of
%% what rebar3 ct sets for this one.
sh(Dir, Cmd) ->
    Out = os:cmd("cd '" ++ Dir ++ "' && env -u ERL_LIBS -u REBAR_CONFIG -u TAREARBOL_CNODE_BIN sh -c '"
                 ++ escape(Cmd) ++ "' 2>&1; echo \"exit=$?\""),
    ct:log("~s~n~s", [Cmd, Out]),
    Out.

escape(Cmd) -> lists:flatten(string:replace(Cmd, "'", "'\\''", all)).

assert_ran(Out, Name) ->
    ?assertNotEqual(nomatch, string:find(Out, "DEP OK " ++ Name ++ "@" ++ cnode_test:host()), Out),
    ?assertNotEqual(nomatch, string:find(Out, "exit=0"), Out).

write(Dir, File, Text) ->
    Path = filename:join(Dir, File),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Text).
