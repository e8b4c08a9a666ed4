"""The PyTorch-shaped layers rnnfast.RNN, rnnfast.GRU and rnnfast.LSTM.

Numbers are checked against the NumPy reference with the tolerance rule of _util.py, on weights
loaded with load_state_dict, so the layer and the oracle see exactly the same parameters.
"""

import numpy as np
import pytest

import rnnfast
from rnnfast import _cuda_emulated, backends
from rnnfast.cell_registry import SPECS

from _util import (
    DTYPES,
    GATES,
    assert_matches_oracle,
    assert_unchanged,
    copies,
    make_problem,
)

# (rnnfast's class, its arguments for the cell, the cell) of every registered cell
LAYERS = [pytest.param(s.torch_class, dict(s.torch_options), cell, id=cell)
          for cell, s in SPECS.items()]
DTYPE_NAMES = {np.float32: "float32", np.float64: "float64"}
DTYPE_IDS = ["f32", "f64"]
LAYOUTS = ("time_major", "batch_first", "unbatched")
KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
# state_dict key -> name in the reference's argument lists
TO_REF = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh", "bias_ih_l0": "b_ih",
          "bias_hh_l0": "b_hh"}


def new_layer(kind, kwargs, I, H, dtype=np.float32, bias=True, seed=0, **extra):
    cls = getattr(rnnfast, kind)
    return cls(I, H, bias=bias, dtype=DTYPE_NAMES[dtype], seed=seed, **kwargs, **extra)


def state_from(inputs):
    return {k: inputs[v] for k, v in TO_REF.items() if inputs[v] is not None}


def layer_with(kind, kwargs, inputs, dtype, batch_first=False):
    """A layer holding the weights of a _util.make_problem problem."""
    gh, I = inputs["w_ih"].shape
    H = inputs["w_hh"].shape[1]
    layer = new_layer(kind, kwargs, I, H, dtype, bias=inputs["b_ih"] is not None,
                      seed=123, batch_first=batch_first)
    layer.load_state_dict(state_from(inputs))
    return layer


# Arrays of the reference's layout ([T, B, C] sequences, [B, H] states) to and from the layer's.
def seq_to_layer(a, layout):
    if layout == "batch_first":
        return np.ascontiguousarray(a.transpose(1, 0, 2))
    if layout == "unbatched":
        assert a.shape[1] == 1
        return np.ascontiguousarray(a[:, 0, :])
    return a


def seq_from_layer(a, layout):
    if layout == "batch_first":
        return a.transpose(1, 0, 2)
    if layout == "unbatched":
        return a[:, None, :]
    return a


def state_to_layer(s, layout):
    if s is None:
        return None
    return s if layout == "unbatched" else s[None]  # [1, H] (B = 1) or [1, B, H]


def state_from_layer(s, layout):
    return s if layout == "unbatched" else s[0]


def hx_for(cell, h, c):
    return (h, c) if cell == "lstm" else h


def call(layer, cell, x, hx):
    """Returns (output, h_n, c_n) whatever the cell; c_n None unless LSTM."""
    output, state = layer(x, hx)
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        return output, state[0], state[1]
    assert isinstance(state, np.ndarray)
    return output, state, None


