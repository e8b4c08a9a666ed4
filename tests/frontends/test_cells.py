"""rnnfast.LSTMCell, GRUCell and RNNCell (single-step streaming inference) against the NumPy
reference (a sequence of one step), and their invariants and errors.

Accuracy: the tolerance rule of _util.py, as for the sequence kernels.
"""

import numpy as np
import pytest

import rnnfast
from rnnfast import _cpu, functional as F
from rnnfast.cell_registry import SPECS

from _util import CELLS, DTYPES, STEP_TOL, assert_matches_oracle, make_problem, rel_err

DTYPE_IDS = ["f32", "f64"]

# (B, I, H): I and H from {1, 7, 33, 130}; B of 1 and 3, and 13 (full row tiles and a short
# tail under every instruction set: tiles of 6, 3 and 2 rows); B = 0 works and does nothing.
SHAPES = [(1, 1, 1), (3, 7, 33), (1, 33, 130), (13, 130, 7), (3, 130, 130), (0, 5, 9)]


def make_cell(cell, I, H, dtype, bias=True, weights=None):
    """The rnnfast cell for a reference cell name, with the given weights (dict w_ih, w_hh,
    b_ih, b_hh) when not None."""
    s = SPECS[cell]
    c = getattr(rnnfast, s.torch_class + "Cell")(I, H, bias=bias, dtype=dtype,
                                                 **dict(s.torch_options))
    if weights is not None:
        state = {"weight_ih": weights["w_ih"], "weight_hh": weights["w_hh"]}
        if bias:
            state.update({"bias_ih": weights["b_ih"], "bias_hh": weights["b_hh"]})
        c.load_state_dict(state)
    return c


