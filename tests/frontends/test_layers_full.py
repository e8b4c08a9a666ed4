"""Full layer semantics: stacked layers, both directions, variable lengths, state resets, dropout,
PyTorch's parameter names; forward and backward of every layer and direction. The grid runs on
every backend NumPy arrays reach (the ``backend`` fixture: the CPU kernels and the emulated CUDA
kernels), with the same oracles and tolerances.

Against PyTorch (torch.nn.RNN/LSTM/GRU with the same weights, loaded from the rnnfast layer's
state_dict): outputs, final states, input and initial-state gradients and every parameter
gradient. float64 within FLOAT64_TOL of PyTorch in float64; float32 by the tolerance rule of
_util.py with PyTorch as the reference: rnnfast's float32 error (against PyTorch float64) at most
twice PyTorch's own float32 error plus the floor. Resets (which PyTorch lacks) against the
step-by-step NumPy reference; dropout by determinism and finite differences with the mask fixed.
"""

import numpy as np
import pytest

import rnnfast
from rnnfast import _cuda_emulated, backends, reference as ref
from rnnfast.cell_registry import SPECS

from _util import FLOAT32_FLOOR, FLOAT64_TOL, rel_err

# PyTorch warns that its fast CPU path (oneDNN) lacks the projection.
pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")]

# cell -> (the class of rnnfast and of torch.nn, its constructor arguments)
KINDS = {cell: (s.torch_class, dict(s.torch_options)) for cell, s in SPECS.items()}
CELLS = list(KINDS)
DTYPES = {"f32": np.float32, "f64": np.float64}

# The largest relative errors seen, per dtype (printed by -s; the note reports them).
WORST = {"float32": 0.0, "float64": 0.0}


def new_layer(cell, I, H, dtype, seed=0, **options):
    kind, kwargs = KINDS[cell]
    return getattr(rnnfast, kind)(I, H, dtype=np.dtype(dtype).name, seed=seed, **kwargs,
                                  **options)


def problem(layer, T, B, seed, given_states=True):
    """Input, initial states (None when not given) and output gradients for a layer, in the
    user's layout; returns (x, hx, dy, dhx)."""
    rng = np.random.default_rng(seed)
    dt, L, H = layer.dtype, layer.num_layers * layer.num_directions, layer.hidden_size
    R = layer.proj_size or H
    F = layer.num_directions * R
    shape = (B, T) if layer.batch_first else (T, B)
    x = rng.standard_normal(shape + (layer.input_size,)).astype(dt)
    dy = rng.standard_normal(shape + (F,)).astype(dt)
    h0, dh = (0.5 * rng.standard_normal((L, B, R))).astype(dt), rng.standard_normal((L, B, R))
    c0, dc = (0.5 * rng.standard_normal((L, B, H))).astype(dt), rng.standard_normal((L, B, H))
    dh, dc = dh.astype(dt), dc.astype(dt)
    lstm = layer._cell == "lstm"
    hx = ((h0, c0) if lstm else h0) if given_states else None
    return x, hx, dy, ((dh, dc) if lstm else dh)


def run_ours(layer, x, hx, dy, dhx, **options):
    """Forward and backward; results as a dict of arrays (PyTorch's names for parameters)."""
    layer.train()
    out, state = layer(x, hx, **options)
    dx, dstate = layer.backward(dy, dhx)
    lstm = layer._cell == "lstm"
    got = {"output": out, "h_n": state[0] if lstm else state, "dx": dx,
           "dh0": dstate[0] if lstm else dstate}
    if lstm:
        got.update({"c_n": state[1], "dc0": dstate[1]})
    assert set(layer.grads) == set(layer.state_dict())
    got.update({"d" + k: v for k, v in layer.grads.items()})
    return got


