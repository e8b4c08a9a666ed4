"""Functional API: recurrent layers forward and backward through time, on any backend.

This module is the one orchestration of rnnfast (ARCHITECTURE.md): every front end (the layers,
the PyTorch adapter, the benchmark suite) calls it, and it runs over the backend of the arrays
it is given (``rnnfast.backends``: NumPy on the CPU kernels, CuPy on the CUDA kernels, NumPy on
the emulated CUDA kernels). Per layer and direction:

- the input projection ``zx = x W_ih^T + b_ih`` for all steps is one large GEMM,
- the loop over time runs in the compiled kernels: per step the recurrent matmul on W_hh with
  the cell's gate math fused into it,
- after the backward loop the weight and input gradients are again large GEMMs.

Two levels:

- ``forward`` / ``backward``: one layer in one direction, with the arguments and results of
  ``rnnfast.reference.forward`` / ``backward``;
- ``forward_layers`` / ``backward_layers``: a whole stack (layers, both directions, dropout
  between layers), with the arguments of ``rnnfast.reference.forward_layers``.

Shapes are time-major: ``x`` [T, B, I], ``h0``/``c0`` [B, H], ``w_ih`` [G*H, I], ``w_hh``
[G*H, H], biases [G*H], with PyTorch's gate order (``rnnfast.cell_registry``). Optional:
``lengths`` [B] (integers in [0, T]: steps past a sequence's length are padding, its output is 0
there and h_n/c_n are its state after its own last step) and ``resets`` [T, B] (bools: the
state is put back to h0/c0 before step t where set), both handled inside the kernels; and
for the LSTM ``w_hr`` [P, H], PyTorch's projection (proj_size): h = (o * tanh(c)) W_hr^T, so
that h0, y and h_n have P features and ``w_hh`` is [4H, P], also inside the kernels.

dtypes: float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``), on every backend,
computed as ``rnnfast._dtypes`` describes: for the 16-bit types, products of operands rounded to
the type, float32 sums and gate math; y, h_n, c_n and the gradients of x, h0, c0 in the 16-bit
type, the weight and bias gradients in float32.

Every argument is checked here, once (types, dtypes, shapes, lengths, resets), with errors
that name it; the bindings check only memory safety. Arrays may have any strides
(non-contiguous ones are copied) and may be read-only; they are never written. A training
forward keeps references to ``x``, the states, the weights and the y it returns for the
backward: do not modify them in place between the two calls (the layers keep copies of what
their caller can modify: ``private_inputs``, ``private_output``). Values of x past a
sequence's length (padding) reach no result, NaN and inf included.
"""

from __future__ import annotations

import collections
import functools
import types
from typing import Any

import numpy as np

from . import _dtypes, backends
from .cell_registry import spec


def free_scratch() -> None:
    """Releases the calling thread's scratch buffers of the CPU backend (the intermediate
    arrays zx, dzx, dzh kept between calls); the next call allocates them again."""
    backends.CPU.free_scratch()


# ------------------------------------------------------------------ checks


def _check(backend, value, name, dtype, shape, lead):
    """``value`` as a C-contiguous array of ``backend``, of ``dtype`` and ``shape``, or a
    TypeError/ValueError naming it (``lead``: what chose the dtype)."""
    if not isinstance(value, backend.array_type):
        kind = type(value)
        raise TypeError(f"{name} must be a {backend.type_name} like {lead}, not "
                        f"{kind.__module__}.{kind.__name__}: the arrays of one call live on one "
                        "device (cupy.asarray(a) moves a NumPy array to the GPU, a.get() a "
                        "CuPy array to the host)")
    if value.dtype != dtype:
        raise TypeError(f"{name} has dtype {value.dtype}, expected {dtype} (the dtype of "
                        f"{lead})")
    if value.shape != tuple(shape):
        raise ValueError(f"{name} has shape {value.shape}, expected {tuple(shape)}")
    return backend.contiguous(value)


def _check_optional(backend, value, name, dtype, shape, lead):
    return None if value is None else _check(backend, value, name, dtype, shape, lead)


def _check_sequence(x, name):
    """The backend of a [T, B, I] input with T >= 1 and a supported dtype, or an error naming
    it."""
    backend = backends.for_array(x, name)
    if not _dtypes.is_supported(x.dtype):
        raise TypeError(f"{name} has dtype {x.dtype}, expected {_dtypes.DTYPE_NAMES}")
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T, B, input_size) with T >= 1, not "
                         f"{x.shape}")
    return backend