def step(c, cell, x, h, cc, out=None):
    """One step through the cell's call; returns (h, c) with c None unless LSTM."""
    if cell == "lstm":
        return c(x, (h, cc), out=out)
    return c(x, h, out=out), None


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("B,I,H", SHAPES, ids=[f"B{b}-I{i}-H{h}" for b, i, h in SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_step_matches_reference(cell, dtype, B, I, H, bias):
    inputs, _ = make_problem(cell, 1, B, I, H, dtype, bias=bias, seed=B * 1000 + I * 10 + H)
    c = make_cell(cell, I, H, dtype, bias, inputs)
    h, cc = step(c, cell, inputs["x"][0], inputs["h0"], inputs["c0"])
    assert c._packed.isa == _cpu.active_isa()  # packed for the instruction set under test
    assert_matches_oracle(cell, inputs, None, {"h_n": h, "c_n": cc}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_steps_equal_the_sequence_kernel(cell, dtype):
    # T single steps reproduce the sequence kernel's outputs (within the rounding of the
    # input projection, which the sequence computes as one GEMM).
    T, B, I, H = 6, 3, 9, 20
    inputs, _ = make_problem(cell, T, B, I, H, dtype, seed=7)
    y, h_n, c_n, _ = F.forward(cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
                               b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"])
    c = make_cell(cell, I, H, dtype, True, inputs)
    h, cc = inputs["h0"], inputs["c0"]
    for t in range(T):
        h, cc = step(c, cell, inputs["x"][t], h, cc)
        assert rel_err(h, y[t]) <= STEP_TOL[dtype], t
    if cell == "lstm":
        assert rel_err(cc, c_n) <= STEP_TOL[dtype]


@pytest.mark.parametrize("cell", CELLS)
def test_out_is_written_and_returned(cell):
    B, I, H = 2, 5, 8
    inputs, _ = make_problem(cell, 1, B, I, H, np.float32, seed=3)
    c = make_cell(cell, I, H, np.float32, True, inputs)
    expect_h, expect_c = step(c, cell, inputs["x"][0], inputs["h0"], inputs["c0"])
    out = (np.full((B, H), np.nan, np.float32), np.full((B, H), np.nan, np.float32))
    got = c(inputs["x"][0], (inputs["h0"], inputs["c0"]), out=out) if cell == "lstm" else \
        c(inputs["x"][0], inputs["h0"], out=out[0])
    if cell == "lstm":
        assert got[0] is out[0] and got[1] is out[1]
        np.testing.assert_array_equal(out[1], expect_c)
    else:
        assert got is out[0]
    np.testing.assert_array_equal(out[0], expect_h)


@pytest.mark.parametrize("cell", CELLS)
def test_same_bits_for_any_thread_count(cell):
    B, I, H = 5, 64, 300
    inputs, _ = make_problem(cell, 1, B, I, H, np.float32, seed=11)
    c = make_cell(cell, I, H, np.float32, True, inputs)
    before = rnnfast.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            rnnfast.set_num_threads(threads)
            results.append(step(c, cell, inputs["x"][0], inputs["h0"], inputs["c0"]))
    finally:
        rnnfast.set_num_threads(before)
    for h, cc in results[1:]:
        np.testing.assert_array_equal(h, results[0][0])
        if cell == "lstm":
            np.testing.assert_array_equal(cc, results[0][1])


def test_unbatched_and_default_state():
    c = rnnfast.LSTMCell(4, 6, seed=1)
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    h, cc = c(x)
    h2, c2 = c(x[None], (np.zeros((1, 6), np.float32), np.zeros((1, 6), np.float32)))
    assert h.shape == cc.shape == (6,)
    np.testing.assert_array_equal(h, h2[0])
    np.testing.assert_array_equal(cc, c2[0])
    g = rnnfast.GRUCell(4, 6, seed=1)
    assert g(x).shape == (6,) and g(x, out=np.empty(6, np.float32)).shape == (6,)


def test_non_contiguous_input_is_accepted():
    c = rnnfast.GRUCell(3, 5, seed=2)
    wide = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(c(wide[:, ::2]), c(np.ascontiguousarray(wide[:, ::2])))


def test_weights_are_read_only_and_assignment_repacks():
    c = rnnfast.RNNCell(3, 4, seed=0)
    x = np.ones((2, 3), np.float32)
    before = c(x)
    with pytest.raises(ValueError):
        c.weight_hh[0, 0] = 1.0  # in-place edits would leave the packed copy stale
    c.weight_ih = c.weight_ih * 2
    after = c(x)
    inputs = {"x": x[None], "h0": np.zeros((2, 4), np.float32), "c0": None,
              "w_ih": c.weight_ih, "w_hh": c.weight_hh, "b_ih": c.bias_ih, "b_hh": c.bias_hh}
    assert_matches_oracle("rnn_tanh", inputs, None, {"h_n": after}, np.float32)
    assert not np.array_equal(before, after)
    with pytest.raises(ValueError, match="weight_ih"):
        c.weight_ih = np.zeros((5, 3), np.float32)
    nobias = rnnfast.RNNCell(3, 4, bias=False)
    assert nobias.bias_ih is None and set(nobias.state_dict()) == {"weight_ih", "weight_hh"}
    with pytest.raises(AttributeError, match="bias_ih"):
        nobias.bias_ih = np.zeros(4, np.float32)


def test_repacks_when_the_instruction_set_changes():
    """The first step after set_isa packs the weights again for the instruction set in use,
    through the general call and through the streaming one (out= given), whose kernel call
    refuses (returns False for) weights packed for another."""
    c = rnnfast.LSTMCell(3, 20, seed=0)
    x = np.ones((1, 3), np.float32)
    state = tuple(np.full((1, 20), 0.5, np.float32) for _ in "hc")
    out = tuple(np.empty((1, 20), np.float32) for _ in "hc")
    expected = c(x, state)
    before = _cpu.active_isa()
    try:
        for step in (lambda: c(x, state), lambda: c(x, state, out=out)):
            for isa in _cpu.available_isas():
                stale = c._packed
                _cpu.set_isa(isa)
                if stale.isa != isa:
                    assert _cpu.cell_step(stale, x, *state, *out) is False
                for got, want in zip(step(), expected):
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                assert c._packed.isa == isa
    finally:
        _cpu.set_isa(before)


def test_bad_arguments_raise_naming_the_argument():
    c = rnnfast.LSTMCell(3, 4)
    x = np.zeros((2, 3), np.float32)
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(TypeError, match="input has dtype float64"):
        c(x.astype(np.float64), (h, h))
    with pytest.raises(ValueError, match=r"input has shape \(2, 5\)"):
        c(np.zeros((2, 5), np.float32), (h, h))
    with pytest.raises(ValueError, match="input must be 1-D"):
        c(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"hx\[1\] has shape"):
        c(x, (h, h[:1]))
    with pytest.raises(TypeError, match="tuple"):
        c(x, h)
    with pytest.raises(ValueError, match=r"out\[0\] overlaps the memory of hx\[0\]"):
        c(x, (h, h.copy()), out=(h, np.empty_like(h)))
    read_only = np.empty_like(h)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"out\[1\] is read-only"):
        c(x, (h, h), out=(np.empty_like(h), read_only))
    g = rnnfast.GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"out has shape"):
        g(x, h, out=np.empty((2, 5), np.float32))
    with pytest.raises(KeyError, match="missing"):
        g.load_state_dict({"weight_ih": np.zeros((12, 3))})
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnfast.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        rnnfast.GRUCell(3, 0)


def test_nan_propagates():
    c = rnnfast.GRUCell(3, 4)
    x = np.zeros((2, 3), np.float32)
    x[1, 0] = np.nan
    h = c(x)
    assert np.isfinite(h[0]).all() and np.isnan(h[1]).all()


@pytest.mark.parametrize("cell", CELLS)
def test_same_outputs_as_torch_cells(cell):
    torch = pytest.importorskip("torch")
    I, H, B = 13, 37, 3
    ours = make_cell(cell, I, H, np.float64)
    s = SPECS[cell]
    theirs = getattr(torch.nn, s.torch_class + "Cell")(I, H, **dict(s.torch_options)).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(5)
    x, h, cc = (rng.standard_normal(s) for s in ((B, I), (B, H), (B, H)))
    with torch.no_grad():
        expect = theirs(*(torch.from_numpy(a) for a in (x,)),
                        (torch.from_numpy(h), torch.from_numpy(cc)) if cell == "lstm"
                        else torch.from_numpy(h))
    got = step(ours, cell, x, h, cc)
    expect = expect if cell == "lstm" else (expect, None)
    for g, e in zip(got, expect):
        if e is not None:
            assert rel_err(g, e.numpy()) <= 1e-12