def check(got, oracle, dtype, ref32=None, what=""):
    """The tolerance rule of _util.py for every array of ``got`` (keys of ``oracle``)."""
    assert set(got) == set(oracle), (sorted(got), sorted(oracle))
    failures = []
    dtype = np.dtype(dtype)
    for name, value in got.items():
        assert value.dtype == dtype, (name, value.dtype)
        assert value.shape == oracle[name].shape, (name, value.shape, oracle[name].shape)
        err = rel_err(value, oracle[name])
        bound = FLOAT64_TOL if dtype == np.float64 else \
            2 * rel_err(ref32[name], oracle[name]) + FLOAT32_FLOOR
        WORST[dtype.name] = max(WORST[dtype.name], err)
        if not err <= bound:
            failures.append(f"{name}: rel err {err:.3e} > {bound:.3e}")
    assert not failures, f"{what}: " + "; ".join(failures)


# ------------------------------------------------------------------ against PyTorch


def run_torch(layer, torch_dtype, x, hx, dy, dhx, lengths=None):
    """The same forward and backward through torch.nn with the layer's weights (packed
    sequences where lengths are given; hx given); the same keys as run_ours, as float64 NumPy
    arrays."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    kind, kwargs = KINDS[layer._cell]
    module = getattr(torch.nn, kind)(
        layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
        bidirectional=layer.bidirectional, batch_first=layer.batch_first, bias=layer.bias,
        dtype=torch_dtype, **kwargs, **({"proj_size": layer.proj_size} if layer.proj_size else {}))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})

    def tensor(a):
        return torch.tensor(np.asarray(a, np.float64), dtype=torch_dtype, requires_grad=True)

    xt = tensor(x)
    lstm = layer._cell == "lstm"
    states = tuple(tensor(s) for s in (hx if lstm else (hx,)))
    inp = xt if lengths is None else pack_padded_sequence(
        xt, torch.tensor(lengths), batch_first=layer.batch_first, enforce_sorted=False)
    out, state = module(inp, states if lstm else states[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=layer.batch_first,
                                     total_length=x.shape[1 if layer.batch_first else 0])
    finals = state if lstm else (state,)
    douts = dhx if lstm else (dhx,)
    loss = (out * torch.tensor(np.asarray(dy, np.float64), dtype=torch_dtype)).sum()
    for s, d in zip(finals, douts):
        loss = loss + (s * torch.tensor(np.asarray(d, np.float64), dtype=torch_dtype)).sum()
    loss.backward()

    def arr(t):
        return t.detach().numpy().astype(np.float64)

    res = {"output": arr(out), "h_n": arr(finals[0]), "dx": arr(xt.grad)}
    if lstm:
        res["c_n"] = arr(finals[1])
    for name, s in zip(("dh0", "dc0"), states):
        res[name] = arr(s.grad)
    res.update({"d" + k: arr(p.grad) for k, p in module.named_parameters()})
    return res


def compare_with_torch(layer, T, B, seed, given_states=True, lengths=None):
    """rnnfast with hx (or None: zeros) against PyTorch given hx (or explicit zeros)."""
    torch = pytest.importorskip("torch")
    x, hx, dy, dhx = problem(layer, T, B, seed, given_states)
    options = {} if lengths is None else {"lengths": lengths}
    got = run_ours(layer, x, hx, dy, dhx, **options)
    if hx is None:
        zeros = tuple(np.zeros_like(d) for d in (dhx if layer._cell == "lstm" else (dhx,)))
        hx = zeros if layer._cell == "lstm" else zeros[0]
    oracle = run_torch(layer, torch.float64, x, hx, dy, dhx, lengths)
    ref32 = run_torch(layer, torch.float32, x, hx, dy, dhx, lengths) \
        if layer.dtype == np.float32 else None
    if lengths is not None:  # padding is exactly zero
        pad = np.arange(T)[:, None] >= np.asarray(lengths)
        out = got["output"].transpose(1, 0, 2) if layer.batch_first else got["output"]
        assert not out[pad].any()
    check(got, oracle, layer.dtype, ref32, what=repr(layer))


# (cell, variant): plain, with lengths, and for the LSTM the same with a projection
VARIANTS = [pytest.param(cell, v, id=f"{cell}-{v}") for cell in CELLS
            for v in ("plain", "lengths") + (("proj", "proj_lengths") if cell == "lstm" else ())]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("cell,variant", VARIANTS)
def test_matches_torch_odd_sizes(backend, cell, variant, dtype, num_layers, bidirectional):
    """Hidden 37, input 13, batch 3, T 7 (projection 11); batch_first and default initial
    states alternate."""
    T, B = 7, 3
    flip = (num_layers + bidirectional) % 2 == 1
    proj = {"proj_size": 11} if variant.startswith("proj") else {}
    layer = new_layer(cell, 13, 37, dtype, seed=num_layers, num_layers=num_layers,
                      bidirectional=bidirectional, batch_first=flip, **proj)
    lengths = np.array([4, 7, 1]) if variant.endswith("lengths") else None
    compare_with_torch(layer, T, B, seed=11 * num_layers + bidirectional,
                       given_states=not flip or variant == "lengths", lengths=lengths)


def _grid(count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        T, B = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        H = int(rng.choice([1, 5, 16, 33, 70]))
        proj = int(rng.integers(0, H)) if CELLS[i % 4] == "lstm" else 0
        yield pytest.param(
            CELLS[i % 4], [np.float32, np.float64][rng.integers(2)], T, B,
            int(rng.integers(1, 20)), H, proj, int(rng.integers(1, 4)),
            bool(rng.integers(2)), bool(rng.integers(2)), bool(rng.integers(2)),
            None if rng.integers(2) else rng.integers(1, T + 1, B), id=f"grid{i}")


@pytest.mark.parametrize("cell,dtype,T,B,I,H,proj,L,bidirectional,batch_first,bias,lengths",
                         list(_grid(20, 2026)))
def test_matches_torch_random_grid(backend, cell, dtype, T, B, I, H, proj, L, bidirectional,
                                   batch_first, bias, lengths):
    layer = new_layer(cell, I, H, dtype, seed=T * B, num_layers=L, bidirectional=bidirectional,
                      batch_first=batch_first, bias=bias, **({"proj_size": proj} if proj else {}))
    compare_with_torch(layer, T, B, seed=H + I, lengths=lengths)


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_matches_torch(backend, cell):
    torch = pytest.importorskip("torch")
    layer = new_layer(cell, 5, 9, np.float64, num_layers=2, bidirectional=True)
    x, hx, dy, dhx = problem(layer, 6, 1, seed=3)

    def squeeze(a):  # drop the batch axis of the states
        return tuple(s[:, 0] for s in a) if isinstance(a, tuple) else a[:, 0]

    args = (x[:, 0], squeeze(hx), dy[:, 0], squeeze(dhx))
    got = run_ours(layer, *args)
    check(got, run_torch(layer, torch.float64, *args), np.float64, what="unbatched")


@pytest.mark.parametrize("cell,proj", [(cell, 0) for cell in CELLS] + [("lstm", 4)])
def test_torch_state_dict_loads_unchanged(cell, proj):
    torch = pytest.importorskip("torch")
    kind, kwargs = KINDS[cell]
    if proj:
        kwargs = {**kwargs, "proj_size": proj}
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(4, 6, num_layers=3, bidirectional=True, dtype=torch.float64,
                                     **kwargs)
    layer = getattr(rnnfast, kind)(4, 6, num_layers=3, bidirectional=True, dtype="float64",
                                   **kwargs)
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    assert list(layer.state_dict()) == list(sd)  # names, in PyTorch's order
    layer.load_state_dict(sd)
    layer.eval()
    x = np.random.default_rng(1).standard_normal((5, 2, 4))
    out, _ = layer(x)
    expected, _ = module(torch.from_numpy(x))
    assert rel_err(out, expected.detach().numpy()) < FLOAT64_TOL


# ------------------------------------------------------------------ lengths


@pytest.mark.parametrize("cell", CELLS)
def test_length_zero_keeps_the_initial_state(backend, cell):
    """PyTorch's packed sequences refuse a length of 0; rnnfast gives the empty sequence: zero
    outputs, final state = initial state, and the final-state gradient goes to the initial
    state."""
    layer = new_layer(cell, 4, 5, np.float64, num_layers=2, bidirectional=True)
    x, hx, dy, dhx = problem(layer, 4, 3, seed=5)
    got = run_ours(layer, x, hx, dy, dhx, lengths=np.array([3, 0, 4]))
    lstm = cell == "lstm"
    assert not got["output"][:, 1].any() and not got["dx"][:, 1].any()
    for state, grad_name, d in (("h_n", "dh0", 0), ("c_n", "dc0", 1))[:1 + lstm]:
        initial = hx[d] if lstm else hx
        final_grad = dhx[d] if lstm else dhx
        np.testing.assert_array_equal(got[state][:, 1], initial[:, 1])
        np.testing.assert_array_equal(got[grad_name][:, 1], final_grad[:, 1])
    # the other sequences are those of a batch without it
    keep = [0, 2]
    sub = (tuple(s[:, keep] for s in hx) if lstm else hx[:, keep])
    dsub = (tuple(s[:, keep] for s in dhx) if lstm else dhx[:, keep])
    alone = run_ours(layer, x[:, keep], sub, dy[:, keep], dsub, lengths=np.array([3, 4]))
    for name in ("output", "dx"):
        assert rel_err(got[name][:, keep], alone[name]) < FLOAT64_TOL, name
    for name in ("h_n", "dh0") + (("c_n", "dc0") if lstm else ()):
        assert rel_err(got[name][:, keep], alone[name]) < FLOAT64_TOL, name


BAD = {
    "lengths_negative": ("lengths", {"lengths": np.array([2, -1, 3])}),
    "lengths_too_long": ("lengths", {"lengths": np.array([2, 5, 3])}),
    "lengths_shape": ("lengths", {"lengths": np.array([2, 3])}),
    "lengths_float": ("lengths", {"lengths": np.array([2.0, 1.0, 3.0])}),
    "resets_shape": ("resets", {"resets": np.zeros((3, 4), bool)}),
    "resets_dtype": ("resets", {"resets": np.zeros((4, 3), np.float32)}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_lengths_and_resets_raise(case):
    layer = new_layer("gru", 2, 3, np.float32, num_layers=2, bidirectional=True)
    word, options = BAD[case]
    with pytest.raises(ValueError, match=word):
        layer(np.zeros((4, 3, 2), np.float32), **options)


# ------------------------------------------------------------------ resets


def reference_run(layer, x, hx, dy, dhx, dtype, lengths=None, resets=None):
    """The layer's forward and backward by rnnfast.reference's step-by-step driver (time-major
    arrays; states given), in ``dtype``, with run_ours's keys."""
    lstm = layer._cell == "lstm"
    c = lambda a: None if a is None else np.asarray(a, dtype)  # noqa: E731
    params = {k: c(v) for k, v in layer.state_dict().items()}
    h0, c0 = (hx if lstm else (hx, None))
    y, h_n, c_n, cache = ref.forward_layers(layer._cell, c(x), params, layer.num_layers,
                                            layer.bidirectional, c(h0), c(c0), lengths, resets)
    dh, dc = (dhx if lstm else (dhx, None))
    dx, dh0, dc0, grads = ref.backward_layers(cache, c(dy), c(dh), c(dc))
    res = {"output": y, "h_n": h_n, "dx": dx, "dh0": dh0}
    if lstm:
        res.update({"c_n": c_n, "dc0": dc0})
    res.update({"d" + k: v for k, v in grads.items()})
    return res


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("cell,proj", [(cell, 0) for cell in CELLS] + [("lstm", 5)])
def test_resets_match_step_by_step_reference(backend, cell, proj, dtype, with_lengths):
    T, B = 7, 4
    layer = new_layer(cell, 6, 37, dtype, seed=9, num_layers=2, bidirectional=True,
                      **({"proj_size": proj} if proj else {}))
    x, hx, dy, dhx = problem(layer, T, B, seed=10)
    rng = np.random.default_rng(12)
    resets = rng.random((T, B)) < 0.3
    lengths = np.array([7, 2, 5, 0]) if with_lengths else None
    got = run_ours(layer, x, hx, dy, dhx, resets=resets, lengths=lengths)
    oracle = reference_run(layer, x, hx, dy, dhx, np.float64, lengths, resets)
    ref32 = reference_run(layer, x, hx, dy, dhx, np.float32, lengths, resets) \
        if dtype == np.float32 else None
    check(got, oracle, dtype, ref32, what=f"resets {cell}")


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [7, 33, 130])
@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_layers_in_one_persistent_launch(monkeypatch, cell, hidden):
    """The emulated CUDA backend's persistent path runs both directions of each layer's forward
    in one launch (recurrent_forward_pair, one a layer), and a stacked bidirectional
    layer with lengths (the reverse direction reversed within each length) and resets matches
    the step-by-step reference, forward and backward; tails of the blocks' units (4 SMs a
    direction: H = 7, 33, 130) and of the batch (B = 3)."""
    pairs = []

    def counted(*args, _run=_cuda_emulated.recurrent_forward_pair, **kwargs):
        pairs.append(args)
        return _run(*args, **kwargs)
    monkeypatch.setattr(_cuda_emulated, "recurrent_forward_pair", counted)
    T, B = 5, 3
    layer = new_layer(cell, 6, hidden, np.float32, seed=9, num_layers=2, bidirectional=True)
    x, hx, dy, dhx = problem(layer, T, B, seed=10)
    resets = np.random.default_rng(12).random((T, B)) < 0.3
    lengths = np.array([5, 0, 3])
    with backends.emulate_cuda(), backends.cuda_recurrence("persistent"):
        got = run_ours(layer, x, hx, dy, dhx, resets=resets, lengths=lengths)
    assert len(pairs) == 2  # a layer each
    oracle = reference_run(layer, x, hx, dy, dhx, np.float64, lengths, resets)
    ref32 = reference_run(layer, x, hx, dy, dhx, np.float32, lengths, resets)
    check(got, oracle, np.float32, ref32, what=f"persistent bidirectional {cell}")


