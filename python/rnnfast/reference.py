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

``forward``/``backward`` run one layer in one direction (with variable lengths, state resets
and the LSTM projection); ``forward_layers``/``backward_layers`` build stacks of layers, both
directions and dropout on top of them, as PyTorch does.
"""

from functools import partial

import numpy as np

from .cell_registry import CELLS, spec

__all__ = ["CELLS", "STEPS", "forward", "backward", "forward_layers", "backward_layers",
           "reverse_within", "sigmoid", "relu"]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def relu(z):
    # np.maximum propagates NaN, as PyTorch's relu does.
    return np.maximum(z, 0)


# ------------------------------------------------------------------ one step of each cell
# The arguments, their order and names are those of cells/*.h (the C++ cells), batched:
#   step(zx, zh, h_prev, c_prev) -> (h, c, saved)
#   step_backward(saved, h, h_prev, c_prev, dh, dc) -> (dzx, dzh, dh_direct, dc_prev)
# zx = x W_ih^T + b_ih and zh = h_prev W_hh^T + b_hh are the two parts of the pre-activations,
# [B, G*H]; c (the LSTM's cell state) is None for the other cells; saved holds the slots of the
# cell's training workspace (rnnfast.cell_registry), by name. In the backward, dh and dc are the
# gradients reaching h_t and c_t; dh_direct is the part of the gradient for h_prev that does
# not go through W_hh (the GRU's z * dh), dc_prev the gradient for c_prev.


def rnn_step(zx, zh, h_prev, c_prev, nonlinearity):
    z = zx + zh
    return (np.tanh(z) if nonlinearity == "tanh" else relu(z)), None, {}


def rnn_step_backward(saved, h, h_prev, c_prev, dh, dc, nonlinearity):
    # relu's gradient is selected, not multiplied, as PyTorch's threshold_backward does (and
    # the kernels): 0 where h <= 0 even if dh is NaN or inf.
    dz = dh * (1 - h * h) if nonlinearity == "tanh" else np.where(h > 0, dh, 0).astype(h.dtype)
    # zx and zh enter as a sum: both get dz. The state has no direct path around the matmul.
    return dz, dz, np.zeros_like(h_prev), None


def lstm_step(zx, zh, h_prev, c_prev):
    i, f, g, o = np.split(zx + zh, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, {"i": i, "f": f, "g": g, "o": o, "c": c}


def lstm_step_backward(saved, h, h_prev, c_prev, dh, dc):
    i, f, g, o = saved["i"], saved["f"], saved["g"], saved["o"]
    tanh_c = np.tanh(saved["c"])
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    dz = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                         dh * tanh_c * o * (1 - o)], axis=1)
    return dz, dz, np.zeros_like(h_prev), dc * f


def gru_step(zx, zh, h_prev, c_prev):
    xr, xz, xn = np.split(zx, 3, axis=1)
    hr, hz, hn = np.split(zh, 3, axis=1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, None, {"r": r, "z": z, "n": n, "hn": hn}


def gru_step_backward(saved, h, h_prev, c_prev, dh, dc):
    """dzx and dzh differ in the n block (the reset gate multiplies zh_n only)."""
    r, z, n, hn = saved["r"], saved["z"], saved["n"], saved["hn"]
    dn = dh * (1 - z) * (1 - n * n)  # gradient of n's pre-activation
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * hn * r * (1 - r)
    dzx = np.concatenate([dr, dz, dn], axis=1)
    dzh = np.concatenate([dr, dz, dn * r], axis=1)
    return dzx, dzh, dh * z, None


# (step, step_backward) of every cell of rnnfast.cell_registry.
STEPS = {
    "rnn_tanh": (partial(rnn_step, nonlinearity="tanh"),
                 partial(rnn_step_backward, nonlinearity="tanh")),
    "rnn_relu": (partial(rnn_step, nonlinearity="relu"),
                 partial(rnn_step_backward, nonlinearity="relu")),
    "lstm": (lstm_step, lstm_step_backward),
    "gru": (gru_step, gru_step_backward),
}
assert set(STEPS) == set(CELLS), "every cell of the registry needs its reference steps"


# ------------------------------------------------------------------ sequences


def forward(cell, x, h0, w_ih, w_hh, *, b_ih=None, b_hh=None, c0=None, w_hr=None, lengths=None,
            resets=None, operand=None):
    """Run one layer over a sequence, forward in time.

    x: [T, B, I]; h0: [B, R]; c0: [B, H] (for "lstm" only), where R = H, or P with a projection.
    Returns (y [T, B, R], h_n [B, R], c_n [B, H] or None, cache), where cache is what
    ``backward`` needs. Options:

    - w_hr [P, H] (LSTM only): the projection of PyTorch's proj_size, h = (o * tanh(c)) W_hr^T;
      then w_hh is [4H, P].
    - lengths [B] (integers in [0, T]), or None for all T: steps t >= lengths[b] are padding
      for sequence b: its output is 0 there and its state stays as it was, so that h_n and c_n
      are the state after its own last step (h0 and c0 for a length of 0).
    - resets [T, B] (bools), or None: where resets[t, b] is set, the state of sequence b is put
      back to (h0[b], c0[b]) before step t (at t = 0 it is there anyway).
    - operand: None, or a function applied to h_{t-1} where it enters the recurrent product
      (e.g. rounding to bfloat16, as a kernel with bfloat16 matmuls does), and by ``backward``
      to dzh where it enters dzh W_hh.
    """
    step = STEPS[spec(cell).name][0]
    dtype = x.dtype
    x, h0, w_ih, w_hh = (np.asarray(a, dtype) for a in (x, h0, w_ih, w_hh))
    steps_, batch = x.shape[:2]
    gh = w_hh.shape[0]
    b_ih = np.zeros(gh, dtype) if b_ih is None else np.asarray(b_ih, dtype)
    b_hh = np.zeros(gh, dtype) if b_hh is None else np.asarray(b_hh, dtype)
    w_hr = None if w_hr is None else np.asarray(w_hr, dtype)
    lengths = np.full(batch, steps_) if lengths is None else np.asarray(lengths)
    resets = np.zeros((steps_, batch), bool) if resets is None else np.asarray(resets, bool)
    c0 = np.asarray(c0, dtype) if spec(cell).has_cell_state else None
    # The padding of x (steps t >= lengths[b]) reaches no result, as a packed sequence never
    # reads it: set to 0 here, once, NaN or inf there cannot reach dW_ih as 0 * NaN.
    padding = np.arange(steps_)[:, None] >= lengths  # [T, B]
    x = np.where(padding[:, :, None], 0, x).astype(dtype, copy=False)
    h, c = h0, c0
    ys, records = [], []
    for t in range(steps_):
        fresh = resets[t][:, None]  # [B, 1]: rows that start again from the initial state
        active = (t < lengths)[:, None]  # [B, 1]: rows whose sequence has a step t
        h_prev = np.where(fresh, h0, h)
        c_prev = None if c is None else np.where(fresh, c0, c)
        zx = x[t] @ w_ih.T + b_ih
        zh = (h_prev if operand is None else operand(h_prev)) @ w_hh.T + b_hh
        m, c_new, saved = step(zx, zh, h_prev, c_prev)
        if c is not None:
            c = np.where(active, c_new, c)
        # m is the cell's output; with the projection, h = m W_hr^T.
        h_new = m if w_hr is None else m @ w_hr.T
        records.append({"saved": saved, "m": m, "h_prev": h_prev, "c_prev": c_prev})
        h = np.where(active, h_new, h)
        ys.append(np.where(active, h_new, 0).astype(dtype))
    y = np.stack(ys)
    cache = {"cell": cell, "x": x, "w_ih": w_ih, "w_hh": w_hh, "w_hr": w_hr, "steps": records,
             "h0": h0, "c0": c0, "lengths": lengths, "resets": resets,
             "operand": operand}
    return y, h, c, cache


def backward(cache, dy, dh_n=None, dc_n=None, operand=None):
    """Backpropagation through time for ``forward``.

    dy: [T, B, R], the gradient of the loss with respect to y; dh_n [B, R], dc_n [B, H]: with
    respect to h_n and c_n, or None (zero). Returns a dict of gradients: x, h0, c0 (None unless
    LSTM), w_ih, w_hh, b_ih, b_hh, and w_hr when the forward had a projection.

    operand: None, or a function applied to dzx, dzh and h_prev where they enter the input and
    weight gradients' products (e.g. rounding to bfloat16, as a kernel with bfloat16 GEMMs
    does). The recurrent product dzh W_hh takes the forward's operand.

    It differentiates ``forward`` line by line: h = where(active, h_new, h) sends the gradient
    of h to h_new where the row is active and keeps it on the old h elsewhere; h_prev =
    where(fresh, h0, h) sends it to h0 where the row was reset and to the old h elsewhere.
    """
    cell, x, w_ih, w_hh, w_hr = (cache[k] for k in ("cell", "x", "w_ih", "w_hh", "w_hr"))
    step_backward = STEPS[cell][1]
    dtype = x.dtype
    dy = np.asarray(dy, dtype)
    h0, c0 = cache["h0"], cache["c0"]
    dh = np.zeros_like(h0) if dh_n is None else np.array(dh_n, dtype)
    dh0 = np.zeros_like(h0)
    dc = dc0 = None
    if c0 is not None:
        dc = np.zeros_like(c0) if dc_n is None else np.array(dc_n, dtype)
        dc0 = np.zeros_like(dc)
    grads = {"x": np.zeros_like(x), "w_ih": np.zeros_like(w_ih), "w_hh": np.zeros_like(w_hh),
             "b_ih": np.zeros(w_hh.shape[0], dtype), "b_hh": np.zeros(w_hh.shape[0], dtype)}
    if w_hr is not None:
        grads["w_hr"] = np.zeros_like(w_hr)
    for t in reversed(range(x.shape[0])):
        record = cache["steps"][t]
        active = (t < cache["lengths"])[:, None]
        fresh = cache["resets"][t][:, None]
        dh_new = np.where(active, dh + dy[t], 0).astype(dtype)
        dh = np.where(active, 0, dh).astype(dtype)
        if w_hr is not None:
            grads["w_hr"] += dh_new.T @ record["m"]
            dh_new = dh_new @ w_hr
        dc_new = None
        if dc is not None:
            dc_new = np.where(active, dc, 0).astype(dtype)
            dc = np.where(active, 0, dc).astype(dtype)
        dzx, dzh, dh_direct, dc_prev = step_backward(record["saved"], record["m"],
                                                     record["h_prev"], record["c_prev"],
                                                     dh_new, dc_new)
        if dc is not None:
            dc0 += np.where(fresh, dc_prev, 0).astype(dtype)
            dc += np.where(fresh, 0, dc_prev).astype(dtype)
        dzx_p, dzh_p, h_prev = ((dzx, dzh, record["h_prev"]) if operand is None else
                                (operand(dzx), operand(dzh), operand(record["h_prev"])))
        grads["x"][t] = dzx_p @ w_ih
        grads["w_ih"] += dzx_p.T @ x[t]
        grads["b_ih"] += dzx.sum(axis=0)
        grads["w_hh"] += dzh_p.T @ h_prev
        grads["b_hh"] += dzh.sum(axis=0)
        recurrent = cache.get("operand")
        dh_prev = dh_direct + (dzh if recurrent is None else recurrent(dzh)) @ w_hh
        dh0 += np.where(fresh, dh_prev, 0).astype(dtype)
        dh += np.where(fresh, 0, dh_prev).astype(dtype)
    grads["h0"] = dh0 + dh
    grads["c0"] = None if dc is None else dc0 + dc
    return grads


# ------------------------------------------------------------------ stacks of layers


def reverse_within(a, lengths):
    """a [T, B, ...] with the first lengths[b] steps of each sequence b in reverse order (the
    padding after them stays where it is)."""
    out = np.array(a, copy=True)
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


def _direction_names(num_layers, bidirectional):
    """(layer, direction, suffix) of every layer and direction, in PyTorch's order."""
    suffixes = ("", "_reverse") if bidirectional else ("",)
    return [(k, d, sfx) for k in range(num_layers) for d, sfx in enumerate(suffixes)]


