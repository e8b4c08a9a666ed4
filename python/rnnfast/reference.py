"""NumPy reference implementation: the oracle that every rnnfast kernel is tested against.

Written for reading, not for speed: one Python loop over time, one cell's math per function.
It computes in the dtype of ``x`` (float32 or float64); the tests run it in float64 as the
oracle and in float32 to learn how much error float32 arithmetic itself makes.

Conventions (the same as PyTorch's, so that its weights load unchanged):

- shapes are time-major: ``x`` is [T, B, I], ``h0``/``c0`` are [B, H], outputs are [T, B, H];
- ``w_ih`` is [G*H, I], ``w_hh`` is [G*H, H], ``b_ih``/``b_hh`` are [G*H], with G gates stacked
  in the row order LSTM (i, f, g, o), GRU (r, z, n), RNN (one gate);
- the GRU applies its reset gate after the recurrent matmul ("linear before reset"):
  ``n = tanh(Wx_n + b_in + r * (W_hn h + b_hn))``.

One layer in one direction; the layers build stacks and directions on top of it.
"""

import numpy as np

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def relu(z):
    # np.maximum propagates NaN, as PyTorch's relu does.
    return np.maximum(z, 0)


# ------------------------------------------------------------------ one step of each cell
# Each step function takes the input part zx = x W_ih^T + b_ih and the recurrent part
# zh = h W_hh^T + b_hh of the pre-activations, both [B, G*H], and returns the new state and
# what its backward needs.


def rnn_step(zx, zh, h_prev, nonlinearity):
    z = zx + zh
    h = np.tanh(z) if nonlinearity == "tanh" else relu(z)
    return h, {"h": h}


def rnn_step_backward(saved, dh, nonlinearity):
    h = saved["h"]
    dz = dh * (1 - h * h) if nonlinearity == "tanh" else dh * (h > 0)
    # zx and zh enter as a sum: both get dz. The state has no direct path around the matmul.
    return dz, dz, np.zeros_like(dh)


def lstm_step(zx, zh, h_prev, c_prev):
    i, f, g, o = np.split(zx + zh, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return h, c, {"i": i, "f": f, "g": g, "o": o, "c_prev": c_prev, "tanh_c": tanh_c}


def lstm_step_backward(saved, dh, dc):
    """dh, dc: gradients reaching h_t and c_t. Returns dz (both parts), dh_direct, dc_prev."""
    i, f, g, o = saved["i"], saved["f"], saved["g"], saved["o"]
    tanh_c = saved["tanh_c"]
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    do = dh * tanh_c
    di = dc * g
    dg = dc * i
    df = dc * saved["c_prev"]
    dz = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1
    )
    return dz, dz, np.zeros_like(dh), dc * f


def gru_step(zx, zh, h_prev):
    xr, xz, xn = np.split(zx, 3, axis=1)
    hr, hz, hn = np.split(zh, 3, axis=1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, {"r": r, "z": z, "n": n, "hn": hn, "h_prev": h_prev}


def gru_step_backward(saved, dh):
    """Returns dzx, dzh (they differ in the n block), and dh_direct (the path h_prev -> h)."""
    r, z, n, hn = saved["r"], saved["z"], saved["n"], saved["hn"]
    dn = dh * (1 - z) * (1 - n * n)  # gradient of n's pre-activation
    dz = dh * (saved["h_prev"] - n) * z * (1 - z)
    dr = dn * hn * r * (1 - r)
    dzx = np.concatenate([dr, dz, dn], axis=1)
    dzh = np.concatenate([dr, dz, dn * r], axis=1)
    return dzx, dzh, dh * z


# ------------------------------------------------------------------ sequences


def forward(cell, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, c0=None):
    """Run one layer over a sequence.

    x: [T, B, I]; h0, c0: [B, H] (c0 for "lstm" only). Returns (y [T, B, H], h_n [B, H],
    c_n [B, H] or None, cache), where cache is what ``backward`` needs.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {CELLS}, not {cell!r}")
    dtype = x.dtype
    x, h0, w_ih, w_hh = (np.asarray(a, dtype) for a in (x, h0, w_ih, w_hh))
    gh = w_hh.shape[0]
    b_ih = np.zeros(gh, dtype) if b_ih is None else np.asarray(b_ih, dtype)
    b_hh = np.zeros(gh, dtype) if b_hh is None else np.asarray(b_hh, dtype)
    h, c = h0, (None if cell != "lstm" else np.asarray(c0, dtype))
    ys, steps = [], []
    for t in range(x.shape[0]):
        zx = x[t] @ w_ih.T + b_ih
        zh = h @ w_hh.T + b_hh
        h_prev = h
        if cell == "lstm":
            h, c, saved = lstm_step(zx, zh, h, c)
        elif cell == "gru":
            h, saved = gru_step(zx, zh, h)
        else:
            h, saved = rnn_step(zx, zh, h, cell[4:])
        saved["h_prev"] = h_prev
        steps.append(saved)
        ys.append(h)
    y = np.stack(ys) if ys else np.zeros((0,) + h0.shape, dtype)
    cache = {"cell": cell, "x": x, "w_ih": w_ih, "w_hh": w_hh, "steps": steps, "h0": h0}
    return y, h, c, cache


def backward(cache, dy, dh_n=None, dc_n=None):
    """Backpropagation through time for ``forward``.

    dy: [T, B, H], the gradient of the loss with respect to y; dh_n, dc_n: [B, H] or None
    (zero). Returns a dict of gradients: x, h0, c0 (None unless LSTM), w_ih, w_hh, b_ih, b_hh.
    """
    cell, x, w_ih, w_hh = cache["cell"], cache["x"], cache["w_ih"], cache["w_hh"]
    dtype = x.dtype
    dy = np.asarray(dy, dtype)
    h0 = cache["h0"]
    dh = np.zeros_like(h0) if dh_n is None else np.array(dh_n, dtype)
    dc = None
    if cell == "lstm":
        dc = np.zeros_like(h0) if dc_n is None else np.array(dc_n, dtype)
    grads = {"x": np.zeros_like(x), "w_ih": np.zeros_like(w_ih), "w_hh": np.zeros_like(w_hh),
             "b_ih": np.zeros(w_hh.shape[0], dtype), "b_hh": np.zeros(w_hh.shape[0], dtype)}
    for t in reversed(range(x.shape[0])):
        saved = cache["steps"][t]
        dh = dh + dy[t]
        if cell == "lstm":
            dzx, dzh, dh_direct, dc = lstm_step_backward(saved, dh, dc)
        elif cell == "gru":
            dzx, dzh, dh_direct = gru_step_backward(saved, dh)
        else:
            dzx, dzh, dh_direct = rnn_step_backward(saved, dh, cell[4:])
        grads["x"][t] = dzx @ w_ih
        grads["w_ih"] += dzx.T @ x[t]
        grads["b_ih"] += dzx.sum(axis=0)
        grads["w_hh"] += dzh.T @ saved["h_prev"]
        grads["b_hh"] += dzh.sum(axis=0)
        dh = dh_direct + dzh @ w_hh
    grads["h0"] = dh
    grads["c0"] = dc
    return grads