def check_lengths(lengths, steps: int, batch: int):
    """``lengths`` as int64 values [B] in [0, T] (a NumPy array), or a ValueError."""
    if lengths is None:
        return None
    arr = np.asarray(lengths.get() if hasattr(lengths, "get") else lengths)  # CuPy: to host
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths must be integers, not of dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths has shape {arr.shape}, expected ({batch},): one per sequence")
    if batch and (arr.min() < 0 or arr.max() > steps):
        raise ValueError(f"lengths must be in [0, {steps}] (the number of steps), not "
                         f"{arr.min()} to {arr.max()}")
    return arr.astype(np.int64, copy=False)


def without_nonfinite_padding(xp, x, lengths):
    """``x`` [T, B, I] as a training forward keeps it for the weight gradient dW_ih = dzx^T x:
    itself, or, where its padding (steps t >= lengths[b], which no result may depend on) holds
    NaN or inf, a copy with the padding set to 0. dzx is 0 on padding, but 0 * NaN is NaN. (The
    kernels never read the padding's zx; only this GEMM multiplies it.) Checks the padding only:
    finite padding, the usual case, costs no copy."""
    if lengths is None:
        return x
    padding = xp.arange(x.shape[0])[:, None] >= lengths  # [T, B]
    if not padding.any() or xp.isfinite(x[padding]).all():
        return x
    x = x.copy()
    x[padding] = 0
    return x


def private_output(output, ctx):
    """The array a forward returns to its caller as ``output``: itself, or a copy where it is
    (or views) memory that a backward reads (the y kept by one of the Contexts of ``ctx``, a
    training forward's LayersContext). The caller may then modify what it got, as PyTorch
    allows, without changing the gradients. Costs one copy of the output in training mode, only
    where the output is a layer's y as such (one direction, time-major)."""
    if ctx is None:
        return output
    xp = ctx.contexts[0].layer.backend.xp
    if any(xp.shares_memory(output, c.y) for c in ctx.contexts):
        return output.copy()
    return output


def private_inputs(training, *arrays):
    """The caller's arrays (input, hx: an array, a tuple of them, or None) as a training forward
    should keep them for its backward: copies, so that the caller may change its arrays before
    backward without changing the gradients (PyTorch raises there instead). In inference the
    arrays themselves. Costs one copy of the input per training forward (states are small)."""
    def copy(a):
        if a is None or not training:
            return a
        if isinstance(a, (tuple, list)):
            return tuple(map(copy, a))
        return a.copy() if hasattr(a, "copy") else np.array(a)

    return tuple(map(copy, arrays))


def check_resets(resets, steps: int, batch: int, xp=np):
    """``resets`` as bools [T, B] of the array library ``xp``, or a ValueError."""
    if resets is None:
        return None
    arr = xp.asarray(resets)
    if arr.dtype != bool:
        raise ValueError(f"resets must be a bool array, not of dtype {arr.dtype}")
    if arr.shape != (steps, batch):
        raise ValueError(f"resets has shape {arr.shape}, expected ({steps}, {batch}): (T, B)")
    return arr


