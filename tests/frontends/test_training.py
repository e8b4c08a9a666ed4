"""rnnfast.training: gradient clipping, SGD, Adam and truncated BPTT.

Oracles: PyTorch's own clip_grad_norm_, torch.optim.SGD and torch.optim.Adam on the same float64
values (the formulas are PyTorch's, so only the order of floating-point operations may differ:
FLOAT64_TOL), and for truncated BPTT the float64 reference run chunk by chunk with the states
carried and no gradient into the previous chunk (the definition).
"""

import numpy as np
import pytest

import rnnfast
from rnnfast import reference as ref
from rnnfast.training import SGD, Adam, clip_grad_norm, truncated_bptt

from _util import FLOAT64_TOL, rel_err

torch = pytest.importorskip("torch")  # the oracle of clipping and the optimizers


def random_dicts(seed, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{"w": (scale * rng.standard_normal((4, 3))).astype(dtype),
             "b": (scale * rng.standard_normal(4)).astype(dtype)},
            {"weight_hh_l0": (scale * rng.standard_normal((6, 2))).astype(dtype)}]


def as_tensors(dicts, grads=None):
    """Torch leaf tensors with the values of ``dicts`` (and .grad from ``grads``), in order."""
    tensors = []
    for i, d in enumerate(dicts):
        for key, value in d.items():
            t = torch.tensor(value, requires_grad=True)
            if grads is not None:
                t.grad = torch.tensor(grads[i][key])
            tensors.append(t)
    return tensors


def flat(dicts):
    return [v for d in dicts for v in d.values()]


# ------------------------------------------------------------------ clip_grad_norm


@pytest.mark.parametrize("max_norm", [0.5, 1e3, float("inf")], ids=["clipped", "unchanged", "inf"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_matches_torch(max_norm, dtype):
    grads = random_dicts(1, dtype)
    tensors = as_tensors(random_dicts(1, dtype), random_dicts(1, dtype))
    before = [g.copy() for g in flat(grads)]
    norm = clip_grad_norm(grads, max_norm)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    # float32: the norm is summed in float64 here and in float32 by torch; a few ulps of 1e-7.
    tol = FLOAT64_TOL if dtype == np.float64 else 1e-6
    assert abs(norm - float(torch_norm)) <= tol * norm
    for got, t in zip(flat(grads), tensors):
        assert got.dtype == dtype
        assert rel_err(got, t.grad.numpy()) <= tol
    expected_norm = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in before))
    assert abs(norm - expected_norm) <= tol * expected_norm
    if max_norm > norm:
        for got, b in zip(flat(grads), before):
            np.testing.assert_array_equal(got, b)
    else:
        after = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in flat(grads)))
        assert abs(after - max_norm) <= 1e-5 * max_norm  # max_norm / (norm + 1e-6) * norm


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("max_norm", [1.0, float("inf")])
def test_clip_grad_norm_of_non_finite_gradients_is_torchs(bad, max_norm):
    grads = random_dicts(1)
    grads[0]["w"][1, 2] = bad
    tensors = as_tensors(grads, grads)
    norm = clip_grad_norm(grads, max_norm)
    torch_norm = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    assert norm == torch_norm or (np.isnan(norm) and np.isnan(torch_norm))
    for got, t in zip(flat(grads), tensors):
        np.testing.assert_array_equal(got, t.grad.numpy())  # NaN equal to NaN here


def test_clip_grad_norm_of_one_dict_and_of_a_layer_gradient():
    layer = rnnfast.GRU(3, 5, seed=0)
    out, _ = layer(np.ones((4, 2, 3), np.float32))
    layer.backward(np.ones_like(out) * 10)
    want = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in layer.grads.values()))
    assert abs(clip_grad_norm(layer.grads, 0.1) - want) <= 1e-6 * want
    got = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in layer.grads.values()))
    assert abs(got - 0.1) <= 1e-5


@pytest.mark.parametrize("bad,error,name", [
    ({"max_norm": -1.0}, ValueError, "max_norm"),
    ({"max_norm": float("nan")}, ValueError, "max_norm"),
    ({"max_norm": "1"}, ValueError, "max_norm"),
    ({"grads": [np.ones(3)]}, TypeError, "grads[0]"),
    ({"grads": {"w": np.ones(3, int)}}, TypeError, "grads['w']"),
    ({"grads": []}, ValueError, "grads"),
])
def test_clip_grad_norm_refuses_bad_arguments(bad, error, name):
    kwargs = {"grads": {"w": np.ones(3)}, "max_norm": 1.0, **bad}
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
        clip_grad_norm(**kwargs)


