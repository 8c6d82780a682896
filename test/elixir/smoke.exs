# Elixir smoke test: what a user types in iex against a C node's manager.
# Run by test/ct/elixir_SUITE.erl as
#   elixir --sname NAME --cookie COOKIE test/elixir/smoke.exs CNODE
[cnode | _] = System.argv()
node = String.to_atom(cnode)
true = Node.connect(node)
manager = {:counters, node}

:ok = GenServer.call(manager, {:put, "from_elixir", [payload: 41, timeout: 0]})
{:ok, 41} = GenServer.call(manager, {:synch_call, "from_elixir", :get})

child = GenServer.call(manager, {:get, "from_elixir"})
IO.inspect(child, label: "child")
%{__struct__: Tarearbol.DynamicManager.Child, pid: pid, value: nil, busy?: nil,
  opts: [payload: 41, timeout: 0]} = child
true = is_pid(pid) and node(pid) == node

# The worker's own pid answers GenServer calls and casts.
:ok = GenServer.cast(pid, {:add, 1})
Stream.repeatedly(fn -> GenServer.call(pid, :get) end)
|> Enum.find(fn v -> v == 42 end)

state = GenServer.call(manager, :state)
IO.inspect(Map.keys(state.children) |> Enum.sort(), label: "ids")
:started = state.state
%{"from_elixir" => %{pid: ^pid}} = state.children
{:error, {:bad_opts, {:timeout, -1}}} = GenServer.call(manager, {:put, "x", [timeout: -1]})
:ok = GenServer.call(manager, {:del, "from_elixir"})
%{} = GenServer.call(manager, {:get, "from_elixir"})
IO.puts("SMOKE OK")

# What `h :tarearbol_cnode.put` and `h TarearbolCnode.DynamicManager` in
# iex read: the Erlang modules' doc chunks next to their ebin, and the
# Elixir modules' docs in their beams.
{:docs_v1, _, :erlang, _, %{"en" => _}, _, erl_docs} = Code.fetch_docs(:tarearbol_cnode)
{_, _, _, %{"en" => put_doc}, _} = List.keyfind(erl_docs, {:function, :put, 3}, 0)
true = inspect(put_doc) =~ "starts the worker Id"
{:docs_v1, _, :elixir, _, %{"en" => dm_doc}, _, _} = Code.fetch_docs(TarearbolCnode.DynamicManager)
true = dm_doc =~ "use TarearbolCnode.DynamicManager"
{:docs_v1, _, :elixir, _, %{"en" => _}, _, _} = Code.fetch_docs(Tarearbol.DynamicManager.Child)
IO.puts("SMOKE DOCS OK")

# The same through TarearbolCnode.DynamicManager, as a Tarearbol app
# writes it: its own C node, started through the launcher.
[_, name] = System.argv()

defmodule SmokeMgr do
  use TarearbolCnode.DynamicManager, manager: "counter,children=2,timeout=1000"
end

# A module of its own: its body is expanded after SmokeMgr exists, so it
# can pattern-match SmokeMgr.State (the script's top level is expanded
# as a whole, before any module in it is defined).
defmodule SmokeDm do
  def run(name) do
    # The node's name is unique per run, so it comes with start_link's
    # options (which override use's); the binary is the one under test.
    bin = System.get_env("TAREARBOL_CNODE_BIN")
    opts = [node: name] ++ if(bin, do: [binary: String.to_charlist(bin)], else: [])
    {:ok, sup} = Supervisor.start_link([{SmokeMgr, opts}], strategy: :one_for_one)
    true = SmokeMgr.cnode() == :"#{name}@#{node() |> Atom.to_string() |> String.split("@") |> List.last()}"
    %SmokeMgr.State{state: :started, manager: SmokeMgr, children: initial} = SmokeMgr.state()
    2 = map_size(initial)
    :ok = SmokeMgr.put("m", payload: 1, timeout: 0)
    # put_new leaves an existing worker as it is.
    :ok = SmokeMgr.put_new("m", payload: 2, timeout: 0)
    :ok = SmokeMgr.put_new("n", payload: 7, timeout: 0)
    %Tarearbol.DynamicManager.Child{pid: mpid, opts: [payload: 1, timeout: 0]} = SmokeMgr.get("m")
    true = node(mpid) == SmokeMgr.cnode()
    {:ok, 1} = SmokeMgr.synch_call("m", :get)
    :ok = SmokeMgr.asynch_call("m", {:add, 2})
    Stream.repeatedly(fn -> SmokeMgr.synch_call("m", :get) end) |> Enum.find(&(&1 == {:ok, 3}))
    %SmokeMgr.State{children: %{"m" => %Tarearbol.DynamicManager.Child{}, "n" => _}} = SmokeMgr.state()
    :ok = SmokeMgr.del("m")
    nil = SmokeMgr.get("m")
    :ok = SmokeMgr.restart()
    %SmokeMgr.State{children: after_restart} = SmokeMgr.state()
    false = Map.has_key?(after_restart, "n")
    :ok = Supervisor.stop(sup)
    IO.puts("SMOKE DM OK")
  end
end

SmokeDm.run(name)
