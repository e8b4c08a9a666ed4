"""The NumPy reference is the oracle for every kernel, so it is checked on its own terms:

- its backward against central finite differences of its forward (float64, every gradient);
- its forward against the cell equations as PyTorch documents them, written out element by
  element with Python floats (an implementation that shares no code and no matrix layout);
- in float32 it really computes in float32 (the float32 tolerance rule depends on it).
"""

import math

import numpy as np
import pytest

from _util import CELLS, GATES, GRAD_NAMES, make_problem, ref, rel_err, rnn_preactivations

T, B, I, H = 3, 2, 3, 4
FD_EPS = 1e-6
# Central differences: truncation error ~ eps^2 * |L'''| ~ 1e-12; round-off ~ eps64 * |L| / eps
# ~ 2e-16 * 10 / 1e-6 = 2e-9 in absolute terms. FD_RTOL applies per element; FD_ATOL covers
# elements whose gradient is itself close to 0 (where only the absolute round-off is left).
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def _loss_weights(cell, seed, out=H):
    rng = np.random.default_rng(seed)
    r1 = rng.standard_normal((T, B, out))
    r2 = rng.standard_normal((B, out))
    r3 = rng.standard_normal((B, H)) if cell == "lstm" else None
    return r1, r2, r3


def _loss(cell, inputs, r1, r2, r3, options=None):
    y, h_n, c_n, _ = ref.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"], w_hr=inputs.get("w_hr"),
        **(options or {})
    )
    loss = np.sum(y * r1) + np.sum(h_n * r2)
    if cell == "lstm":
        loss += np.sum(c_n * r3)
    return float(loss)


def _numeric_gradient(cell, inputs, name, r1, r2, r3, options=None):
    base = inputs[name]
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for sign in (+1.0, -1.0):
            p = base.copy()
            p[idx] += sign * FD_EPS
            vals.append(_loss(cell, {**inputs, name: p}, r1, r2, r3, options))
        grad[idx] = (vals[0] - vals[1]) / (2 * FD_EPS)
    return grad


@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_finite_differences(cell):
    # relu_margin: a perturbation of FD_EPS moves a pre-activation by at most ~1e-5, so keeping
    # every |z| >= 1e-3 means no finite difference straddles relu's kink.
    inputs, _ = make_problem(cell, T, B, I, H, np.float64, bias=True, seed=11, relu_margin=1e-3)
    if cell == "rnn_relu":
        z = rnn_preactivations(cell, inputs)
        assert np.min(np.abs(z)) >= 1e-3
        # both sides of the kink are exercised, so the test is not trivially all-pass/all-zero
        assert np.any(z > 0) and np.any(z < 0)
    r1, r2, r3 = _loss_weights(cell, seed=12)
    _, _, _, cache = ref.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"],
    )
    grads = ref.backward(cache, r1, r2, r3)
    assert set(grads) == set(GRAD_NAMES)
    checked = []
    for name in GRAD_NAMES:
        if inputs[name] is None:  # c0 for the cells without a cell state
            assert grads[name] is None, name
            continue
        numeric = _numeric_gradient(cell, inputs, name, r1, r2, r3)
        assert grads[name].shape == inputs[name].shape, name
        assert grads[name].dtype == np.float64, name
        assert np.max(np.abs(numeric)) > 1e-3, f"{name}: gradient too small to test anything"
        np.testing.assert_allclose(
            grads[name], numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=f"{cell} d{name}"
        )
        checked.append(name)
    expected = {"x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"} | ({"c0"} if cell == "lstm" else set())
    assert set(checked) == expected


# lengths in any order with 0 and T; resets at step 0 (a no-op) and inside the sequences.
OPTIONS = {
    "lengths": {"lengths": np.array([1, 3])},
    "resets": {"resets": np.array([[True, False], [True, True], [False, True]])},
    "both": {"lengths": np.array([3, 0]), "resets": np.array([[0, 1], [1, 0], [0, 0]], bool)},
}


# case: (options, with the LSTM projection: the LSTM only)
FD_CASES = {**{name: (options, False) for name, options in OPTIONS.items()},
            "projection": ({}, True), "projection_both": (OPTIONS["both"], True)}


@pytest.mark.parametrize("cell,case", [(cell, case) for cell in CELLS for case in FD_CASES
                                       if cell == "lstm" or not FD_CASES[case][1]])