class _Layer:
    """One layer and direction's checked arguments: C-contiguous arrays of one backend and
    dtype, and the sizes (steps, batch, inputs, hidden; out: the size of h, P with the
    projection; gh = G*hidden)."""

    __slots__ = ("backend", "spec", "x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr",
                 "steps", "batch", "inputs", "hidden", "out", "gh", "dtype")

    def __init__(self, backend, cell_spec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        self.backend, self.spec = backend, cell_spec
        self.x, self.h0, self.c0, self.w_ih, self.w_hh = x, h0, c0, w_ih, w_hh
        self.b_ih, self.b_hh, self.w_hr = b_ih, b_hh, w_hr
        self.steps, self.batch, self.inputs = x.shape
        self.gh, self.out = w_hh.shape
        self.hidden = self.gh // cell_spec.gate_count
        self.dtype = x.dtype


def _layer_sizes(cell_spec, w_hh, w_hr, names, backend):
    """(hidden, out) of a layer from w_hh [G*H, R] and w_hr [P, H] (or None)."""
    g = cell_spec.gate_count
    if not isinstance(w_hh, backend.array_type) or w_hh.ndim != 2 or w_hh.shape[1] < 1 \
            or w_hh.shape[0] < g or w_hh.shape[0] % g:
        shape = getattr(w_hh, "shape", type(w_hh).__name__)
        raise ValueError(f"{names['w_hh']} must be a {backend.type_name} of shape "
                         f"({g}*hidden_size, hidden_size), not {shape}")
    hidden = w_hh.shape[0] // g
    if w_hr is None:
        if w_hh.shape[1] != hidden:
            raise ValueError(f"{names['w_hh']} has shape {w_hh.shape}, expected "
                             f"{(g * hidden, hidden)}")
        return hidden, hidden
    if cell_spec.name != "lstm":
        raise ValueError(f"{names['w_hr']} must be None for cell {cell_spec.name!r}: the "
                         "projection is the LSTM's")
    return hidden, w_hh.shape[1]


def _check_layer(backend, cell_spec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, names):
    """A layer's arguments checked against x (already checked): ``names`` maps w_ih, w_hh,
    b_ih, b_hh, w_hr, h0, c0 to the names errors use."""
    dtype, lead = x.dtype, names["x"]
    hidden, out = _layer_sizes(cell_spec, w_hh, w_hr, names, backend)
    steps, batch, inputs = x.shape
    gh = cell_spec.gate_count * hidden
    w_ih = _check(backend, w_ih, names["w_ih"], dtype, (gh, inputs), lead)
    w_hh = _check(backend, w_hh, names["w_hh"], dtype, (gh, out), lead)
    w_hr = _check_optional(backend, w_hr, names["w_hr"], dtype, (out, hidden), lead)
    b_ih = _check_optional(backend, b_ih, names["b_ih"], dtype, (gh,), lead)
    b_hh = _check_optional(backend, b_hh, names["b_hh"], dtype, (gh,), lead)
    if h0 is not None:
        h0 = _check(backend, h0, names["h0"], dtype, (batch, out), lead)
    if not cell_spec.has_cell_state:
        if c0 is not None:
            raise ValueError(f"{names['c0']} must be None for cell {cell_spec.name!r}: only "
                             "the LSTM has a cell state")
    elif c0 is not None:
        c0 = _check(backend, c0, names["c0"], dtype, (batch, hidden), lead)
    return _Layer(backend, cell_spec, backend.contiguous(x), h0, c0, w_ih, w_hh, b_ih, b_hh,
                  w_hr)


# ------------------------------------------------------------------ one layer, one direction


class Context:
    """What a training forward of one layer and direction keeps for its backward: the
    checked arguments, y, the training workspace ``saved`` (T*B*S*H values, S the cell's
    saved slots: 5 for the LSTM, 4 for the GRU, 0 for the RNN), lengths and resets, and the
    rounding of the matmuls' operands."""

    __slots__ = ("layer", "y", "saved", "lengths", "resets", "rounding")

    def __init__(self, layer, y, saved, lengths, resets, rounding):
        self.layer, self.y, self.saved, self.lengths, self.resets, self.rounding = (
            layer, y, saved, lengths, resets, rounding)


def _precision(layer):
    """(compute dtype, rounding) of a layer's call: the dtype the recurrence computes in, and
    what the matmuls round their operands to (rnnfast._dtypes.matmul_rounding). Widens the
    layer's states and biases to the compute dtype, and rounds W_hh as the recurrent matmul
    multiplies it."""
    storage = layer.dtype
    rounding = _dtypes.matmul_rounding(storage, layer.backend.cuda)
    if rounding is not None:
        layer.w_hh = _dtypes.matmul_operand(layer.w_hh, rounding)
        layer.w_hr, layer.b_ih, layer.b_hh, layer.h0, layer.c0 = map(_dtypes.to_compute, (
            layer.w_hr, layer.b_ih, layer.b_hh, layer.h0, layer.c0))
    return _dtypes.compute_dtype(storage), rounding


# The arguments of a backend's recurrent_forward for one direction (those of
# rnnfast._cpu.recurrent_forward, in their order).
ForwardCall = collections.namedtuple(
    "ForwardCall", "cell zx w_hh b_hh h0 c0 y h_n c_n saved lengths resets w_hr")


def _together(layers):
    """The directions of a layer (layers: one or two, the same cell and sizes) grouped by the
    calls of the backend's forward recurrence: both in one where the backend runs them at once
    (``together``: the CUDA backends' persistent path, where both fit on the device), else one a
    call (then each reuses the one scratch buffer of its inputs)."""
    first = layers[0]
    if len(layers) == 2 and first.backend.together(
            first.spec.name, first.hidden, 0 if first.w_hr is None else first.out,
            _dtypes.compute_dtype(first.dtype),
            _dtypes.matmul_rounding(first.dtype, first.backend.cuda)):
        return [[0, 1]]
    return [[d] for d in range(len(layers))]


def _forward_call(layer: _Layer, slot, lengths, resets, training):
    """One direction's input projection and outputs: (its ForwardCall, the rounding). slot: its
    place in the backend's call (its scratch buffer)."""
    be, steps, batch, gh, out, hidden = (layer.backend, layer.steps, layer.batch, layer.gh,
                                         layer.out, layer.hidden)
    dtype, rounding = _precision(layer)
    # The input projection of all steps, b_ih included: one GEMM, outside the time loop.
    zx = be.scratch(f"zx{slot}", (steps, batch, gh), dtype)
    be.gemm(layer.x.reshape(steps * batch, layer.inputs), layer.w_ih,
            zx.reshape(steps * batch, gh), trans_b=True, bias=layer.b_ih, rounding=rounding)
    y = be.empty((steps, batch, out), dtype)
    h_n = be.empty((batch, out), dtype)
    c_n = be.empty((batch, hidden), dtype) if layer.spec.has_cell_state else None
    per_unit = len(layer.spec.saved)
    saved = (be.empty((steps, batch, per_unit * hidden), dtype, aligned=True)
             if training and per_unit else None)
    return ForwardCall(layer.spec.name, zx, layer.w_hh, layer.b_hh, layer.h0, layer.c0, y, h_n,
                       c_n, saved, lengths, resets, layer.w_hr), rounding


def _forward(layers, lengths, resets, training):
    """The forward of checked arguments (h0 and, for the LSTM, c0 given) of a layer's directions
    (layers and resets: one or two, the reverse direction's on its reversed sequences):
    [(y, h_n, c_n, ctx)], a direction each."""
    results = []
    for group in _together(layers):
        calls = [_forward_call(layers[d], slot, lengths, resets[d], training)
                 for slot, d in enumerate(group)]
        rounding = calls[0][1]
        layers[0].backend.recurrent_forward([call for call, _ in calls], rounding=rounding)
        for d, (call, _) in zip(group, calls):
            layer, storage, ctx = layers[d], layers[d].dtype, None
            if training:
                layer.x = without_nonfinite_padding(layer.backend.xp, layer.x, lengths)  # dW_ih
                ctx = Context(layer, call.y, call.saved, lengths, call.resets, rounding)
            results.append((_dtypes.to_storage(call.y, storage),
                            _dtypes.to_storage(call.h_n, storage),
                            _dtypes.to_storage(call.c_n, storage), ctx))
    return results


def _backward(ctx: Context, dy, dh_n, dc_n, store_dx=True, input_grad=True):
    """The backward of checked arguments: the dict of ``backward``; with ``store_dx`` False its
    "x" in the compute dtype, not rounded to a 16-bit storage dtype (backward_layers adds the
    two directions' before it rounds the sum once); with ``input_grad`` False its "x" is None,
    and the GEMM that computes it skipped."""
    layer, y, rounding = ctx.layer, ctx.y, ctx.rounding
    be, steps, batch, gh, out, hidden, storage = (layer.backend, layer.steps, layer.batch,
                                                  layer.gh, layer.out, layer.hidden, layer.dtype)
    dtype = y.dtype  # the forward's compute dtype (float32 for the 16-bit types)
    dy, dh_n, dc_n = map(_dtypes.to_compute, (dy, dh_n, dc_n))
    gru = layer.spec.name == "gru"  # the only cell whose dzh differs from dzx
    dzx = be.scratch("dzx", (steps, batch, gh), dtype)
    dzh = be.scratch("dzh", (steps, batch, gh), dtype) if gru else None
    dh0 = be.empty((batch, out), dtype)
    dc0 = be.empty((batch, hidden), dtype) if layer.spec.has_cell_state else None
    dh_proj = None if layer.w_hr is None else be.empty((steps, batch, out), dtype)
    be.recurrent_backward(layer.spec.name, layer.w_hh, layer.h0, layer.c0, y, ctx.saved, dy,
                          dh_n, dc_n, dzx, dzh, dh0, dc0, ctx.lengths, ctx.resets, layer.w_hr,
                          dh_proj, rounding=rounding)

    # The large GEMMs, after the loop. The state step t starts from is h0 for t = 0 and where
    # resets[t] is set, y[t-1] elsewhere (dzx and dzh are 0 on padding, whatever y holds there).
    xp = be.xp
    dzx = dzx.reshape(steps * batch, gh)
    dzh = dzx if dzh is None else dzh.reshape(steps * batch, gh)
    dw_hh = be.empty((gh, out), dtype)
    be.gemm(dzh[:batch], layer.h0, dw_hh, trans_a=True, rounding=rounding)
    if steps > 1:
        h_prev = y[:-1] if ctx.resets is None else xp.where(ctx.resets[1:, :, None], layer.h0,
                                                             y[:-1])
        be.gemm(dzh[batch:], be.contiguous(h_prev).reshape((steps - 1) * batch, out), dw_hh,
                trans_a=True, accumulate=True, rounding=rounding)
    dx = None
    if input_grad:
        dx = be.empty((steps, batch, layer.inputs), dtype)
        be.gemm(dzx, layer.w_ih, dx.reshape(steps * batch, layer.inputs), rounding=rounding)
    dw_ih = be.empty((gh, layer.inputs), dtype)
    be.gemm(dzx, layer.x.reshape(steps * batch, layer.inputs), dw_ih, trans_a=True,
            rounding=rounding)
    db_ih = be.column_sums(dzx)
    grads = {"x": _dtypes.to_storage(dx, storage) if store_dx else dx,
             "h0": _dtypes.to_storage(dh0, storage), "c0": _dtypes.to_storage(dc0, storage),
             "w_ih": dw_ih, "w_hh": dw_hh, "b_ih": db_ih,
             "b_hh": db_ih.copy() if dzh is dzx else be.column_sums(dzh)}
    if layer.w_hr is not None:
        # dW_hr = sum_t dh_t^T m_t with m_t = o * tanh(c_t), from the saved o and c (zero on
        # padding, where dh_proj is zero too).
        o = ctx.saved[:, :, layer.spec.saved_slot("o", hidden)]
        c = ctx.saved[:, :, layer.spec.saved_slot("c", hidden)]
        m = (o * xp.tanh(c)).reshape(steps * batch, hidden)
        grads["w_hr"] = be.empty((out, hidden), dtype)
        # float32 products here even for 16-bit types (m and dh_proj are never stored in them)
        be.gemm(dh_proj.reshape(steps * batch, out), m, grads["w_hr"], trans_a=True)
    return grads


_SINGLE_NAMES = {n: n for n in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")}


def forward(cell: str, x, h0, w_ih, w_hh, *, b_ih=None, b_hh=None, c0=None, w_hr=None,
            lengths=None, resets=None, training: bool = False):
    """Runs one layer over a sequence, in one direction.

    Returns ``(y, h_n, c_n, ctx)``: y [T, B, R], h_n [B, R], c_n [B, H] (LSTM; else None), and
    ctx, the Context that ``backward`` needs (None unless ``training``); R = H, or P with w_hr.
    """
    cell_spec = spec(cell)
    backend = _check_sequence(x, "x")
    if h0 is None or (cell_spec.has_cell_state and c0 is None):
        raise ValueError("h0 (and c0 for the LSTM) must be given; forward_layers takes None "
                         "for zeros")
    layer = _check_layer(backend, cell_spec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                         _SINGLE_NAMES)
    lengths = backend.index(check_lengths(lengths, layer.steps, layer.batch), np.int64)
    resets = backend.index(check_resets(resets, layer.steps, layer.batch, backend.xp), bool)
    return _forward([layer], lengths, [resets], training)[0]


def _check_final_gradients(layer, dy, dh_n, dc_n, names):
    be, lead = layer.backend, "the forward's output"
    dy = _check(be, dy, names[0], layer.dtype, (layer.steps, layer.batch, layer.out), lead)
    dh_n = _check_optional(be, dh_n, names[1], layer.dtype, (layer.batch, layer.out), lead)
    if layer.spec.has_cell_state:
        dc_n = _check_optional(be, dc_n, names[2], layer.dtype, (layer.batch, layer.hidden),
                               lead)
    elif dc_n is not None:
        raise ValueError(f"{names[2]} must be None for cell {layer.spec.name!r}: only the LSTM "
                         "has a cell state")
    return dy, dh_n, dc_n


def backward(ctx: Context, dy, dh_n=None, dc_n=None) -> dict[str, Any]:
    """Backpropagation through time for a training ``forward``.

    dy [T, B, R]: gradient of the loss with respect to y; dh_n [B, R], dc_n [B, H]: with
    respect to h_n and c_n (None for zero). Returns a dict of gradients keyed x, h0, c0 (None
    unless LSTM), w_ih, w_hh, b_ih, b_hh (bias gradients are returned even for a forward
    without biases), and w_hr for a forward with the projection. For a 16-bit dtype (bfloat16,
    float16), dy, dh_n, dc_n are of that dtype, and so are the gradients of x, h0, c0; the
    others are float32.
    """
    if not isinstance(ctx, Context):
        raise TypeError("ctx must be the Context returned by forward(..., training=True)")
    return _backward(ctx, *_check_final_gradients(ctx.layer, dy, dh_n, dc_n,
                                                  ("dy", "dh_n", "dc_n")))


# ------------------------------------------------------------------ stacks


def _reverse_order(xp, lengths, steps, batch):
    """order [T, B]: order[t, b] = lengths[b] - 1 - t for t < lengths[b], else t (padding stays
    where it is). Gathering with it reverses every sequence within its own length; it is an
    involution, so the same gather brings the results back."""
    t = xp.arange(steps)[:, None]
    ends = xp.full(batch, steps) if lengths is None else lengths
    return xp.where(t < ends, ends - 1 - t, t)


def _gather(xp, a, order):
    """a[order[t, b], b] for every t, b: a is [T, B] or [T, B, C]."""
    return xp.take_along_axis(a, order if a.ndim == 2 else order[:, :, None], axis=0)


@functools.cache
def param_names(num_layers: int, bidirectional: bool, bias: bool = True, proj: bool = False):
    """PyTorch's parameter names of a stack, layer by layer and direction by direction (its
    order): a tuple of read-only dicts mapping w_ih, w_hh, b_ih, b_hh, w_hr to weight_ih_l0 &
    co. (Cached: every call of forward_layers asks.)"""
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse")[:2 if bidirectional else 1]:
            n = {"w_ih": f"weight_ih_l{k}{sfx}", "w_hh": f"weight_hh_l{k}{sfx}"}
            if bias:
                n.update({"b_ih": f"bias_ih_l{k}{sfx}", "b_hh": f"bias_hh_l{k}{sfx}"})
            if proj:
                n["w_hr"] = f"weight_hr_l{k}{sfx}"
            names.append(types.MappingProxyType(n))
    return tuple(names)


def _stack(xp, arrays):
    """xp.stack(arrays) of a stack's new per-layer arrays (h_n & co.); a view of the only one
    for a single layer and direction, which costs no copy."""
    return arrays[0][None] if len(arrays) == 1 else xp.stack(arrays)


class LayersContext:
    """What a training ``forward_layers`` keeps for ``backward_layers``: a Context per layer
    and direction, the dropout masks, the reversal order of the reverse direction."""

    __slots__ = ("spec", "contexts", "names", "masks", "order", "num_layers", "directions")

    def __init__(self, cell_spec, contexts, names, masks, order, num_layers, directions):
        self.spec, self.contexts, self.names, self.masks, self.order = (
            cell_spec, contexts, names, masks, order)
        self.num_layers, self.directions = num_layers, directions


def _check_states(backend, hx, name, cell_spec, count, batch, out, hidden, dtype):
    """hx (None; [L*D, B, R]; for the LSTM a pair of that and [L*D, B, H] whose members may
    be None) as [h, c] checked arrays or None."""
    if cell_spec.has_cell_state:
        if hx is None:
            hx = (None, None)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{name} must be None or a tuple (h, c) for the LSTM")
        parts = ((hx[0], f"{name}[0] (h)", out), (hx[1], f"{name}[1] (c)", hidden))
    else:
        parts = ((hx, name, out),)
    states = [None, None]
    for i, (state, part, size) in enumerate(parts):
        if state is not None:
            states[i] = _check(backend, state, part, dtype, (count, batch, size),
                               "the parameters")
    return states


def forward_layers(cell: str, input, params: dict, *, num_layers: int = 1,
                   bidirectional: bool = False, hx=None, lengths=None, resets=None,
                   dropout: float = 0.0, generator: np.random.Generator | None = None,
                   training: bool = False):
    """A stack of layers as PyTorch's torch.nn.RNN/LSTM/GRU, time-major and batched.

    input [T, B, I]; params: the parameters keyed by PyTorch's names (``param_names``; biases
    and weight_hr optional, all of one dtype and backend); hx: h0 [L*D, B, R] (for the LSTM a
    tuple (h0, c0) with c0 [L*D, B, H]; None, or a None member, for zeros), indexed by
    layer * D + direction; lengths [B], resets [T, B] as in ``forward`` (the reverse direction
    runs each sequence from its own last step, and crosses the reset boundaries the other way:
    it is reset before step t-1 where resets[t] is set). dropout: the probability of zeroing
    each output of a layer but the last (pass 0 in eval mode), with masks drawn from the NumPy
    ``generator`` (scaled by 1 / (1 - dropout)); backward uses the same masks. training: keep
    what ``backward_layers`` needs.

    Returns ``(output [T, B, D*R], h_n [L*D, B, R], c_n [L*D, B, H] or None, ctx)``, ctx the
    LayersContext of ``backward_layers`` (None unless ``training``).
    """
    cell_spec = spec(cell)
    backend = _check_sequence(input, "input")
    xp = backend.xp
    steps, batch, _ = input.shape
    dirs = 2 if bidirectional else 1
    first = params.get("weight_hh_l0")
    if first is None:
        raise KeyError("params has no weight_hh_l0")
    dtype = first.dtype
    if input.dtype != dtype:
        raise TypeError(f"input has dtype {input.dtype}, but the parameters are {dtype}; "
                        f"convert it with .astype(np.{dtype})")
    proj = "weight_hr_l0" in params
    names = param_names(num_layers, bidirectional, "bias_ih_l0" in params, proj)
    hidden, out = _layer_sizes(cell_spec, first, params.get("weight_hr_l0"),
                               {"w_hh": "weight_hh_l0", "w_hr": "weight_hr_l0"}, backend)
    h0, c0 = _check_states(backend, hx, "hx", cell_spec, num_layers * dirs, batch, out, hidden,
                           dtype)
    if h0 is None:
        h0 = xp.zeros((num_layers * dirs, batch, out), dtype)
    if cell_spec.has_cell_state and c0 is None:
        c0 = xp.zeros((num_layers * dirs, batch, hidden), dtype)
    lengths = check_lengths(lengths, steps, batch)
    resets = backend.index(check_resets(resets, steps, batch, xp), bool)
    lengths = backend.index(lengths, np.int64)
    # The reverse direction runs on each sequence reversed within its own length: step t of it
    # is step order[t, b] of the input, and its resets are those of the step after, reversed
    # the same way.
    order = _reverse_order(xp, lengths, steps, batch) if bidirectional else None
    resets_by_direction = (resets, None if resets is None or order is None else _gather(
        xp, xp.concatenate([resets[1:], xp.zeros((1, batch), bool)]), order))
    use_dropout = dropout > 0 and num_layers > 1
    if use_dropout and generator is None:
        raise ValueError("dropout > 0 needs a generator (a numpy.random.Generator)")

    layer_in, h_n, c_n, contexts, masks = input, [], [], [], []
    for k in range(num_layers):
        layers = []
        for d in range(dirs):
            i = k * dirs + d
            n = names[i]
            layer_names = {**n, "x": "input" if k == 0 else f"the output of layer {k - 1}",
                           "h0": "hx", "c0": "hx", "b_ih": n.get("b_ih", "b_ih"),
                           "b_hh": n.get("b_hh", "b_hh"), "w_hr": n.get("w_hr", "w_hr")}
            p = {ours: params.get(theirs) for ours, theirs in n.items()}
            for ours, theirs in n.items():
                if p[ours] is None:
                    raise KeyError(f"params has no {theirs}")
            seq = layer_in if d == 0 else _gather(xp, layer_in, order)
            layers.append(_check_layer(backend, cell_spec, seq, h0[i],
                                       None if c0 is None else c0[i], p["w_ih"], p["w_hh"],
                                       p.get("b_ih"), p.get("b_hh"), p.get("w_hr"), layer_names))
        outputs = []
        for d, (y, h, c, ctx) in enumerate(_forward(layers, lengths, resets_by_direction,
                                                    training)):
            outputs.append(y if d == 0 else _gather(xp, y, order))
            h_n.append(h)
            c_n.append(c)
            contexts.append(ctx)
        layer_in = outputs[0] if dirs == 1 else xp.concatenate(outputs, axis=2)
        if use_dropout and k < num_layers - 1:
            keep = generator.random(layer_in.shape) >= dropout
            scale = 0.0 if dropout == 1 else 1.0 / (1.0 - dropout)
            # (to_storage: a bfloat16 array's masks are bfloat16, rounded once, and so must be
            # those of bfloat16 values in float32, _dtypes.bfloat16_in_float32; layer_in needs
            # no rounding: it is the next layer's matmul operand, which rounds it)
            masks.append(xp.asarray(_dtypes.to_storage(keep * scale, dtype)))
            layer_in = layer_in * masks[-1]
    ctx = (LayersContext(cell_spec, contexts, names, masks, order, num_layers, dirs)
           if training else None)
    return (layer_in, _stack(xp, h_n), _stack(xp, c_n) if cell_spec.has_cell_state else None,
            ctx)


def backward_layers(ctx: LayersContext, grad_output, grad_hx=None, *, input_grad: bool = True):
    """Backpropagation through time for a training ``forward_layers``, through every layer and
    direction (with its lengths, resets and dropout masks).

    grad_output [T, B, D*R]; grad_hx: the gradient for the final states, in hx's structure
    (None for zeros, or for the LSTM a tuple whose members may be None); input_grad: False
    where the input's gradient is not wanted (an input that needs none), to skip its GEMM.
    Returns ``(grad_input or None, grad_h0, grad_c0 or None, grads)``, grads keyed by
    PyTorch's parameter names in their order.
    """
    if not isinstance(ctx, LayersContext):
        raise TypeError("ctx must be the LayersContext of forward_layers(..., training=True)")
    first = ctx.contexts[0].layer
    be, xp, dirs = first.backend, first.backend.xp, ctx.directions
    out, hidden, batch, steps = first.out, first.hidden, first.batch, first.steps
    dy = _check(be, grad_output, "grad_output", first.dtype, (steps, batch, dirs * out),
                "the forward's output")
    dh_n, dc_n = _check_states(be, grad_hx, "grad_hx", ctx.spec, len(ctx.contexts), batch, out,
                               hidden, first.dtype)
    dh0, dc0 = [None] * len(ctx.contexts), [None] * len(ctx.contexts)
    grads = {}
    for k in reversed(range(ctx.num_layers)):
        if k < len(ctx.masks):
            dy = _dtypes.to_storage(dy * ctx.masks[k], first.dtype)
        dx = 0 if input_grad or k > 0 else None
        for d in range(dirs):
            i = k * dirs + d
            part = dy[:, :, d * out:(d + 1) * out]
            part = be.contiguous(part if d == 0 else _gather(xp, part, ctx.order))
            g = _backward(ctx.contexts[i], part, None if dh_n is None else dh_n[i],
                          None if dc_n is None else dc_n[i], store_dx=False,
                          input_grad=dx is not None)
            if dx is not None:
                dx = dx + (g["x"] if d == 0 else _gather(xp, g["x"], ctx.order))
            dh0[i], dc0[i] = g["h0"], g["c0"]
            grads.update({theirs: g[ours] for ours, theirs in ctx.names[i].items()})
        dy = _dtypes.to_storage(dx, first.dtype)  # 16-bit types: rounded once, after the sum
    ordered = [name for n in ctx.names for name in n.values()]
    grads = {name: grads[name] for name in ordered}
    return dy, _stack(xp, dh0), _stack(xp, dc0) if ctx.spec.has_cell_state else None, grads