# ------------------------------------------------------------------ optimizers


def run_both(ours, theirs, steps=5, dtype=np.float64):
    """``steps`` updates with fresh random gradients by our optimizer class (ours(params)) and
    torch's (theirs(tensors)) from the same start; returns (our params, torch tensors)."""
    params = random_dicts(2, dtype)
    tensors = as_tensors(params)
    optimizer, torch_optimizer = ours(params), theirs(tensors)
    for step in range(steps):
        grads = random_dicts(100 + step, dtype)
        optimizer.step(grads)
        for t, g in zip(tensors, flat(grads)):
            t.grad = torch.tensor(g)
        torch_optimizer.step()
    return params, tensors


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.1}, {"betas": (0.5, 0.9), "eps": 1e-3}])
def test_adam_matches_torch(options):
    params, tensors = run_both(lambda p: Adam(p, lr=0.01, **options),
                               lambda t: torch.optim.Adam(t, lr=0.01, **options))
    for got, t in zip(flat(params), tensors):
        assert rel_err(got, t.detach().numpy()) <= FLOAT64_TOL


@pytest.mark.parametrize("options",
                         [{}, {"momentum": 0.9}, {"momentum": 0.5, "weight_decay": 0.01}])
def test_sgd_matches_torch(options):
    params, tensors = run_both(lambda p: SGD(p, lr=0.1, **options),
                               lambda t: torch.optim.SGD(t, lr=0.1, **options))
    for got, t in zip(flat(params), tensors):
        assert rel_err(got, t.detach().numpy()) <= FLOAT64_TOL


def test_adam_float32_stays_float32_and_close_to_torch():
    params, tensors = run_both(lambda p: Adam(p, lr=0.01), lambda t: torch.optim.Adam(t, lr=0.01),
                               dtype=np.float32)
    for got, t in zip(flat(params), tensors):
        assert got.dtype == np.float32
        # Both in float32: a few ulps of the parameters (values of order 1) per step.
        assert rel_err(got, t.detach().numpy()) <= 1e-6


def test_optimizer_updates_a_layer_in_place():
    layer = rnnfast.LSTM(3, 4, num_layers=2, dtype="float64", seed=1)
    start = layer.state_dict()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = layer(x)
    layer.backward(out)
    Adam(layer, lr=0.1).step(layer.grads)
    after = layer.state_dict()
    for name, value in start.items():
        # Adam's first step: m = g, sqrt(v / (1 - b2)) = |g|, so p moves by lr g / (|g| + eps).
        g = layer.grads[name]
        assert rel_err(after[name], value - 0.1 * g / (np.abs(g) + 1e-8)) <= FLOAT64_TOL
    out2, _ = layer(x)  # the layer computes with the updated parameters
    assert not np.allclose(out2, out)


def test_optimizer_refuses_bad_arguments():
    params = {"w": np.ones(3)}
    with pytest.raises(ValueError, match="lr"):
        Adam(params, lr=0)
    with pytest.raises(ValueError, match="betas"):
        Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="momentum"):
        SGD(params, lr=0.1, momentum=-1)
    with pytest.raises(TypeError, match="params"):
        SGD([params, 3], lr=0.1)
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\]\['w'\] is read-only"):
        SGD({"w": read_only}, lr=0.1)
    optimizer = SGD(params, lr=0.1)
    with pytest.raises(KeyError, match="missing"):
        optimizer.step({"v": np.ones(3)})
    with pytest.raises(ValueError, match=r"grads\[0\]\['w'\] has shape"):
        optimizer.step({"w": np.ones(4)})
    with pytest.raises(ValueError, match="grads has 2 dicts"):
        optimizer.step([{"w": np.ones(3)}, {"w": np.ones(3)}])
    np.testing.assert_array_equal(params["w"], np.ones(3))  # refused steps changed nothing


# ------------------------------------------------------------------ truncated BPTT


