# Elixir smoke test: what a user types in iex against a C node's manager.
# Run by test/ct/elixir_SUITE.erl as
#   elixir --sname NAME --cookie COOKIE test/elixir/smoke.exs CNODE
[cnode] = System.argv()
node = String.to_atom(cnode)
true = Node.connect(node)
manager = {:counters, node}

:ok = GenServer.call(manager, {:put, "from_elixir", [payload: 41, timeout: 0]})
{:ok, 41} = GenServer.call(manager, {:synch_call, "from_elixir", :get})

child = GenServer.call(manager, {:get, "from_elixir"})
IO.inspect(child, label: "child")
%{__struct__: Tarearbol.DynamicManager.Child, pid: pid, value: nil, "busy?": nil,
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
