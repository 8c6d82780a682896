# Mix builds this repository as a path or git dependency with no extra
# environment: no rebar3, no Hex. The OTP application's description stays
# in erl/tarearbol_cnode.app.src (rebar3's); it is read here so that both
# tools ship the same one. The C node is built by c_src/Makefile into
# priv/, as rebar3's pre_hook does, through the compiler defined below.
defmodule Mix.Tasks.Compile.TarearbolCnode do
  @shortdoc "Builds the C node and its behaviours into priv/ (make -C c_src all)"
  @moduledoc @shortdoc
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())

    case System.cmd("make", ["-s", "-C", Path.join(root, "c_src"), "all"], stderr_to_stdout: true) do
      {_, 0} ->
        # Mix links priv/ into the build before any compiler runs; on a
        # fresh checkout priv/ only exists now.
        Mix.Project.build_structure()
        {:ok, []}

      {out, status} ->
        Mix.shell().error(out)
        Mix.shell().error("make -C c_src all exited with status #{status}")
        {:error, []}
    end
  end
end

defmodule Mix.Tasks.Compile.TarearbolCnodeDocs do
  @shortdoc "Writes the Erlang modules' doc chunks next to the app's ebin"
  @moduledoc """
  #{@shortdoc}, where `h :tarearbol_cnode` in iex (and `h/1` in erl) finds
  them: erl/doc_chunks.escript, as rebar3's compile post_hook runs it. It
  runs after the Erlang compiler, as it reads what the beams export.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())
    script = Path.join([root, "erl", "doc_chunks.escript"])

    case System.cmd("escript", [script, Mix.Project.app_path()], cd: root, stderr_to_stdout: true) do
      {_, 0} ->
        {:ok, []}

      {out, status} ->
        Mix.shell().error(out)
        Mix.shell().error("erl/doc_chunks.escript exited with status #{status}")
        {:error, []}
    end
  end
end

defmodule TarearbolCnode.MixProject do
  use Mix.Project

  {:ok, [{:application, :tarearbol_cnode, app}]} =
    :file.consult(Path.join(__DIR__, "erl/tarearbol_cnode.app.src"))

  @app app

  def project do
    [
      app: :tarearbol_cnode,
      version: to_string(@app[:vsn]),
      description: to_string(@app[:description]),
      elixir: "~> 1.14",
      compilers: [:tarearbol_cnode | Mix.compilers()] ++ [:tarearbol_cnode_docs],
      erlc_paths: ["erl/src"],
      erlc_options: [:debug_info, :warnings_as_errors, :warn_missing_spec],
      elixirc_paths: ["erl/lib"],
      deps: []
    ]
  end

  def application do
    [
      mod: @app[:mod],
      registered: @app[:registered],
      env: @app[:env],
      extra_applications: @app[:applications] -- [:kernel, :stdlib]
    ]
  end
end
