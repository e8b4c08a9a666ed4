"""Functional API on the GPU: ``rnnfast.functional``'s forward and backward for CuPy arrays.

The same arguments, semantics and results as ``rnnfast.functional.forward`` / ``backward``
(and so as ``rnnfast.reference``), with ``cupy.ndarray`` in and out:

- the large GEMMs (the input projection before the loop; dx, dW_ih, dW_hh and the bias
  gradients after it) are CuPy's (cuBLAS; float32 GEMMs use TF32 only where CuPy is told to,
  by its ``CUPY_TF32`` environment variable),
- the loop over time runs in ``rnnfast._cuda``: one fused kernel per step, the recurrent matmul
  with the cell's gate math in its epilogue.

Everything runs on CuPy's current stream and device, in memory from CuPy's pool; nothing
synchronizes, so the results are ready when that stream says so, as with any CuPy operation.
Arrays may have any strides (non-contiguous ones are copied); they are never written.

CuPy is imported on first use, so ``import rnnfast`` works without it.
"""

from .functional import ArrayKind, Context, LayerArgs, final_gradients

_backend = None  # (cupy, rnnfast._cuda) once a device was found


def _load():
    """CuPy and rnnfast._cuda, or an exception that says what is missing."""
    global _backend
    if _backend is not None:
        return _backend
    try:
        import cupy
    except ImportError as error:
        raise ImportError("rnnfast.cuda_functional needs CuPy: pip install rnnfast[cuda13] "
                          "(or rnnfast[cuda12], to match the CUDA driver)") from error
    try:
        from . import _cuda
    except ImportError as error:
        raise ImportError("this rnnfast was built without its CUDA module (nvcc was not found "
                          "when it was built, or RNNFAST_ENABLE_CUDA=OFF); rebuild it where "
                          "nvcc is on the PATH") from error
    info = _cuda.device_info()
    if not info["devices"]:
        raise RuntimeError(f"no CUDA device: {info['error'] or 'none visible'}")
    _backend = (cupy, _cuda)
    return _backend


def _cupy_kind(cp):
    return ArrayKind(cp.ndarray, "cupy.ndarray", cp.ascontiguousarray)


def forward(cell, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, c0=None, training=False):
    """Runs one layer over a sequence on the GPU.

    Returns ``(y, h_n, c_n, ctx)`` as ``rnnfast.functional.forward`` does: y [T, B, H],
    h_n [B, H], c_n [B, H] (LSTM; else None), ctx for ``backward`` (None unless ``training``).
    """
    cp, cuda = _load()
    args = LayerArgs(_cupy_kind(cp), cell, x, h0, w_ih, w_hh, b_ih, b_hh, c0, None)
    steps, batch, inputs, hidden, gh, dtype = (
        args.steps, args.batch, args.inputs, args.hidden, args.gh, args.dtype)
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = (
        args.x, args.w_ih, args.w_hh, args.b_ih, args.b_hh, args.h0, args.c0)

    # The input projection of all steps: one GEMM, outside the time loop.
    zx = (x.reshape(steps * batch, inputs) @ w_ih.T).reshape(steps, batch, gh)
    if b_ih is not None:
        zx += b_ih
    y = cp.empty((steps, batch, hidden), dtype)
    h_n = cp.empty((batch, hidden), dtype)
    c_n = cp.empty((batch, hidden), dtype) if cell == "lstm" else None
    per_unit = cuda.saved_per_unit(cell)
    saved = cp.empty((steps, batch, per_unit * hidden), dtype) if training and per_unit else None
    cuda.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved,
                           stream=cp.cuda.get_current_stream().ptr)
    ctx = None
    if training:
        ctx = Context(cell=cell, x=x, w_ih=w_ih, w_hh=w_hh, h0=h0, c0=c0, y=y, saved=saved)
    return y, h_n, c_n, ctx


def backward(ctx, dy, dh_n=None, dc_n=None):
    """Backpropagation through time for a training ``forward`` on the GPU.

    Returns the dict of ``rnnfast.functional.backward``: gradients keyed x, h0, c0 (None unless
    LSTM), w_ih, w_hh, b_ih, b_hh (bias gradients even for a forward without biases).
    """
    cp, cuda = _load()
    if not isinstance(ctx, Context) or not isinstance(ctx.y, cp.ndarray):
        raise TypeError("ctx must be the Context returned by "
                        "rnnfast.cuda_functional.forward(..., training=True)")
    cell, x, w_ih, w_hh, y = ctx.cell, ctx.x, ctx.w_ih, ctx.w_hh, ctx.y
    steps, batch, hidden = y.shape
    inputs, gh = x.shape[2], w_hh.shape[0]
    dtype = y.dtype
    dy, dh_n, dc_n = final_gradients(ctx, dy, dh_n, dc_n, _cupy_kind(cp))

    dzx = cp.empty((steps, batch, gh), dtype)
    dzh = cp.empty_like(dzx) if cell == "gru" else None  # equal to dzx for the other cells
    dh0 = cp.empty((batch, hidden), dtype)
    dc0 = cp.empty((batch, hidden), dtype) if cell == "lstm" else None
    workspace = cp.empty(cuda.workspace_size("backward", cell, batch, hidden, 0), dtype)
    cuda.recurrent_backward(cell, w_hh, ctx.h0, ctx.c0, y, ctx.saved, dy, dh_n, dc_n,
                            dzx, dzh, dh0, dc0, workspace=workspace,
                            stream=cp.cuda.get_current_stream().ptr)

    # The large GEMMs, after the loop. h_{t-1} is h0 for t = 0 and y[t-1] after.
    dzx = dzx.reshape(steps * batch, gh)
    dzh = dzx if dzh is None else dzh.reshape(steps * batch, gh)
    dw_hh = dzh[:batch].T @ ctx.h0
    if steps > 1:
        dw_hh += dzh[batch:].T @ y[:-1].reshape((steps - 1) * batch, hidden)
    return {
        "x": (dzx @ w_ih).reshape(steps, batch, inputs),
        "h0": dh0,
        "c0": dc0,
        "w_ih": dzx.T @ x.reshape(steps * batch, inputs),
        "w_hh": dw_hh,
        "b_ih": dzx.sum(axis=0),
        "b_hh": dzh.sum(axis=0),
    }