def layer_params(layer):
    return {k: v.astype(np.float64) for k, v in layer.state_dict().items()}


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_truncated_bptt_matches_reference_chunk_by_chunk(cell, batch_first):
    T, B, I, H, chunk = 23, 3, 4, 5, 6  # chunks of 6, 6, 6, 5 steps
    make = {"rnn_tanh": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell]
    layer = make(I, H, num_layers=2, batch_first=batch_first, dtype="float64", seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))                  # time-major, as the reference
    dy = rng.standard_normal((T, B, H))                 # loss = sum(output * dy)
    shape = (2, B, H)
    hx0 = (rng.standard_normal(shape), rng.standard_normal(shape))
    hx = hx0 if cell == "lstm" else hx0[0]
    params = layer_params(layer)

    outputs, grads = [], []

    def loss_and_grad(output, steps):
        out = output.transpose(1, 0, 2) if batch_first else output
        outputs.append(out)
        g = dy[steps]
        return float(np.sum(out * g)), (g.transpose(1, 0, 2) if batch_first else g)

    layer_input = x.transpose(1, 0, 2) if batch_first else x
    states, grad_inputs = [], []
    for k, step in enumerate(truncated_bptt(layer, layer_input, chunk, loss_and_grad, hx=hx)):
        assert step.steps == slice(6 * k, min(6 * k + 6, T))
        assert step.loss == pytest.approx(np.sum(outputs[k] * dy[step.steps]), rel=1e-12)
        grads.append(dict(layer.grads))
        states.append(step.state)
        grad_inputs.append(step.grad_input.transpose(1, 0, 2) if batch_first else step.grad_input)
    assert len(grads) == 4 and outputs[-1].shape[0] == 5

    # The oracle: the reference chunk by chunk, each from the previous chunk's final states,
    # each backpropagated alone (dh_n = dc_n = None: nothing flows into the previous chunk).
    h, c = hx0 if cell == "lstm" else (hx0[0], None)
    for k, start in enumerate(range(0, T, chunk)):
        steps = slice(start, start + chunk)
        y, h, c, cache = ref.forward_layers(cell, x[steps], params, 2, False, h, c)
        assert rel_err(outputs[k], y) <= FLOAT64_TOL
        got_h = states[k][0] if cell == "lstm" else states[k]
        assert rel_err(got_h, h) <= FLOAT64_TOL
        dx, _, _, want = ref.backward_layers(cache, dy[steps])
        assert rel_err(grad_inputs[k], dx) <= FLOAT64_TOL
        for name, value in want.items():
            assert rel_err(grads[k][name], value) <= FLOAT64_TOL, (k, name)

    # Forward, the chunks compute exactly the whole sequence; backward, the truncation is real:
    # the summed chunk gradients differ from full backpropagation through time.
    y, _, _, cache = ref.forward_layers(cell, x, params, 2, False, *(hx0 if cell == "lstm"
                                                                     else (hx0[0], None)))
    assert rel_err(np.concatenate(outputs), y) <= FLOAT64_TOL
    _, _, _, full = ref.backward_layers(cache, dy)
    summed = sum(g["weight_hh_l0"] for g in grads)
    assert rel_err(summed, full["weight_hh_l0"]) > 1e-3


def test_truncated_bptt_steps_an_optimizer_between_chunks():
    layer = rnnfast.GRU(1, 8, dtype="float64", seed=0)
    optimizer = SGD(layer, lr=0.05)
    x = np.sin(np.arange(200) / 5.0)[:, None, None]
    target = np.roll(x, -1, axis=0)                   # predict the next value of a sine
    readout = np.full((1, 8), 0.1)

    def loss_and_grad(output, steps):
        err = output @ readout.T - target[steps]
        return float(np.mean(err ** 2)), 2 * err @ readout / err.size

    losses = []
    for _ in range(30):
        for chunk in truncated_bptt(layer, x, 25, loss_and_grad):
            optimizer.step(layer.grads)
            losses.append(chunk.loss)
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])


def test_truncated_bptt_refuses_bad_arguments():
    layer = rnnfast.GRU(2, 3)
    x = np.zeros((5, 1, 2), np.float32)
    # Checked when called, before the first chunk runs: no list() around it.
    run = lambda **kw: truncated_bptt(**{"layer": layer, "input": x, "chunk_size": 2,  # noqa: E731
                                         "loss_and_grad": lambda o, s: (0.0, o), **kw})
    with pytest.raises(ValueError, match="chunk_size"):
        run(chunk_size=0)
    with pytest.raises(TypeError, match="loss_and_grad"):
        run(loss_and_grad=None)
    with pytest.raises(TypeError, match="layer"):
        run(layer=rnnfast.GRUCell(2, 3))
    with pytest.raises(ValueError, match="input"):
        run(input=np.zeros((5,), np.float32))
    layer.eval()
    with pytest.raises(ValueError, match="eval mode"):
        run()