def forward_layers(cell, x, params, num_layers, bidirectional, h0, c0=None, lengths=None,
                   resets=None, masks=None, operand=None):
    """A stack of layers as PyTorch's torch.nn.RNN/LSTM/GRU: layer k > 0 reads the outputs of
    layer k-1 (both directions concatenated on the feature axis, forward first).

    params: the parameters keyed by PyTorch's names (weight_ih_l{k}, weight_hh_l{k},
    bias_ih_l{k}, bias_hh_l{k}, weight_hr_l{k}, with the suffix _reverse for the reverse
    direction; biases and weight_hr optional). h0 [L*D, B, R], c0 [L*D, B, H] (LSTM), indexed
    by layer * D + direction. lengths and resets as in ``forward``. The reverse direction runs
    each sequence from its own last step to its first; it is reset before step t-1 where
    resets[t] is set (the same boundaries between episodes, crossed the other way). masks: for
    layers 0 .. L-2, the dropout mask [T, B, D*R] that multiplies the layer's output (already
    scaled by 1 / (1 - p)), or None for no dropout. operand: as in ``forward``.

    Returns (y [T, B, D*R], h_n [L*D, B, R], c_n [L*D, B, H] or None, cache).
    """
    steps_, batch = x.shape[:2]
    lengths = np.full(batch, steps_) if lengths is None else np.asarray(lengths)
    resets = np.zeros((steps_, batch), bool) if resets is None else np.asarray(resets, bool)
    resets_next = np.concatenate([resets[1:], np.zeros((1, batch), bool)])
    resets_by_direction = (resets, reverse_within(resets_next, lengths))
    dirs = 2 if bidirectional else 1
    h_n, c_n, caches, outputs = [], [], [], []
    layer_in = x
    for k, d, sfx in _direction_names(num_layers, bidirectional):
        if d == 0:
            outputs = []
        p = {name: params.get(f"{name}_l{k}{sfx}")
             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
        i = len(caches)
        seq = layer_in if d == 0 else reverse_within(layer_in, lengths)
        y, h, c, cache = forward(cell, seq, h0[i], p["weight_ih"], p["weight_hh"],
                                 b_ih=p["bias_ih"], b_hh=p["bias_hh"],
                                 c0=None if c0 is None else c0[i], w_hr=p["weight_hr"],
                                 lengths=lengths, resets=resets_by_direction[d], operand=operand)
        outputs.append(y if d == 0 else reverse_within(y, lengths))
        h_n.append(h)
        c_n.append(c)
        caches.append(cache)
        if d == dirs - 1:
            layer_in = np.concatenate(outputs, axis=2)
            if masks is not None and k < num_layers - 1:
                layer_in = layer_in * masks[k]
    cache = {"cell": cell, "num_layers": num_layers, "bidirectional": bidirectional,
             "lengths": lengths, "masks": masks, "caches": caches, "params": sorted(params)}
    c_n = np.stack(c_n) if spec(cell).has_cell_state else None
    return layer_in, np.stack(h_n), c_n, cache


def backward_layers(cache, dy, dh_n=None, dc_n=None, operand=None):
    """Backpropagation through ``forward_layers``. dy [T, B, D*R]; dh_n [L*D, B, R] and dc_n
    [L*D, B, H], or None (zero); operand: as in ``backward``. Returns (dx, dh0, dc0 or None,
    grads keyed like params)."""
    num_layers, bidirectional = cache["num_layers"], cache["bidirectional"]
    lengths, masks, caches = cache["lengths"], cache["masks"], cache["caches"]
    names = _direction_names(num_layers, bidirectional)
    dirs = 2 if bidirectional else 1
    dh0, dc0 = [None] * len(names), [None] * len(names)
    grads = {}
    for k in reversed(range(num_layers)):
        if masks is not None and k < num_layers - 1:
            dy = dy * masks[k]
        parts = np.split(dy, dirs, axis=2)
        dx = 0
        for d in range(dirs):
            i = k * dirs + d
            sfx = names[i][2]
            g = backward(caches[i], parts[d] if d == 0 else reverse_within(parts[d], lengths),
                         None if dh_n is None else dh_n[i], None if dc_n is None else dc_n[i],
                         operand)
            dx = dx + (g["x"] if d == 0 else reverse_within(g["x"], lengths))
            dh0[i], dc0[i] = g["h0"], g["c0"]
            for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                 ("b_ih", "bias_ih"), ("b_hh", "bias_hh"), ("w_hr", "weight_hr")):
                if f"{theirs}_l{k}{sfx}" in cache["params"]:
                    grads[f"{theirs}_l{k}{sfx}"] = g[ours]
        dy = dx
    return dy, np.stack(dh0), (np.stack(dc0) if dc0[0] is not None else None), grads
