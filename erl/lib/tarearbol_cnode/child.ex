# The node sends a worker's Child as a map whose __struct__ is
# Tarearbol.DynamicManager.Child, so that code written against Tarearbol
# keeps pattern-matching it. This defines that struct when Tarearbol
# itself is not there (an app that still has Tarearbol gets Tarearbol's,
# which has the same fields).
unless Code.ensure_loaded?(Tarearbol.DynamicManager.Child) do
  defmodule Tarearbol.DynamicManager.Child do
    @moduledoc """
    A worker of a C-node manager, as `get/1` and `state/0` give it:
    its `pid` (on the C node), `value` (the last one its perform returned),
    `busy?` (a DateTime while a call runs, else nil) and `opts`.
    """
    @type t :: %__MODULE__{pid: pid(), value: term(), busy?: DateTime.t() | nil, opts: keyword()}
    defstruct [:pid, :value, :busy?, :opts]
  end
end