def test_backward_with_options_matches_finite_differences(cell, case):
    """lengths, resets and (LSTM) the projection, by finite differences like the plain case."""
    options, projection = FD_CASES[case]
    inputs, _ = make_problem(cell, T, B, I, H, np.float64, seed=13, relu_margin=1e-3)
    out = H
    if projection:
        out = 3
        rng = np.random.default_rng(14)
        inputs["w_hr"] = rng.uniform(-0.5, 0.5, (out, H))
        inputs["w_hh"] = rng.uniform(-0.5, 0.5, (4 * H, out))
        inputs["h0"] = rng.standard_normal((B, out))
    r1, r2, r3 = _loss_weights(cell, 15, out)
    _, _, _, cache = ref.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"], w_hr=inputs.get("w_hr"),
        **options
    )
    grads = ref.backward(cache, r1, r2, r3)
    assert ("w_hr" in grads) == ("w_hr" in inputs)
    for name in grads:
        if grads[name] is None:
            continue
        numeric = _numeric_gradient(cell, inputs, name, r1, r2, r3, options)
        np.testing.assert_allclose(
            grads[name], numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=f"{cell} {case} d{name}"
        )


def test_lengths_and_resets_semantics():
    """What the options mean, on a sequence whose answer is known: padding gives 0 and keeps
    the state; a reset gives the same steps as a new sequence from h0."""
    inputs, _ = make_problem("gru", 5, 2, 3, 4, np.float64, seed=16)
    args = ("gru", inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"])
    biases = {"b_ih": inputs["b_ih"], "b_hh": inputs["b_hh"]}
    y, h_n, _, _ = ref.forward(*args, **biases)
    y2, h2, _, _ = ref.forward(*args, **biases, lengths=np.array([2, 5]))
    np.testing.assert_array_equal(y2[:2, 0], y[:2, 0])
    np.testing.assert_array_equal(y2[2:, 0], 0)
    np.testing.assert_array_equal(h2[0], y[1, 0])
    np.testing.assert_array_equal(y2[:, 1], y[:, 1])
    resets = np.zeros((5, 2), bool)
    resets[3, 1] = True
    y3, _, _, _ = ref.forward(*args, **biases, resets=resets)
    tail, _, _, _ = ref.forward("gru", inputs["x"][3:], inputs["h0"], *args[3:], **biases)
    np.testing.assert_array_equal(y3[3:, 1], tail[:, 1])
    np.testing.assert_array_equal(y3[:3], y[:3])
    np.testing.assert_array_equal(y3[:, 0], y[:, 0])


@pytest.mark.parametrize("cell", CELLS)
def test_backward_none_means_zero(cell):
    inputs, douts = make_problem(cell, 4, 3, 5, 6, np.float64, seed=3)
    _, _, _, cache = ref.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"],
    )
    zeros = np.zeros_like(inputs["h0"])
    g_none = ref.backward(cache, douts["dy"])
    g_zero = ref.backward(cache, douts["dy"], zeros, zeros if cell == "lstm" else None)
    for name in GRAD_NAMES:
        if g_zero[name] is None:
            assert g_none[name] is None
        else:
            np.testing.assert_array_equal(g_none[name], g_zero[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_no_bias_means_zero_bias(cell):
    inputs, douts = make_problem(cell, 4, 3, 5, 6, np.float64, bias=False, seed=4)
    gh = GATES[cell] * 6
    args = (cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"])
    y0, h0_, c0_, cache0 = ref.forward(*args, c0=inputs["c0"])
    y1, h1_, c1_, cache1 = ref.forward(*args, b_ih=np.zeros(gh), b_hh=np.zeros(gh), c0=inputs["c0"])
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(h0_, h1_)
    if cell == "lstm":
        np.testing.assert_array_equal(c0_, c1_)
    g0 = ref.backward(cache0, douts["dy"], douts["dh_n"], douts["dc_n"])
    g1 = ref.backward(cache1, douts["dy"], douts["dh_n"], douts["dc_n"])
    for name in GRAD_NAMES:
        if g1[name] is not None:
            np.testing.assert_array_equal(g0[name], g1[name], err_msg=name)


# ------------------------------------------------------------------ forward vs the equations


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _equations_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """The cell equations of PyTorch's documentation (torch.nn.RNN/LSTM/GRU), one scalar at a
    time. Gate k of hidden unit j uses row k*H + j of the weights (PyTorch's stacking)."""
    T_, B_, I_ = x.shape
    H_ = h0.shape[1]

    def pre(w, b, t_row, vec, n):
        # (W vec + b)[row], row = t_row * H + j, as a plain loop
        return [
            sum(w[t_row * H_ + j, k] * vec[k] for k in range(n)) + b[t_row * H_ + j]
            for j in range(H_)
        ]

    y = np.zeros((T_, B_, H_))
    h = [list(h0[b]) for b in range(B_)]
    c = [list(c0[b]) for b in range(B_)] if cell == "lstm" else None
    for t in range(T_):
        for b in range(B_):
            xt, hp = list(x[t, b]), h[b]
            wx = [pre(w_ih, b_ih, g, xt, I_) for g in range(GATES[cell])]
            wh = [pre(w_hh, b_hh, g, hp, H_) for g in range(GATES[cell])]
            if cell in ("rnn_tanh", "rnn_relu"):
                z = [wx[0][j] + wh[0][j] for j in range(H_)]
                hn = [math.tanh(v) if cell == "rnn_tanh" else max(v, 0.0) for v in z]
            elif cell == "lstm":
                ig = [_sig(wx[0][j] + wh[0][j]) for j in range(H_)]
                fg = [_sig(wx[1][j] + wh[1][j]) for j in range(H_)]
                gg = [math.tanh(wx[2][j] + wh[2][j]) for j in range(H_)]
                og = [_sig(wx[3][j] + wh[3][j]) for j in range(H_)]
                c[b] = [fg[j] * c[b][j] + ig[j] * gg[j] for j in range(H_)]
                hn = [og[j] * math.tanh(c[b][j]) for j in range(H_)]
            else:  # gru: r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
                r = [_sig(wx[0][j] + wh[0][j]) for j in range(H_)]
                zg = [_sig(wx[1][j] + wh[1][j]) for j in range(H_)]
                n = [math.tanh(wx[2][j] + r[j] * wh[2][j]) for j in range(H_)]
                hn = [(1 - zg[j]) * n[j] + zg[j] * hp[j] for j in range(H_)]
            h[b] = hn
            y[t, b] = hn
    return y, np.array(h), (np.array(c) if c is not None else None)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_cell_equations(cell):
    inputs, _ = make_problem(cell, 3, 2, 3, 4, np.float64, seed=21)
    c0 = inputs["c0"] if cell == "lstm" else None
    y, h_n, c_n, _ = ref.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=c0,
    )
    ey, eh, ec = _equations_forward(
        cell, inputs["x"], inputs["h0"], c0, inputs["w_ih"], inputs["w_hh"],
        inputs["b_ih"], inputs["b_hh"],
    )
    assert y.shape == (3, 2, 4) and h_n.shape == (2, 4)
    np.testing.assert_allclose(y, ey, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h_n, eh, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(h_n, y[-1])
    if cell == "lstm":
        np.testing.assert_allclose(c_n, ec, rtol=1e-13, atol=1e-14)
    else:
        assert c_n is None


# ------------------------------------------------------------------ float32


@pytest.mark.parametrize("cell", CELLS)
def test_float32_computes_in_float32(cell):
    inputs32, douts32 = make_problem(cell, 5, 3, 33, 33, np.float32, seed=31)
    f64 = {k: (None if v is None else v.astype(np.float64)) for k, v in inputs32.items()}

    def run(d, dd):
        y, h_n, c_n, cache = ref.forward(
            cell, d["x"], d["h0"], d["w_ih"], d["w_hh"], b_ih=d["b_ih"], b_hh=d["b_hh"], c0=d["c0"]
        )
        g = ref.backward(cache, dd["dy"], dd["dh_n"], dd["dc_n"])
        return y, h_n, c_n, cache, g

    y32, h32, c32, cache32, g32 = run(inputs32, douts32)
    y64, h64, c64, _, g64 = run(f64, {k: (None if v is None else v.astype(np.float64))
                                       for k, v in douts32.items()})
    outs32 = [y32, h32] + ([c32] if cell == "lstm" else [])
    grads32 = [g32[k] for k in GRAD_NAMES if g32[k] is not None]
    for a in outs32 + grads32:
        assert a.dtype == np.float32
    for k in ("x", "w_ih", "w_hh", "h0"):
        assert cache32[k].dtype == np.float32, k
    for record in cache32["steps"]:
        arrays = {**record["saved"], **{k: v for k, v in record.items() if k != "saved"}}
        for k, v in arrays.items():
            assert v is None or v.dtype == np.float32, k
    # It computed in float32 (and did not round a float64 result): the results are not the
    # correctly rounded float64 ones, yet they are within float32 accuracy of them.
    assert not np.array_equal(y32, y64.astype(np.float32))
    assert not np.array_equal(g32["w_hh"], g64["w_hh"].astype(np.float32))
    assert 0 < rel_err(y32, y64) < 1e-5
    assert 0 < rel_err(g32["w_hh"], g64["w_hh"]) < 1e-5
