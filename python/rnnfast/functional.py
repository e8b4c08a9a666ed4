"""Functional API: one recurrent layer in one direction, forward and backward through time.

The layers (``rnnfast.RNN``, ``LSTM``, ``GRU``) are built on these two functions, and so are
the other front ends. They take the same arguments as ``rnnfast.reference.forward`` and
``backward`` and return the same results, computed by the compiled kernels:

- the input projection ``zx = x W_ih^T + b_ih`` for all steps is one large GEMM,
- the loop over time runs in C++ (``rnnfast._cpu``): per step the recurrent matmul on packed
  weights with the cell's gate math fused into it,
- after the backward loop the weight and input gradients are again large GEMMs.

The GEMMs are rnnfast's own (``_cpu.gemm``, on the same threads and micro-kernel as the
recurrence), not NumPy's BLAS, whose worker threads keep spinning after each call and would
take the cores from the recurrence that follows.

Shapes are time-major: ``x`` [T, B, I], ``h0``/``c0`` [B, H], ``w_ih`` [G*H, I], ``w_hh``
[G*H, H], biases [G*H], with PyTorch's gate order (see ``rnnfast.reference``). Optional:
``lengths`` [B] (integers in [0, T]: steps past a sequence's length are padding, its output is 0
there and h_n/c_n are its state after its own last step) and ``resets`` [T, B] (bools: the
state is put back to h0/c0 before step t where set), both handled inside the kernels; and
for the LSTM ``w_hr`` [P, H], PyTorch's projection (proj_size): h = (o * tanh(c)) W_hr^T, so
that h0, y and h_n have P features and ``w_hh`` is [4H, P], also inside the kernels.

dtypes: float32, float64, or bfloat16 (``ml_dtypes.bfloat16``), computed as ``rnnfast._dtypes``
describes: bfloat16 products and float32 sums and gate math; y, h_n, c_n and the gradients of x,
h0, c0 in bfloat16, the weight and bias gradients in float32.

Arrays may have any strides (non-contiguous ones are copied) and may be read-only; they are
never written. A training forward keeps references to ``x`` and the weights for the backward:
do not modify them in place between the two calls.
"""

import threading

import numpy as np

from . import _cpu, _dtypes
from ._dtypes import DTYPES
from .reference import CELLS, GATES

# Per-thread buffers for the intermediate arrays that die within one call: the input
# projection zx (forward) and dzx, dzh (backward). Kept between calls, each at the largest size
# it has served, so that repeated calls reuse their memory: fresh memory costs its first write
# a page fault and the kernel's zeroing of the page (about 0.12 ms per MB on the development
# machine, 8-15% of an LSTM layer's inference at T=100, B=16-64). free_scratch() gives them
# back.
_scratch = threading.local()


def _scratch_array(slot, shape, dtype):
    """A C-contiguous array of this shape and dtype in the calling thread's buffer `slot`,
    valid until the next request for the same slot on this thread."""
    count = int(np.prod(shape))
    buffers = _scratch.__dict__.setdefault("buffers", {})
    buffer = buffers.get(slot)
    if buffer is None or buffer.dtype != dtype or buffer.size < count:
        buffer = buffers[slot] = np.empty(count, dtype)
    return buffer[:count].reshape(shape)