@pytest.mark.parametrize("given_states", [True, False], ids=["hx", "zeros"])
@pytest.mark.parametrize("cell", CELLS)
def test_reset_everywhere_equals_two_sequences(backend, cell, given_states):
    """Resetting every sequence before step t0 gives what running x[:t0] and x[t0:] separately
    from the same initial states gives, in every layer and both directions (the reverse
    direction then starts x[:t0] at step t0 - 1); gradients add up."""
    T, B, t0 = 6, 3, 4
    layer = new_layer(cell, 5, 7, np.float64, seed=4, num_layers=2, bidirectional=True,
                      batch_first=True)
    x, hx, dy, _ = problem(layer, T, B, seed=6, given_states=given_states)
    resets = np.zeros((B, T), bool)  # batch_first: [B, T]
    resets[:, t0] = True
    got = run_ours(layer, x, hx, dy, None, resets=resets)
    first = run_ours(layer, x[:, :t0], hx, dy[:, :t0], None)
    second = run_ours(layer, x[:, t0:], hx, dy[:, t0:], None)
    for name in ("output", "dx"):
        expected = np.concatenate([first[name], second[name]], axis=1)
        assert rel_err(got[name], expected) < FLOAT64_TOL, name
    for name in got:
        if name.startswith("d") and name != "dx":
            assert rel_err(got[name], first[name] + second[name]) < FLOAT64_TOL, name
    # final states: forward directions (even rows) end in x[t0:], reverse ones in x[:t0]
    states = ("h_n", "c_n") if cell == "lstm" else ("h_n",)
    for name in states:
        assert rel_err(got[name][0::2], second[name][0::2]) < FLOAT64_TOL, name
        assert rel_err(got[name][1::2], first[name][1::2]) < FLOAT64_TOL, name


