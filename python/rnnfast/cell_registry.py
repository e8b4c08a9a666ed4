"""The cells rnnfast computes: every fact about a cell that Python code needs, written once.

The reference, the functional API, the layers, cells, PyTorch adapter, benchmark suite and tests
all read a cell's gate count, gate names, training-workspace slots and PyTorch / ONNX names
from here. The C++ side derives the same facts from the cell types in
``cpp/include/rnnfast/cells/*.h`` (``kGates``, ``kSaved`` and the named slots such as
``Lstm::kSavedC``); ``tests/reference/test_registry.py`` checks that the two agree.

Adding a cell: see "Adding a cell" in ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellSpec:
    """One cell.

    name: the name every rnnfast function takes ("lstm").
    gates: the gate blocks stacked along the rows of W_ih [G*H, I] and W_hh [G*H, H], in
        PyTorch's order.
    saved: the values per hidden unit and step that the training forward saves for backward,
        in the workspace's order ([T, B, S*H]: slot s of unit j at s*H + j); () saves nothing
        (the vanilla RNN's backward needs only its outputs).
    has_cell_state: whether the cell carries c besides h (the LSTM).
    torch_class: the torch.nn class, and torch_options its constructor arguments that select
        this cell.
    onnx_op: the ONNX operator; onnx_gates: for each of its gate blocks, in ONNX's order, the
        index of the same gate in PyTorch's order; onnx_activations: the operator's
        activations attribute (None: its default).
    """

    name: str
    gates: tuple[str, ...]
    saved: tuple[str, ...]
    has_cell_state: bool
    torch_class: str
    torch_options: tuple[tuple[str, str], ...]
    onnx_op: str
    onnx_gates: tuple[int, ...]
    onnx_activations: tuple[str, ...] | None = None

    @property
    def gate_count(self) -> int:
        return len(self.gates)

    def saved_slot(self, slot: str, hidden: int) -> slice:
        """The columns of one slot in a workspace row of S*H values."""
        s = self.saved.index(slot)
        return slice(s * hidden, (s + 1) * hidden)


_SPECS = (
    CellSpec("rnn_tanh", ("h",), (), False, "RNN", (("nonlinearity", "tanh"),), "RNN", (0,),
             ("Tanh",)),
    CellSpec("rnn_relu", ("h",), (), False, "RNN", (("nonlinearity", "relu"),), "RNN", (0,),
             ("Relu",)),
    CellSpec("lstm", ("i", "f", "g", "o"), ("i", "f", "g", "o", "c"), True, "LSTM", (), "LSTM",
             (0, 3, 1, 2)),
    CellSpec("gru", ("r", "z", "n"), ("r", "z", "n", "hn"), False, "GRU", (), "GRU",
             (1, 0, 2)),
)

SPECS: dict[str, CellSpec] = {spec.name: spec for spec in _SPECS}
CELLS: tuple[str, ...] = tuple(SPECS)


def spec(cell: str) -> CellSpec:
    """The CellSpec of ``cell``, or a ValueError naming the cells there are."""
    try:
        return SPECS[cell]
    except (KeyError, TypeError):
        raise ValueError(f"cell must be one of {CELLS}, not {cell!r}") from None