def _aligned_empty(shape, dtype, alignment=64):
    """np.empty whose data starts on an ``alignment``-byte boundary (NumPy guarantees 16): the
    kernels store the training workspace with aligned non-temporal vector stores."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def free_scratch():
    """Releases the calling thread's scratch buffers (see _scratch); the next call allocates
    them again."""
    _scratch.__dict__.pop("buffers", None)


class Context:
    """What a training forward keeps for its backward (the arrays below, and nothing else).

    Memory beyond the inputs and y: the training workspace ``saved``, T*B*S*H values with
    S = 5 (LSTM: i, f, g, o, c), 4 (GRU: r, z, n, W_hn h + b_hn), 0 (RNN).
    """

    __slots__ = ("cell", "x", "w_ih", "w_hh", "w_hr", "h0", "c0", "y", "saved", "lengths",
                 "resets", "dtype", "bf16_matmul")

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)


class ArrayKind:
    """The array library a call runs on: its array type, named in errors, and how an argument
    becomes C-contiguous (and aligned) without a copy when it already is."""

    def __init__(self, array_type, type_name, contiguous):
        self.array_type, self.type_name, self.contiguous = array_type, type_name, contiguous


NUMPY = ArrayKind(np.ndarray, "numpy.ndarray", lambda a: np.require(a, requirements=("C", "A")))


def _as_array(value, name, dtype, shape, kind=NUMPY):
    """``value`` as a C-contiguous array of ``dtype`` and ``shape``, or a clear exception."""
    if not isinstance(value, kind.array_type):
        raise TypeError(f"{name} must be a {kind.type_name}, not {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} has dtype {value.dtype}, expected {dtype} (the dtype of x)")
    if value.shape != tuple(shape):
        raise ValueError(f"{name} has shape {value.shape}, expected {tuple(shape)}")
    return kind.contiguous(value)  # copies only if needed


def _optional(value, name, dtype, shape, kind=NUMPY):
    return None if value is None else _as_array(value, name, dtype, shape, kind)


class LayerArgs:
    """A forward's arguments, checked: the sizes (steps, batch, inputs, hidden; out: the size of
    h, P with the projection; gh = G*hidden), dtype, and the arrays made C-contiguous."""

    def __init__(self, kind, cell, x, h0, w_ih, w_hh, b_ih, b_hh, c0, w_hr):
        if cell not in GATES:
            raise ValueError(f"cell must be one of {CELLS}, not {cell!r}")
        if not isinstance(x, kind.array_type):
            raise TypeError(f"x must be a {kind.type_name}, not {type(x).__name__}")
        if x.dtype not in DTYPES:
            raise TypeError(f"x has dtype {x.dtype}, expected {_dtypes.DTYPE_NAMES}")
        if x.ndim != 3 or x.shape[0] < 1:
            raise ValueError(f"x must have shape (T, B, input_size) with T >= 1, not {x.shape}")
        if not isinstance(w_hh, kind.array_type) or w_hh.ndim != 2 or w_hh.shape[1] < 1:
            raise ValueError(f"w_hh must be a {kind.type_name} of shape "
                             "(G*hidden_size, hidden_size)")
        steps, batch, inputs = x.shape
        if w_hr is None:
            hidden = out = w_hh.shape[1]
        elif cell != "lstm":
            raise ValueError(f"w_hr must be None for cell {cell!r}: the projection is the LSTM's")
        elif not isinstance(w_hr, kind.array_type) or w_hr.ndim != 2 or min(w_hr.shape) < 1:
            raise ValueError(f"w_hr must be a {kind.type_name} of shape (proj_size, hidden_size)")
        else:
            out, hidden = w_hr.shape
        gh = GATES[cell] * hidden
        dtype = x.dtype
        self.steps, self.batch, self.inputs, self.hidden, self.out, self.gh, self.dtype = (
            steps, batch, inputs, hidden, out, gh, dtype)
        self.x = kind.contiguous(x)
        self.w_ih = _as_array(w_ih, "w_ih", dtype, (gh, inputs), kind)
        self.w_hh = _as_array(w_hh, "w_hh", dtype, (gh, out), kind)
        self.w_hr = _optional(w_hr, "w_hr", dtype, (out, hidden), kind)
        self.b_ih = _optional(b_ih, "b_ih", dtype, (gh,), kind)
        self.b_hh = _optional(b_hh, "b_hh", dtype, (gh,), kind)
        self.h0 = _as_array(h0, "h0", dtype, (batch, out), kind)
        if cell == "lstm":
            self.c0 = _as_array(c0, "c0", dtype, (batch, hidden), kind)
        elif c0 is not None:
            raise ValueError(f"c0 must be None for cell {cell!r}: only the LSTM has a cell state")
        else:
            self.c0 = None


def final_gradients(ctx, dy, dh_n, dc_n, kind=NUMPY):
    """backward's dy, dh_n, dc_n, checked against the forward that ``ctx`` holds."""
    steps, batch, out = ctx.y.shape
    hidden = ctx.w_hh.shape[0] // GATES[ctx.cell]
    dtype = ctx.dtype
    dy = _as_array(dy, "dy", dtype, ctx.y.shape, kind)
    dh_n = _optional(dh_n, "dh_n", dtype, (batch, out), kind)
    if ctx.cell == "lstm":
        dc_n = _optional(dc_n, "dc_n", dtype, (batch, hidden), kind)
    elif dc_n is not None:
        raise ValueError(f"dc_n must be None for cell {ctx.cell!r}: only the LSTM has a cell "
                         "state")
    return dy, dh_n, dc_n