def run_layer(layer, cell, inputs, douts, layout, backward=True):
    """Forward (and backward) through a layer; results in _util.reference_results' keys."""
    x = seq_to_layer(inputs["x"], layout)
    hx = hx_for(cell, state_to_layer(inputs["h0"], layout), state_to_layer(inputs["c0"], layout))
    output, h_n, c_n = call(layer, cell, x, hx)
    T, B, _ = inputs["x"].shape
    H = inputs["w_hh"].shape[1]
    expected_out = {"time_major": (T, B, H), "batch_first": (B, T, H), "unbatched": (T, H)}
    expected_state = (1, H) if layout == "unbatched" else (1, B, H)
    assert output.shape == expected_out[layout]
    assert h_n.shape == expected_state
    got = {"y": seq_from_layer(output, layout), "h_n": state_from_layer(h_n, layout)}
    if cell == "lstm":
        assert c_n.shape == expected_state
        got["c_n"] = state_from_layer(c_n, layout)
    if not backward:
        return got
    grad_hx = hx_for(cell, state_to_layer(douts["dh_n"], layout),
                     state_to_layer(douts["dc_n"], layout))
    dx, dhx = layer.backward(seq_to_layer(douts["dy"], layout), grad_hx)
    assert dx.shape == x.shape
    got["dx"] = seq_from_layer(dx, layout)
    if cell == "lstm":
        assert isinstance(dhx, tuple) and len(dhx) == 2
        assert dhx[0].shape == expected_state and dhx[1].shape == expected_state
        got["dh0"] = state_from_layer(dhx[0], layout)
        got["dc0"] = state_from_layer(dhx[1], layout)
    else:
        assert isinstance(dhx, np.ndarray) and dhx.shape == expected_state
        got["dh0"] = state_from_layer(dhx, layout)
    sd = layer.state_dict()
    assert set(layer.grads) == set(sd)
    for k, v in layer.grads.items():
        assert v.shape == sd[k].shape, k
        got["d" + TO_REF[k]] = v
    return got


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_state_dict_names_shapes_dtypes(kind, kwargs, cell, bias, dtype):
    I, H = 5, 7
    layer = new_layer(kind, kwargs, I, H, dtype, bias=bias)
    assert layer.training is True
    sd = layer.state_dict()
    G = GATES[cell]
    expected = {"weight_ih_l0": (G * H, I), "weight_hh_l0": (G * H, H)}
    if bias:
        expected.update({"bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,)})
    assert set(sd) == set(expected)
    for k, shape in expected.items():
        assert isinstance(sd[k], np.ndarray), k
        assert sd[k].shape == shape, k
        assert sd[k].dtype == dtype, k


def test_default_dtype_is_float32():
    for layer in (rnnfast.RNN(3, 4), rnnfast.GRU(3, 4), rnnfast.LSTM(3, 4)):
        assert all(v.dtype == np.float32 for v in layer.state_dict().values())


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_init_uniform_in_pytorch_range(kind, kwargs, cell):
    I, H = 20, 32
    layer = new_layer(kind, kwargs, I, H, np.float64, seed=5)
    bound = 1 / np.sqrt(H)
    values = np.concatenate([v.ravel() for v in layer.state_dict().values()])
    assert values.size >= 1700
    assert np.max(np.abs(values)) <= bound * (1 + 1e-12)
    # uniform over the whole range: reaches near both ends, centred, std of U(-k, k) = k/sqrt(3)
    # (thousands of samples: these margins are many standard errors wide)
    assert values.max() > 0.9 * bound and values.min() < -0.9 * bound
    assert abs(values.mean()) < 0.1 * bound
    assert abs(values.std() / (bound / np.sqrt(3)) - 1) < 0.15
    for k, v in layer.state_dict().items():
        assert np.unique(v).size == v.size, f"{k}: repeated values"


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_seed_makes_init_deterministic(kind, kwargs, cell):
    a = new_layer(kind, kwargs, 6, 5, seed=42).state_dict()
    b = new_layer(kind, kwargs, 6, 5, seed=42).state_dict()
    c = new_layer(kind, kwargs, 6, 5, seed=43).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_invalid_nonlinearity_raises():
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnfast.RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_dropout_on_one_layer_warns_as_pytorch(kind):
    # PyTorch applies dropout between stacked layers only, and warns that one layer has none.
    with pytest.warns(UserWarning, match="dropout"):
        layer = getattr(rnnfast, kind)(3, 4, dropout=0.5, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    plain = getattr(rnnfast, kind)(3, 4, seed=0)
    assert np.array_equal(layer(x)[0], plain(x)[0])


# ------------------------------------------------------------------ load_state_dict


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_load_state_dict_round_trip(kind, kwargs, cell, bias):
    src = new_layer(kind, kwargs, 6, 5, bias=bias, seed=1)
    dst = new_layer(kind, kwargs, 6, 5, bias=bias, seed=2)
    dst.load_state_dict(src.state_dict())
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)
    x = np.random.default_rng(0).standard_normal((4, 3, 6)).astype(np.float32)
    out_src, out_dst = src(x)[0], dst(x)[0]
    assert np.array_equal(out_src, out_dst)


@pytest.mark.parametrize("form", ["list", "float64", "fortran"])
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_load_state_dict_accepts_array_likes(kind, kwargs, cell, form):
    src = new_layer(kind, kwargs, 6, 5, seed=1).state_dict()  # float32 values
    convert = {"list": lambda a: a.tolist(), "float64": lambda a: a.astype(np.float64),
               "fortran": np.asfortranarray}[form]
    dst = new_layer(kind, kwargs, 6, 5, seed=2)
    dst.load_state_dict({k: convert(v) for k, v in src.items()})
    for k, v in src.items():
        got = dst.state_dict()[k]
        assert got.dtype == np.float32, k
        np.testing.assert_array_equal(got, v, err_msg=k)  # float32 values convert exactly


def _bad_state(cell, case):
    """(state dict, key the message must name, accepted exception types)."""
    G, H, I = GATES[cell], 5, 6
    sd = {
        "weight_ih_l0": np.zeros((G * H, I), np.float32),
        "weight_hh_l0": np.zeros((G * H, H), np.float32),
        "bias_ih_l0": np.zeros(G * H, np.float32),
        "bias_hh_l0": np.zeros(G * H, np.float32),
    }
    lookup = (KeyError, ValueError)
    if case == "missing_weight_hh":
        del sd["weight_hh_l0"]
        return sd, "weight_hh_l0", lookup
    if case == "missing_bias_ih":
        del sd["bias_ih_l0"]
        return sd, "bias_ih_l0", lookup
    if case == "unexpected_layer1":
        sd["weight_ih_l1"] = np.zeros((G * H, H), np.float32)
        return sd, "weight_ih_l1", lookup
    if case == "unexpected_name":
        sd["weight_hr_l0"] = np.zeros((H, H), np.float32)
        return sd, "weight_hr_l0", lookup
    if case == "shape_weight_ih":
        sd["weight_ih_l0"] = np.zeros((G * H, I + 1), np.float32)
        return sd, "weight_ih_l0", (ValueError,)
    if case == "shape_weight_hh_transposed":
        sd["weight_hh_l0"] = np.zeros((H, G * H) if G > 1 else (H, H + 1), np.float32)
        return sd, "weight_hh_l0", (ValueError,)
    if case == "shape_bias_hh":
        sd["bias_hh_l0"] = np.zeros(G * H + 1, np.float32)
        return sd, "bias_hh_l0", (ValueError,)
    if case == "shape_bias_2d":
        sd["bias_ih_l0"] = np.zeros((1, G * H), np.float32)
        return sd, "bias_ih_l0", (ValueError,)
    raise AssertionError(case)


BAD_STATE_CASES = [
    "missing_weight_hh", "missing_bias_ih", "unexpected_layer1", "unexpected_name",
    "shape_weight_ih", "shape_weight_hh_transposed", "shape_bias_hh", "shape_bias_2d",
]


@pytest.mark.parametrize("case", BAD_STATE_CASES)
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_load_state_dict_errors_name_the_key(kind, kwargs, cell, case):
    layer = new_layer(kind, kwargs, 6, 5)
    sd, key, errors = _bad_state(cell, case)
    with pytest.raises(errors) as excinfo:
        layer.load_state_dict(sd)
    assert key in str(excinfo.value)


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_load_state_dict_bias_keys_into_layer_without_bias(kind, kwargs, cell):
    with_bias = new_layer(kind, kwargs, 6, 5, bias=True).state_dict()
    layer = new_layer(kind, kwargs, 6, 5, bias=False)
    with pytest.raises((KeyError, ValueError)) as excinfo:
        layer.load_state_dict(with_bias)
    assert "bias_ih_l0" in str(excinfo.value) or "bias_hh_l0" in str(excinfo.value)


# ------------------------------------------------------------------ numbers vs the reference


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_forward_backward_match_reference(backend, kind, kwargs, cell, dtype, layout):
    B = 1 if layout == "unbatched" else 3
    inputs, douts = make_problem(cell, 5, B, 7, 33, dtype, seed=len(layout) * 7 + len(cell))
    layer = layer_with(kind, kwargs, inputs, dtype, batch_first=layout == "batch_first")
    got = run_layer(layer, cell, inputs, douts, layout)
    assert_matches_oracle(cell, inputs, douts, got, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_no_bias_matches_reference(kind, kwargs, cell, dtype):
    inputs, douts = make_problem(cell, 4, 3, 33, 7, dtype, bias=False, seed=9)
    layer = layer_with(kind, kwargs, inputs, dtype)
    got = run_layer(layer, cell, inputs, douts, "time_major")
    assert "db_ih" not in got and "db_hh" not in got
    assert_matches_oracle(cell, inputs, douts, got, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_hx_none_equals_zeros(kind, kwargs, cell, layout):
    B = 1 if layout == "unbatched" else 3
    inputs, _ = make_problem(cell, 5, B, 7, 33, np.float32, seed=17)
    layer = layer_with(kind, kwargs, inputs, np.float32, batch_first=layout == "batch_first")
    x = seq_to_layer(inputs["x"], layout)
    zeros = state_to_layer(np.zeros_like(inputs["h0"]), layout)
    out0, h0_, c0_ = call(layer, cell, x, hx_for(cell, zeros, zeros.copy()))
    out1, h1_, c1_ = call(layer, cell, x, None)
    out2, st2 = layer(x)
    np.testing.assert_allclose(out1, out0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h1_, h0_, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out2, out1)
    if cell == "lstm":
        np.testing.assert_allclose(c1_, c0_, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(st2[1], c1_)
    # and the reference with zero initial state agrees
    inputs_zero = {**inputs, "h0": np.zeros_like(inputs["h0"]),
                   "c0": None if cell != "lstm" else np.zeros_like(inputs["h0"])}
    assert_matches_oracle(cell, inputs_zero, None,
                          {"y": seq_from_layer(out1, layout),
                           "h_n": state_from_layer(h1_, layout)}, np.float32)


def _grad_hx_cases():
    cases = []
    for p in LAYERS:
        kind, kwargs, cell = p.values
        if cell == "lstm":
            variants = ["none", "both", "h_only", "c_only", "neither"]
        else:
            variants = ["none", "array"]
        cases += [pytest.param(kind, kwargs, cell, v, id=f"{p.id}-{v}") for v in variants]
    return cases


@pytest.mark.parametrize("kind,kwargs,cell,variant", _grad_hx_cases())
def test_backward_grad_hx_variants(kind, kwargs, cell, variant):
    dtype = np.float64
    inputs, douts = make_problem(cell, 5, 3, 7, 33, dtype, seed=23)
    layer = layer_with(kind, kwargs, inputs, dtype)
    x = inputs["x"]
    hx = hx_for(cell, inputs["h0"][None], None if inputs["c0"] is None else inputs["c0"][None])
    call(layer, cell, x, hx)
    dh, dc = douts["dh_n"][None], (None if douts["dc_n"] is None else douts["dc_n"][None])
    grad_hx = {
        "none": None, "array": dh, "both": (dh, dc), "h_only": (dh, None),
        "c_only": (None, dc), "neither": (None, None),
    }[variant]
    used_dh = variant in ("array", "both", "h_only")
    used_dc = variant in ("both", "c_only")
    dx, dhx = layer.backward(douts["dy"], grad_hx)
    eff = {"dy": douts["dy"], "dh_n": douts["dh_n"] if used_dh else None,
           "dc_n": douts["dc_n"] if used_dc else None}
    got = {"dx": dx, "dh0": (dhx[0] if cell == "lstm" else dhx)[0]}
    if cell == "lstm":
        got["dc0"] = dhx[1][0]
    got.update({"d" + TO_REF[k]: v for k, v in layer.grads.items()})
    assert_matches_oracle(cell, inputs, eff, got, dtype)


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_call_and_forward_are_the_same(kind, kwargs, cell):
    inputs, _ = make_problem(cell, 4, 3, 7, 7, np.float32, seed=29)
    layer = layer_with(kind, kwargs, inputs, np.float32)
    out_a, st_a = layer(inputs["x"])
    out_b, st_b = layer.forward(inputs["x"])
    np.testing.assert_array_equal(out_a, out_b)
    if cell == "lstm":
        np.testing.assert_array_equal(st_a[0], st_b[0])
        np.testing.assert_array_equal(st_a[1], st_b[1])
    else:
        np.testing.assert_array_equal(st_a, st_b)


# ------------------------------------------------------------------ training mode


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_eval_and_train_switch_mode(kind, kwargs, cell):
    layer = new_layer(kind, kwargs, 4, 5)
    assert layer.training is True
    assert layer.eval() is layer
    assert layer.training is False
    assert layer.train() is layer
    assert layer.training is True


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_eval_output_equals_training_output(kind, kwargs, cell):
    inputs, _ = make_problem(cell, 6, 3, 33, 130, np.float32, seed=31)
    layer = layer_with(kind, kwargs, inputs, np.float32)
    hx = hx_for(cell, inputs["h0"][None], None if inputs["c0"] is None else inputs["c0"][None])
    train = call(layer, cell, inputs["x"], hx)
    infer = call(layer.eval(), cell, inputs["x"], hx)
    for a, b in zip(train, infer):
        if a is None:
            assert b is None
        else:
            assert np.array_equal(a, b)


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_backward_without_forward_raises(kind, kwargs, cell):
    layer = new_layer(kind, kwargs, 4, 5)
    with pytest.raises(RuntimeError):
        layer.backward(np.zeros((3, 2, 5), np.float32))


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_backward_after_eval_forward_raises(kind, kwargs, cell):
    layer = new_layer(kind, kwargs, 4, 5).eval()
    layer(np.ones((3, 2, 4), np.float32))
    with pytest.raises(RuntimeError):
        layer.backward(np.zeros((3, 2, 5), np.float32))


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_grads_are_set_not_accumulated(kind, kwargs, cell):
    inputs, douts = make_problem(cell, 4, 3, 7, 33, np.float64, seed=37)
    layer = layer_with(kind, kwargs, inputs, np.float64)
    first = run_layer(layer, cell, inputs, douts, "time_major")
    first = copies(first)
    second = run_layer(layer, cell, inputs, douts, "time_major")
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh", "dx", "dh0"):
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)
    assert_matches_oracle(cell, inputs, douts, second, np.float64)


# ------------------------------------------------------------------ bad input

T0, B0, I0, H0 = 4, 3, 5, 6

BAD_FORWARD = {
    "input_rank4": ("input", lambda x, h: (x[..., None], h)),
    "input_rank1": ("input", lambda x, h: (x[0, 0], h)),
    "input_size": ("input", lambda x, h: (np.zeros((T0, B0, I0 + 1), np.float32), h)),
    "input_float64": ("input", lambda x, h: (x.astype(np.float64), h)),
    "input_int": ("input", lambda x, h: (x.astype(np.int64), h)),
    "input_unbatched_with_batched_hx": ("hx", lambda x, h: (x[:, 0], h)),
    "hx_rank2": ("hx", lambda x, h: (x, h[0])),
    "hx_layers": ("hx", lambda x, h: (x, np.zeros((2, B0, H0), np.float32))),
    "hx_batch": ("hx", lambda x, h: (x, np.zeros((1, B0 + 1, H0), np.float32))),
    "hx_hidden": ("hx", lambda x, h: (x, np.zeros((1, B0, H0 + 1), np.float32))),
    "hx_float64": ("hx", lambda x, h: (x, h.astype(np.float64))),
}


def _bad_forward_cases():
    cases = []
    for p in LAYERS:
        kind, kwargs, cell = p.values
        for name in BAD_FORWARD:
            parts = ("h", "c") if (cell == "lstm" and name.startswith("hx")) else ("h",)
            for part in parts:
                suffix = f"-{part}0" if cell == "lstm" and name.startswith("hx") else ""
                cases.append(pytest.param(kind, kwargs, cell, name, part,
                                          id=f"{p.id}-{name}{suffix}"))
    return cases


@pytest.mark.parametrize("kind,kwargs,cell,case,part", _bad_forward_cases())
def test_bad_forward_input_names_the_argument(kind, kwargs, cell, case, part):
    rng = np.random.default_rng(41)
    layer = new_layer(kind, kwargs, I0, H0)
    x = rng.standard_normal((T0, B0, I0)).astype(np.float32)
    h = rng.standard_normal((1, B0, H0)).astype(np.float32)
    word, make = BAD_FORWARD[case]
    if cell == "lstm":
        c = rng.standard_normal((1, B0, H0)).astype(np.float32)
        if part == "h":
            x2, h2 = make(x, h)
            hx = (h2, c)
        else:
            x2, c2 = make(x, c)
            hx = (h, c2)
    else:
        x2, hx = make(x, h)
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer(x2, hx)
    assert word in str(excinfo.value)


def test_lstm_hx_must_be_a_pair():
    layer = rnnfast.LSTM(I0, H0)
    x = np.zeros((T0, B0, I0), np.float32)
    h = np.zeros((1, B0, H0), np.float32)
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer(x, h)
    assert "hx" in str(excinfo.value)
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer(x, (h, h, h))
    assert "hx" in str(excinfo.value)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_float32_input_into_float64_layer_raises(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    layer = rnnfast.GRU(I0, H0, dtype=DTYPE_NAMES[dtype])
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer(np.zeros((T0, B0, I0), other))
    assert "input" in str(excinfo.value)


BAD_BACKWARD = {
    "grad_output_shape": ("grad_output", lambda g, d: (np.zeros((T0, B0, H0 + 1), np.float32), d)),
    "grad_output_rank": ("grad_output", lambda g, d: (g.reshape(T0 * B0, H0), d)),
    "grad_output_seq": ("grad_output", lambda g, d: (g[:-1], d)),
    "grad_output_float64": ("grad_output", lambda g, d: (g.astype(np.float64), d)),
    "grad_output_int": ("grad_output", lambda g, d: (g.astype(np.int32), d)),
    "grad_hx_shape": ("grad_hx", lambda g, d: (g, np.zeros((1, B0, H0 + 1), np.float32))),
    "grad_hx_rank": ("grad_hx", lambda g, d: (g, d[0])),
    "grad_hx_float64": ("grad_hx", lambda g, d: (g, d.astype(np.float64))),
}


@pytest.mark.parametrize("case", list(BAD_BACKWARD))
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_bad_backward_input_names_the_argument(kind, kwargs, cell, case):
    rng = np.random.default_rng(43)
    layer = new_layer(kind, kwargs, I0, H0)
    layer(rng.standard_normal((T0, B0, I0)).astype(np.float32))
    g = rng.standard_normal((T0, B0, H0)).astype(np.float32)
    d = rng.standard_normal((1, B0, H0)).astype(np.float32)
    word, make = BAD_BACKWARD[case]
    g2, d2 = make(g, d)
    grad_hx = (d2, None) if cell == "lstm" else d2
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer.backward(g2, grad_hx)
    assert word in str(excinfo.value)


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_batch_first_grad_output_must_be_batch_first(kind, kwargs, cell):
    layer = new_layer(kind, kwargs, I0, H0, batch_first=True)
    out, _ = layer(np.ones((B0, T0, I0), np.float32))
    assert out.shape == (B0, T0, H0)
    with pytest.raises((ValueError, TypeError)) as excinfo:
        layer.backward(np.zeros((T0, B0, H0), np.float32))  # time-major: wrong here (T0 != B0)
    assert "grad_output" in str(excinfo.value)


# ------------------------------------------------------------------ array handling


def _views(kind_of_view, a):
    if kind_of_view == "strided":
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        buf[..., ::2] = a
        v = buf[..., ::2]
    elif kind_of_view == "transposed":
        # the same values, stored transposed: the view of a transposed contiguous array
        v = np.ascontiguousarray(a.T).T
    else:
        raise AssertionError(kind_of_view)
    assert not v.flags.c_contiguous
    np.testing.assert_array_equal(v, a)
    return v


@pytest.mark.parametrize("view", ["strided", "transposed"])
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_noncontiguous_arrays_give_same_result(kind, kwargs, cell, view):
    inputs, douts = make_problem(cell, 5, 3, 7, 33, np.float32, seed=47)
    layer = layer_with(kind, kwargs, inputs, np.float32)
    expected = run_layer(layer, cell, inputs, douts, "time_major")
    x = _views(view, inputs["x"])
    h = _views(view, inputs["h0"][None])
    c = None if inputs["c0"] is None else _views(view, inputs["c0"][None])
    output, h_n, c_n = call(layer, cell, x, hx_for(cell, h, c))
    dy = _views(view, douts["dy"])
    dh = _views(view, douts["dh_n"][None])
    dc = None if douts["dc_n"] is None else _views(view, douts["dc_n"][None])
    dx, dhx = layer.backward(dy, hx_for(cell, dh, dc))
    assert np.array_equal(output, expected["y"])
    assert np.array_equal(h_n[0], expected["h_n"])
    assert np.array_equal(dx, expected["dx"])
    if cell == "lstm":
        assert np.array_equal(c_n[0], expected["c_n"])
        assert np.array_equal(dhx[0][0], expected["dh0"])
        assert np.array_equal(dhx[1][0], expected["dc0"])
    else:
        assert np.array_equal(dhx[0], expected["dh0"])
    for k, v in layer.grads.items():
        assert np.array_equal(v, expected["d" + TO_REF[k]]), k


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_batch_first_strided_input(kind, kwargs, cell):
    """A batch_first layer given the transposed view x.transpose(1, 0, 2) of a time-major array
    (the usual way to get batch-first data) gives the result of the contiguous copy."""
    inputs, _ = make_problem(cell, 5, 3, 7, 33, np.float32, seed=53)
    layer = layer_with(kind, kwargs, inputs, np.float32, batch_first=True)
    view = inputs["x"].transpose(1, 0, 2)
    assert not view.flags.c_contiguous
    out_view = layer(view)[0]
    out_copy = layer(np.ascontiguousarray(view))[0]
    assert np.array_equal(out_view, out_copy)


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_read_only_arrays_accepted(kind, kwargs, cell):
    inputs, douts = make_problem(cell, 5, 3, 7, 33, np.float32, seed=59)
    layer = layer_with(kind, kwargs, inputs, np.float32)
    expected = copies(run_layer(layer, cell, inputs, douts, "time_major"))
    ro = {}
    for d in (inputs, douts):
        for k, v in d.items():
            ro[k] = None if v is None else v.copy()
            if v is not None:
                ro[k].setflags(write=False)
    ro_inputs = {k: ro[k] for k in inputs}
    ro_douts = {k: ro[k] for k in douts}
    # run_layer's [None] views of read-only arrays are read-only too
    got = run_layer(layer, cell, ro_inputs, ro_douts, "time_major")
    for name, value in expected.items():
        assert np.array_equal(got[name], value), name


@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_nan_in_input_propagates(kind, kwargs, cell):
    rng = np.random.default_rng(61)
    layer = new_layer(kind, kwargs, 5, 6, seed=3)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    x[2, 1, 0] = np.nan
    output, h_n, c_n = call(layer, cell, x, None)
    assert np.isnan(output[2, 1]).any()
    assert np.isnan(h_n[0, 1]).any()
    # nothing leaks into other sequences of the batch or into earlier steps
    assert np.isfinite(output[:2]).all()
    assert np.isfinite(output[:, [0, 2]]).all()
    assert np.isfinite(h_n[0, [0, 2]]).all()
    if cell == "lstm":
        assert np.isnan(c_n[0, 1]).any()
        assert np.isfinite(c_n[0, [0, 2]]).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind,kwargs,cell", LAYERS)
def test_caller_arrays_not_modified(kind, kwargs, cell, layout):
    B = 1 if layout == "unbatched" else 3
    inputs, douts = make_problem(cell, 5, B, 7, 33, np.float32, seed=67)
    before = copies({**inputs, **douts})
    layer = layer_with(kind, kwargs, inputs, np.float32, batch_first=layout == "batch_first")
    x = seq_to_layer(inputs["x"], layout)
    h = state_to_layer(inputs["h0"], layout)
    c = state_to_layer(inputs["c0"], layout)
    g = seq_to_layer(douts["dy"], layout)
    dh = state_to_layer(douts["dh_n"], layout)
    dc = state_to_layer(douts["dc_n"], layout)
    layer_args = {"x": x, "h": h, "c": c, "g": g, "dh": dh, "dc": dc}
    before_layer_args = copies(layer_args)
    out1 = call(layer, cell, x, hx_for(cell, h, c))
    back1 = layer.backward(g, hx_for(cell, dh, dc))

    def returned():
        dhx = back1[1]
        return {"y": out1[0], "h_n": out1[1], "c_n": out1[2], "dx": back1[0],
                "dh0": dhx[0] if cell == "lstm" else dhx,
                "dc0": dhx[1] if cell == "lstm" else None}

    kept = copies(returned())
    # a second forward/backward on other data must not overwrite what the first returned
    x2 = np.full_like(x, 0.25)
    out2 = call(layer, cell, x2, None)
    layer.backward(np.full_like(out2[0], -0.5))
    assert_unchanged(before, {**inputs, **douts})
    assert_unchanged(before_layer_args, layer_args)
    assert_unchanged(kept, returned())


# ------------------------------------------------------------------ module level


def test_cpu_info():
    info = rnnfast.cpu_info()
    assert isinstance(info, dict)
    assert isinstance(info["isa"], str)
    assert isinstance(info["available"], list)
    assert all(isinstance(s, str) for s in info["available"])
    assert info["isa"] in info["available"]


def test_version_is_a_string():
    assert isinstance(rnnfast.__version__, str) and rnnfast.__version__


def test_unpickled_and_unaligned_input_accepted():
    import pickle

    layer = rnnfast.LSTM(4, 6, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    expected, _ = layer(x)
    got, _ = layer(pickle.loads(pickle.dumps(x)))
    assert np.array_equal(got, expected)
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(x.shape)
    raw[...] = x
    assert not raw.flags.aligned
    got, _ = layer(raw)
    assert np.array_equal(got, expected)


def _train_on_cuda_path(layer, x, lengths, path):
    """Forward and backward of `layer` on the emulated CUDA backend's `path`: every result and
    gradient, by name."""
    with backends.emulate_cuda(), backends.cuda_recurrence(path):
        output, states = layer(x, lengths=lengths)
        dx, dhx = layer.backward(np.ones_like(output))
    states = states if isinstance(states, tuple) else (states,)
    dhx = dhx if isinstance(dhx, tuple) else (dhx,)
    return {"output": output, "dx": dx, **{f"state{i}": s for i, s in enumerate(states)},
            **{f"dstate{i}": d for i, d in enumerate(dhx)}, **layer.grads}


@pytest.mark.slow
@pytest.mark.parametrize("kind, kwargs, cell", LAYERS)
def test_cuda_paths_give_the_same_layers(kind, kwargs, cell):
    # A stacked bidirectional layer with lengths (and so reversed sequences and per-row ends):
    # the persistent path (one launch for all steps) computes what the standard one does.
    layer = new_layer(kind, kwargs, 5, 9, seed=3, num_layers=2, bidirectional=True)
    x = np.random.default_rng(3).standard_normal((6, 4, 5)).astype(np.float32)
    lengths = np.array([6, 0, 3, 5])
    standard = _train_on_cuda_path(layer, x, lengths, "standard")
    persistent = _train_on_cuda_path(layer, x, lengths, "persistent")
    assert standard.keys() == persistent.keys()
    for name, value in standard.items():
        np.testing.assert_array_equal(persistent[name], value, err_msg=name)


def test_cuda_path_errors():
    with pytest.raises(ValueError, match="path must be one of"):
        with backends.cuda_recurrence("fastest"):
            pass
    layer = rnnfast.LSTM(3, 6, proj_size=2, seed=0)
    with backends.emulate_cuda(), backends.cuda_recurrence("persistent"):
        # a ValueError of its own type, which callers (the benchmark) catch by type
        with pytest.raises(_cuda_emulated.PersistentPathRefused, match="persistent.*projection"):
            layer(np.zeros((2, 1, 3), np.float32))
    assert issubclass(_cuda_emulated.PersistentPathRefused, ValueError)