# ------------------------------------------------------------------ dropout


def dropout_layer(cell, dtype=np.float64, p=0.4, **options):
    return new_layer(cell, 3, 5, dtype, seed=7, num_layers=3, bidirectional=True, dropout=p,
                     **options)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_is_seeded(backend, cell):
    layer = dropout_layer(cell)
    x, hx, dy, dhx = problem(layer, 4, 2, seed=8)
    a = run_ours(layer, x, hx, dy, dhx, seed=1)
    b = run_ours(layer, x, hx, dy, dhx, seed=1)
    c = run_ours(layer, x, hx, dy, dhx, seed=2)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert not np.array_equal(a["output"], c["output"])
    # the layer's own generator: seeded by the layer's seed, advancing call after call
    layer1, layer2 = dropout_layer(cell), dropout_layer(cell)
    first = [layer1(x, hx)[0] for _ in range(2)]
    again = [layer2(x, hx)[0] for _ in range(2)]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(again[0], again[1])
    # eval mode: no dropout, the same as a layer without it
    plain = new_layer(cell, 3, 5, np.float64, seed=7, num_layers=3, bidirectional=True)
    layer.eval()
    plain.eval()
    assert np.array_equal(layer(x, hx)[0], plain(x, hx)[0])
    # p = 1 drops everything between layers: the last layer sees zeros, whatever the input
    full = dropout_layer(cell, p=1.0)
    out = full(x, hx)[0]
    assert np.isfinite(out).all()
    assert np.array_equal(out, full(2 * x, hx)[0])


