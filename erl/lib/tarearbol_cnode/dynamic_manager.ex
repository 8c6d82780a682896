defmodule TarearbolCnode.DynamicManager do
  @moduledoc """
  A dynamic manager that lives in a C node, used as `Tarearbol.DynamicManager` is.

      defmodule MyApp.Counters do
        use TarearbolCnode.DynamicManager,
          node: "counters",
          manager: "counter,children=2,timeout=1000"
      end

      children = [MyApp.Counters]          # or MyApp.Counters.start_link([])
      MyApp.Counters.put("a", payload: 41, timeout: 0)
      {:ok, 41} = MyApp.Counters.synch_call("a", :get)
      %MyApp.Counters.State{children: %{"a" => %Tarearbol.DynamicManager.Child{}}} =
        MyApp.Counters.state()

  Options of `use`, each of which `start_link/1` also takes (and overrides):

    * `:node` (required): the C node's short name;
    * `:manager` (required): the `--manager` spec after `NAME=`, that is the
      behaviour and its options (`"counter,children=2"`, `"./mine.so"`);
    * any other option of `:tarearbol_cnode_launcher` (`:binary`, `:threads`,
      `:args`, `:ready_timeout`, `:start_distribution`, ...).

  The manager is registered on the node under the module's own name
  (`Elixir.MyApp.Counters`), so its State is `MyApp.Counters.State`,
  a struct this macro defines. Each module runs its own C node, started
  by `start_link/1` through the launcher; `start_link/1` returns once the
  manager has started, so the functions work as soon as the supervisor
  has it.

  Unlike Tarearbol's casts, `put/2`, `put_new/2` and `del/1` are calls: a
  bad id or bad options come back as `{:error, reason}`. `get/1` is `nil`
  for a worker that is not there, as in Tarearbol.
  """

  @launcher_keys [:node, :manager]

  @doc false
  defmacro __using__(opts) do
    quote location: :keep do
      @tarearbol_cnode_opts unquote(opts)

      defmodule State do
        @moduledoc "The manager's state, as `state/0` gives it."
        @type t :: %__MODULE__{
                state: :starting | :started | atom(),
                manager: atom(),
                children: %{optional(term()) => Tarearbol.DynamicManager.Child.t()}
              }
        defstruct [:state, :manager, children: %{}]
      end

      @doc "Starts this manager's C node through the launcher; see `TarearbolCnode.DynamicManager`."
      @spec start_link(keyword()) :: {:ok, pid()} | {:error, term()}
      def start_link(opts \\ []),
        do: TarearbolCnode.DynamicManager.start_link(__MODULE__, Keyword.merge(@tarearbol_cnode_opts, opts))

      @doc false
      def child_spec(opts) do
        %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, type: :worker, shutdown: 10_000}
      end

      @doc "The C node this manager runs on."
      @spec cnode() :: node()
      def cnode, do: TarearbolCnode.DynamicManager.node_of(__MODULE__, @tarearbol_cnode_opts)

      @doc "The manager as a `gen_server` address: `{name, node}`."
      @spec manager() :: {atom(), node()}
      def manager, do: {__MODULE__, cnode()}

      @doc "The manager's State."
      @spec state() :: State.t() | {:error, term()}
      def state, do: :tarearbol_cnode.state(manager())

      @doc "(Re)starts the worker `id`; an existing one is replaced."
      @spec put(term(), keyword() | map()) :: :ok | {:error, term()}
      def put(id, opts), do: :tarearbol_cnode.put(manager(), id, opts)

      @doc "Starts the worker `id` unless it exists."
      @spec put_new(term(), keyword() | map()) :: :ok | {:error, term()}
      def put_new(id, opts), do: :tarearbol_cnode.put_new(manager(), id, opts)

      @doc "Stops and removes the worker `id`."
      @spec del(term()) :: :ok | {:error, term()}
      def del(id), do: :tarearbol_cnode.del(manager(), id)

      @doc "The worker's Child, or `nil` when there is none."
      @spec get(term()) :: Tarearbol.DynamicManager.Child.t() | nil | {:error, term()}
      def get(id) do
        case :tarearbol_cnode.get(manager(), id) do
          child when map_size(child) == 0 -> nil
          other -> other
        end
      end

      @doc "Back to a clean state from the manager's children_specs."
      @spec restart() :: :ok | {:error, term()}
      def restart, do: :tarearbol_cnode.restart(manager())

      @doc "Calls the worker `id` (or one picked when `id` is nil)."
      @spec synch_call(term(), term()) :: {:ok, term()} | :error | {:error, term()}
      def synch_call(id, message), do: :tarearbol_cnode.synch_call(manager(), id, message)

      @doc "Casts to the worker `id` (or one picked when `id` is nil)."
      @spec asynch_call(term(), term()) :: :ok | :error | {:error, term()}
      def asynch_call(id, message), do: :tarearbol_cnode.asynch_call(manager(), id, message)
    end
  end

  @doc false
  @spec start_link(module(), keyword()) :: {:ok, pid()} | {:error, term()}
  def start_link(module, opts) do
    name = Keyword.fetch!(opts, :node) |> to_string()
    spec = Keyword.fetch!(opts, :manager) |> to_string()

    launcher =
      opts
      |> Keyword.drop(@launcher_keys)
      |> Map.new()
      |> Map.merge(%{name: String.to_charlist(name), managers: [String.to_charlist("#{module}=#{spec}")]})

    with {:ok, pid} <- :tarearbol_cnode_launcher.start_link(launcher),
         {:ok, node} <- await(pid, module, Map.get(launcher, :ready_timeout, 15_000)) do
      :persistent_term.put({__MODULE__, module}, node)
      {:ok, pid}
    end
  end

  # The launcher returns at once; the manager is usable once the node is
  # READY and the manager has left :starting.
  defp await(pid, module, timeout) do
    case :tarearbol_cnode_launcher.await_ready(pid, timeout) do
      {:ok, node} ->
        deadline = System.monotonic_time(:millisecond) + timeout
        await_started({module, node}, deadline, pid)

      {:error, reason} ->
        stop(pid, reason)
    end
  end

  defp await_started({_, node} = manager, deadline, pid) do
    case :tarearbol_cnode.state(manager) do
      %{state: :started} ->
        {:ok, node}

      other ->
        if System.monotonic_time(:millisecond) > deadline do
          stop(pid, {:manager_not_started, other})
        else
          Process.sleep(20)
          await_started(manager, deadline, pid)
        end
    end
  end

  defp stop(pid, reason) do
    Process.unlink(pid)
    :gen_statem.stop(pid)
    {:error, reason}
  end

  @doc false
  @spec node_of(module(), keyword()) :: node()
  def node_of(module, opts) do
    case :persistent_term.get({__MODULE__, module}, nil) do
      nil ->
        [_, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
        :"#{Keyword.fetch!(opts, :node)}@#{host}"

      node ->
        node
    end
  end
end
