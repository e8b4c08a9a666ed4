"""The cell registry (rnnfast.cell_registry) against what the compiled kernels and PyTorch say
of the same cells: one set of facts, read everywhere."""

import numpy as np
import pytest

from rnnfast import _cpu, reference
from rnnfast.cell_registry import CELLS, SPECS, spec


@pytest.mark.parametrize("cell", CELLS)
def test_registry_matches_the_cpu_kernels(cell):
    s = spec(cell)
    assert _cpu.gate_count(cell) == s.gate_count
    assert _cpu.saved_per_unit(cell) == len(s.saved)


@pytest.mark.parametrize("cell", CELLS)
def test_registry_matches_the_emulated_cuda_kernels(cell):
    emulated = pytest.importorskip("rnnfast._cuda_emulated")
    assert emulated.gate_count(cell) == spec(cell).gate_count
    assert emulated.saved_per_unit(cell) == len(spec(cell).saved)


@pytest.mark.parametrize("cell", CELLS)
def test_reference_saves_the_registry_slots(cell):
    """The reference's step saves exactly the registry's slots (the kernels' workspace)."""
    s = spec(cell)
    H, B = 3, 2
    rng = np.random.default_rng(0)
    zx, zh = rng.standard_normal((2, B, s.gate_count * H))
    c = rng.standard_normal((B, H)) if s.has_cell_state else None
    _, c_new, saved = reference.STEPS[cell][0](zx, zh, rng.standard_normal((B, H)), c)
    assert tuple(saved) == s.saved
    assert (c_new is not None) == s.has_cell_state


@pytest.mark.parametrize("cell", CELLS)
def test_registry_matches_torch(cell):
    torch = pytest.importorskip("torch")
    s = spec(cell)
    module = getattr(torch.nn, s.torch_class)(2, 3, **dict(s.torch_options))
    assert module.weight_ih_l0.shape[0] == s.gate_count * 3
    assert module.mode == {"rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "lstm": "LSTM",
                           "gru": "GRU"}[cell]


def test_unknown_cell_names_the_cells():
    with pytest.raises(ValueError, match="lstm"):
        spec("lstmx")
    assert set(SPECS) == set(CELLS) == set(reference.STEPS)