@pytest.mark.parametrize("cell,proj", [(cell, 0) for cell in CELLS] + [("lstm", 2)])
def test_dropout_gradients_by_finite_differences(backend, cell, proj):
    """With the mask fixed (the same seed), the backward is the derivative of the forward."""
    layer = dropout_layer(cell, **({"proj_size": proj} if proj else {}))
    x, hx, dy, dhx = problem(layer, 3, 2, seed=9)
    lstm = cell == "lstm"
    got = run_ours(layer, x, hx, dy, dhx, seed=5)

    def loss(x_, hx_, params):
        layer.load_state_dict(params)
        out, state = layer(x_, hx_, seed=5)
        total = np.sum(out * dy)
        for s, d in zip(state if lstm else (state,), dhx if lstm else (dhx,)):
            total += np.sum(s * d)
        return total

    params = layer.state_dict()
    rng = np.random.default_rng(10)
    eps = 1e-6
    targets = [("dx", x, lambda v: (v, hx, params))]
    h_parts = list(hx) if lstm else [hx]
    for i, (name, h) in enumerate(zip(("dh0", "dc0"), h_parts)):
        def with_state(v, i=i):
            parts = list(h_parts)
            parts[i] = v
            return x, (tuple(parts) if lstm else parts[0]), params
        targets.append((name, h, with_state))
    for key in params:
        targets.append(("d" + key, params[key], lambda v, key=key: (x, hx, {**params, key: v})))
    for name, base, build in targets:
        for idx in [tuple(rng.integers(0, n) for n in base.shape) for _ in range(3)]:
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric = (loss(*build(plus)) - loss(*build(minus))) / (2 * eps)
            assert abs(got[name][idx] - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, idx)
    layer.load_state_dict(params)


def test_report_worst_errors():
    """Runs last in this file: prints the largest relative errors seen (pytest -s)."""
    print(f"\nlargest relative errors vs the oracle: float32 {WORST['float32']:.2e}, "
          f"float64 {WORST['float64']:.2e}")