def check_lengths(lengths, steps, batch):
    """``lengths`` as a C-contiguous int64 array [B] with values in [0, T], or a ValueError."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths must be integers, not of dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths has shape {arr.shape}, expected ({batch},): one per sequence")
    if batch and (arr.min() < 0 or arr.max() > steps):
        raise ValueError(f"lengths must be in [0, {steps}] (the number of steps), not "
                         f"{arr.min()} to {arr.max()}")
    return np.ascontiguousarray(arr, np.int64)


def check_resets(resets, steps, batch):
    """``resets`` as a C-contiguous bool array [T, B], or a ValueError."""
    if resets is None:
        return None
    arr = np.asarray(resets)
    if arr.dtype != bool:
        raise ValueError(f"resets must be a bool array, not of dtype {arr.dtype}")
    if arr.shape != (steps, batch):
        raise ValueError(f"resets has shape {arr.shape}, expected ({steps}, {batch}): (T, B)")
    return np.ascontiguousarray(arr)


def forward(cell, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, c0=None, training=False,
            lengths=None, resets=None, w_hr=None):
    """Runs one layer over a sequence.

    Returns ``(y, h_n, c_n, ctx)``: y [T, B, R], h_n [B, R], c_n [B, H] (LSTM; else None), and
    ctx, the Context that ``backward`` needs (None unless ``training``); R = H, or P with w_hr.
    """
    args = LayerArgs(NUMPY, cell, x, h0, w_ih, w_hh, b_ih, b_hh, c0, w_hr)
    steps, batch, inputs, hidden, out, gh, storage = (
        args.steps, args.batch, args.inputs, args.hidden, args.out, args.gh, args.dtype)
    # x and w_ih go to the GEMM as they are; the recurrence's operands in its dtype.
    dtype, bf16_matmul = _dtypes.compute_dtype(storage), _dtypes.bf16_matmul(storage)
    gemm = _cpu.gemm_bf16 if bf16_matmul else _cpu.gemm
    x, w_ih, w_hh = args.x, args.w_ih, _dtypes.matmul_operand(args.w_hh, storage)
    w_hr, b_ih, b_hh, h0, c0 = (_dtypes.to_compute(a) for a in (
        args.w_hr, args.b_ih, args.b_hh, args.h0, args.c0))
    lengths = check_lengths(lengths, steps, batch)
    resets = check_resets(resets, steps, batch)

    # The input projection of all steps, b_ih included: one GEMM, outside the time loop.
    zx = _scratch_array("zx", (steps, batch, gh), dtype)
    gemm(x.reshape(steps * batch, inputs), w_ih, zx.reshape(steps * batch, gh), trans_b=True,
         bias=b_ih)
    y = np.empty((steps, batch, out), dtype)
    h_n = np.empty((batch, out), dtype)
    c_n = np.empty((batch, hidden), dtype) if cell == "lstm" else None
    per_unit = _cpu.saved_per_unit(cell)
    saved = (_aligned_empty((steps, batch, per_unit * hidden), dtype) if training and per_unit
             else None)
    _cpu.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved, lengths, resets,
                           w_hr, bf16_matmul)
    ctx = None
    if training:
        ctx = Context(cell=cell, x=x, w_ih=w_ih, w_hh=w_hh, w_hr=w_hr, h0=h0, c0=c0, y=y,
                      saved=saved, lengths=lengths, resets=resets, dtype=storage,
                      bf16_matmul=bf16_matmul)
    return (_dtypes.to_storage(y, storage), _dtypes.to_storage(h_n, storage),
            _dtypes.to_storage(c_n, storage), ctx)


def backward(ctx, dy, dh_n=None, dc_n=None):
    """Backpropagation through time for a training ``forward``.

    dy [T, B, R]: gradient of the loss with respect to y; dh_n [B, R], dc_n [B, H]: with
    respect to h_n and c_n (None for zero). Returns a dict of gradients keyed x, h0, c0 (None
    unless LSTM), w_ih, w_hh, b_ih, b_hh (bias gradients are returned even for a forward
    without biases), and w_hr for a forward with the projection. For bfloat16, dy, dh_n, dc_n
    are bfloat16; the gradients of x, h0, c0 are bfloat16, the others float32.
    """
    if not isinstance(ctx, Context):
        raise TypeError("ctx must be the Context returned by forward(..., training=True)")
    cell, x, w_ih, w_hh, w_hr, y = ctx.cell, ctx.x, ctx.w_ih, ctx.w_hh, ctx.w_hr, ctx.y
    steps, batch, out = y.shape
    inputs, gh = x.shape[2], w_hh.shape[0]
    hidden = gh // GATES[cell]
    # the forward's precision, whatever set_float32_matmul_precision says now
    storage, dtype, bf16_matmul = ctx.dtype, y.dtype, ctx.bf16_matmul
    gemm = _cpu.gemm_bf16 if bf16_matmul else _cpu.gemm
    dy, dh_n, dc_n = (_dtypes.to_compute(a) for a in final_gradients(ctx, dy, dh_n, dc_n))

    dzx = _scratch_array("dzx", (steps, batch, gh), dtype)
    # equal to dzx for the other cells
    dzh = _scratch_array("dzh", (steps, batch, gh), dtype) if cell == "gru" else None
    dh0 = np.empty((batch, out), dtype)
    dc0 = np.empty((batch, hidden), dtype) if cell == "lstm" else None
    dh_proj = None if w_hr is None else np.empty((steps, batch, out), dtype)
    _cpu.recurrent_backward(cell, w_hh, ctx.h0, ctx.c0, y, ctx.saved, dy, dh_n, dc_n,
                            dzx, dzh, dh0, dc0, ctx.lengths, ctx.resets, w_hr, dh_proj,
                            bf16_matmul)

    # The large GEMMs, after the loop. The state step t starts from is h0 for t = 0 and where
    # resets[t] is set, y[t-1] elsewhere (dzx and dzh are 0 on padding, whatever y holds there).
    dzx = dzx.reshape(steps * batch, gh)
    dzh = dzx if dzh is None else dzh.reshape(steps * batch, gh)
    dw_hh = np.empty((gh, out), dtype)
    gemm(dzh[:batch], ctx.h0, dw_hh, trans_a=True)
    if steps > 1:
        h_prev = y[:-1] if ctx.resets is None else np.where(ctx.resets[1:, :, None], ctx.h0,
                                                              y[:-1])
        gemm(dzh[batch:], h_prev.reshape((steps - 1) * batch, out), dw_hh, trans_a=True,
             accumulate=True)
    dx = np.empty((steps, batch, inputs), dtype)
    gemm(dzx, w_ih, dx.reshape(steps * batch, inputs))
    dw_ih = np.empty((gh, inputs), dtype)
    gemm(dzx, x.reshape(steps * batch, inputs), dw_ih, trans_a=True)
    db_ih = dzx.sum(axis=0)
    grads = {
        "x": _dtypes.to_storage(dx, storage),
        "h0": _dtypes.to_storage(dh0, storage),
        "c0": _dtypes.to_storage(dc0, storage),
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db_ih,
        "b_hh": db_ih.copy() if dzh is dzx else dzh.sum(axis=0),
    }
    if w_hr is not None:
        # dW_hr = sum_t dh_t^T m_t with m_t = o * tanh(c_t), from the saved o and c (the LSTM
        # saves i, f, g, o, c; zero on padding, where dh_proj is zero too).
        o, c = ctx.saved[:, :, 3 * hidden:4 * hidden], ctx.saved[:, :, 4 * hidden:]
        m = (o * np.tanh(c)).reshape(steps * batch, hidden)
        grads["w_hr"] = np.empty((out, hidden), dtype)
        _cpu.gemm(dh_proj.reshape(steps * batch, out), m, grads["w_hr"], trans_a=True)
    return grads
