"""A whole layer (rnnfast.RNN, LSTM, GRU: stacks, directions, dropout, lengths, resets, every
layout) run next to the reference's forward_layers / backward_layers on the same parameters,
inputs and dropout masks, with the results put side by side, time-major and batched.

Shared by tests/test_reliability.py and tests/test_properties.py.
"""

import numpy as np

import rnnfast
from rnnfast import reference as ref

from _util import FLOAT32_FLOOR, FLOAT64_TOL, rel_err


def make_layer(cell, input_size, hidden_size, dtype="float64", **options):
    """rnnfast.RNN (rnn_tanh, rnn_relu), LSTM or GRU with these constructor options."""
    if cell.startswith("rnn_"):
        return rnnfast.RNN(input_size, hidden_size, nonlinearity=cell[4:], dtype=dtype,
                           **options)
    return {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell](input_size, hidden_size,
                                                            dtype=dtype, **options)


def _time_major(layer, a, unbatched):
    """A sequence in the layer's layout as [T, B, C]."""
    if unbatched:
        return a[:, None]
    return a.transpose(1, 0, 2) if layer.batch_first else a


def _batched_states(states, lstm, unbatched):
    """States in hx's structure as a list [h, c] of [L*D, B, .] arrays (c None unless LSTM)."""
    parts = list(states) if lstm else [states, None]
    return [None if s is None else (s[:, None] if unbatched else s) for s in parts]


def run_both(layer, x, hx=None, lengths=None, resets=None, dy=None, grad_hx=None, seed=0):
    """The layer's training forward (dropout seeded by ``seed``) and backward, and the reference
    on the same parameters and masks, in float64 and in the layer's dtype. Arguments in the
    layer's layout. Returns (got, oracle, same_dtype_reference): dicts keyed output, h_n, c_n,
    grad_input, grad_h0, grad_c0 and the parameter names, arrays time-major and batched."""
    lstm = layer._cell == "lstm"
    unbatched = x.ndim == 2
    output, states = layer(x, hx, lengths=lengths, resets=resets, seed=seed)
    masks = layer._ctx[0].masks  # the dropout masks the forward drew (its LayersContext)
    grad_input, grad_hx0 = layer.backward(dy, grad_hx)
    got = {"output": _time_major(layer, output, unbatched),
           "grad_input": _time_major(layer, grad_input, unbatched)}
    got["h_n"], got["c_n"] = _batched_states(states, lstm, unbatched)
    got["grad_h0"], got["grad_c0"] = _batched_states(grad_hx0, lstm, unbatched)
    got.update(layer.grads)

    x_tm = _time_major(layer, x, unbatched)
    steps, batch = x_tm.shape[:2]
    lead = layer.num_layers * layer.num_directions
    h0, c0 = _batched_states(hx, lstm, unbatched) if hx is not None else (None, None)
    if h0 is None:
        h0 = np.zeros((lead, batch, layer.proj_size or layer.hidden_size))
        c0 = np.zeros((lead, batch, layer.hidden_size)) if lstm else None
    dh_n, dc_n = (_batched_states(grad_hx, lstm, unbatched) if grad_hx is not None
                  else (None, None))
    if resets is not None:
        resets = np.asarray(resets)
        resets = (resets[:, None] if unbatched else resets.T if layer.batch_first else resets)
    lengths = None if lengths is None else np.reshape(lengths, (batch,))
    results = []
    for dtype in (np.float64, layer.dtype):
        def cast(a, dtype=dtype):
            return None if a is None else np.asarray(a, dtype)

        params = {name: cast(value) for name, value in layer.state_dict().items()}
        y, h_n, c_n, cache = ref.forward_layers(
            layer._cell, cast(x_tm), params, layer.num_layers, layer.bidirectional, cast(h0),
            cast(c0), lengths, resets, [cast(m) for m in masks] or None)
        dx, dh0, dc0, grads = ref.backward_layers(cache, cast(_time_major(layer, dy, unbatched)),
                                                  cast(dh_n), cast(dc_n))
        results.append({"output": y, "h_n": h_n, "c_n": c_n, "grad_input": dx, "grad_h0": dh0,
                        "grad_c0": dc0, **grads})
    return got, results[0], results[1]


def accuracy_failures(got, oracle, same_dtype):
    """The tolerance rule of _util.py over every array of run_both's results: a list of
    "name: error > bound" for those that break it (NaN breaks it), empty if none; and the
    errors of all, for messages."""
    failures, errors = [], {}
    for name, value in got.items():
        if oracle[name] is None:
            if value is not None:
                failures.append(f"{name}: expected None, got an array")
            continue
        err = rel_err(value, oracle[name])
        if np.dtype(value.dtype) == np.float64:
            bound = FLOAT64_TOL
        else:
            bound = 2 * rel_err(same_dtype[name], oracle[name]) + FLOAT32_FLOOR
        errors[name] = err
        if not err <= bound:
            failures.append(f"{name}: rel err {err:.3e} > {bound:.3e}")
    return failures, errors
