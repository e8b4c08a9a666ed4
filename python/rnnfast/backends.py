"""Backends: the array library and the compiled kernels that a call of ``rnnfast.functional``
runs on, chosen from the arrays it is given (ARCHITECTURE.md, "One orchestration").

- ``cpu``: NumPy arrays, ``rnnfast._cpu`` (SIMD kernels, rnnfast's own GEMMs and threads);
- ``cuda``: CuPy arrays, ``rnnfast._cuda`` (CUDA kernels) and CuPy's cuBLAS for the large
  GEMMs, on CuPy's current stream and allocator (its memory pool, or within rnnfast.torch's
  calls torch's caching allocator);
- ``cuda-emulated``: NumPy arrays, ``rnnfast._cuda_emulated`` (the same CUDA sources built for
  the host, CUDA threads as host threads) and NumPy's GEMMs: the whole GPU path on any machine.
  Opt-in: NumPy arrays go to it only inside ``with rnnfast.backends.emulate_cuda():`` (the
  test suite runs its backend grid that way). It is slow; it exists to test the CUDA code.

A backend is the seam the orchestration is written against: ``xp`` (the array namespace,
NumPy or CuPy: the orchestration's array operations are the ones both have), ``empty``,
``scratch`` (a buffer reused between calls), ``gemm``, ``column_sums`` (the bias gradients),
``recurrent_forward`` (a list of the arguments of ``rnnfast._cpu.recurrent_forward``: one
direction's or, where ``together`` says so, both directions' of a bidirectional layer to run at
once) / ``recurrent_backward`` (the arguments of ``rnnfast._cpu.recurrent_backward``; these
three take the ``rounding`` of ``rnnfast._dtypes.matmul_rounding``, which reads the backend's
``cuda``), and ``index`` (lengths and resets as arrays the kernels read).
"""

from __future__ import annotations

import contextvars
import math
import threading

import numpy as np

from . import _cpu, _dtypes

_emulating = contextvars.ContextVar("rnnfast_emulate_cuda", default=False)
_cuda_path = contextvars.ContextVar("rnnfast_cuda_path", default="auto")
_cpu_gemm = contextvars.ContextVar("rnnfast_cpu_gemm", default=None)
CUDA_PATHS = ("auto", "standard", "persistent")


class _Setting:
    """A context in which the context variable ``variable`` is ``value``. (A class: twice as
    fast as a contextlib.contextmanager, and rnnfast.torch enters one per call.)"""

    __slots__ = ("_variable", "_value", "_token")

    def __init__(self, variable, value):
        self._variable, self._value = variable, value

    def __enter__(self):
        self._token = self._variable.set(self._value)

    def __exit__(self, *exc_info):
        self._variable.reset(self._token)


def emulate_cuda(enabled: bool = True):
    """Within this block (in this thread or task), NumPy arrays given to ``rnnfast.functional``
    (and so to the layers) run on the emulated CUDA backend instead of the CPU kernels."""
    return _Setting(_emulating, enabled)


def cuda_recurrence(path: str):
    """Within this block (in this thread or task), the CUDA backends run the recurrence on
    ``path``: "standard" (one fused kernel launch per step; every size and option),
    "persistent" (one cooperative launch for all steps, each block keeping its slice of W_hh
    in shared memory; no LSTM projection, and only where W_hh fits on the device's SMs: a
    call it cannot run raises ValueError saying why, of the CUDA module's type
    PersistentPathRefused) or "auto" (the default: the standard path, until the persistent one
    has been checked and timed on a GPU). Both compute the same values. No effect on the CPU
    backend."""
    if path not in CUDA_PATHS:
        raise ValueError(f"path must be one of {CUDA_PATHS}, not {path!r}")
    return _Setting(_cuda_path, path)


def cpu_gemm(gemm):
    """Within this block (in this thread or task), the CPU backend's large GEMMs (the input
    projection, the input and weight gradients) run on ``gemm(a, b, out, trans_a, trans_b,
    bias, accumulate)`` (the semantics of ``CpuBackend.gemm``) instead of rnnfast's own,
    except those that multiply in bfloat16 (``_cpu.gemm_bf16``'s: bfloat16 layers, float32
    under "medium"). ``None``: rnnfast's own. rnnfast.torch runs them on torch's (MKL, on the
    OpenMP threads that rnnfast's kernels share there)."""
    return _Setting(_cpu_gemm, gemm)


class CpuBackend:
    """NumPy arrays on the CPU kernels."""

    name = "cpu"
    cuda = False  # for rnnfast._dtypes.matmul_rounding
    xp = np
    array_type = np.ndarray
    type_name = "numpy.ndarray"

    def __init__(self):
        # Per-thread buffers for the intermediate arrays that die within one call: the input
        # projection zx (forward) and dzx, dzh (backward). Kept between calls, each at the
        # largest size it has served, so that repeated calls reuse their memory: fresh memory
        # costs its first write a page fault and the kernel's zeroing of the page (about
        # 0.12 ms per MB on the development machine, 8-15% of an LSTM layer's inference at
        # T=100, B=16-64). free_scratch() gives them back.
        self._scratch = threading.local()

    def scratch(self, slot, shape, dtype):
        """A C-contiguous array in the calling thread's buffer ``slot``, valid until the next
        request for the same slot on this thread."""
        count = math.prod(shape)
        buffers = self._scratch.__dict__.setdefault("buffers", {})
        buffer = buffers.get(slot)
        if buffer is None or buffer.dtype != dtype or buffer.size < count:
            buffer = buffers[slot] = np.empty(count, dtype)
        return buffer[:count].reshape(shape)

    def free_scratch(self):
        self._scratch.__dict__.pop("buffers", None)

    @staticmethod
    def empty(shape, dtype, aligned=False):
        """np.empty; ``aligned``: its data starts on a 64-byte boundary (NumPy guarantees 16),
        for the kernels' aligned non-temporal stores of the training workspace."""
        if not aligned:
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        raw = np.empty(nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        return raw[start:start + nbytes].view(dtype).reshape(shape)

    @staticmethod
    def contiguous(a):
        flags = a.flags  # (np.require alone takes 8x as long where there is nothing to do)
        if flags.c_contiguous and flags.aligned:
            return a
        return np.require(a, requirements=("C", "A"))

    @staticmethod
    def index(a, dtype):
        """lengths (int64) or resets (bool) as a C-contiguous, aligned array the kernels read
        (a copy only where the caller's is not)."""
        return None if a is None else np.require(a, dtype, ("C", "A"))

    @staticmethod
    def column_sums(a):
        """The bias gradients: the sums of the columns of ``a`` [T*B, G*H], accumulated in
        float64, rows in order, and rounded to a's dtype once: the values of CudaBackend's
        (NumPy's) sum, computed 4-10x faster by ``_cpu.column_sums``."""
        out = np.empty(a.shape[1], a.dtype)
        _cpu.column_sums(a, out)
        return out

    @staticmethod
    def gemm(a, b, out, *, trans_a=False, trans_b=False, bias=None, accumulate=False,
             rounding=None):
        """out = op(a) op(b) (+ bias) (out += ... with accumulate), op(x) = x.T where trans_x:
        on rnnfast's threads, not NumPy's BLAS, whose worker threads keep spinning after each
        call and would take the cores from the recurrence that follows. rounding: that of
        rnnfast._dtypes.matmul_rounding (bfloat16 products: _cpu.gemm_bf16; float16 ones: the
        float32 GEMM on operands rounded to float16, exact products), float32 sums."""
        if _dtypes.is_bfloat16(rounding):
            _cpu.gemm_bf16(a, b, out, trans_a=trans_a, trans_b=trans_b, bias=bias,
                           accumulate=accumulate)
            return
        if rounding is not None:
            a, b = _dtypes.round_operand(a, rounding), _dtypes.round_operand(b, rounding)
        (_cpu_gemm.get() or _own_gemm)(a, b, out, trans_a, trans_b, bias, accumulate)

    @staticmethod
    def together(cell, hidden, proj, dtype, rounding):
        """Whether both directions of a layer run their forward recurrences at once: never here
        (the CPU kernels take all cores for each)."""
        return False

    @staticmethod
    def recurrent_forward(calls, rounding=None):
        for args in calls:
            _cpu.recurrent_forward(*args, bf16_matmul=_dtypes.is_bfloat16(rounding))

    @staticmethod
    def recurrent_backward(*args, rounding=None):
        _cpu.recurrent_backward(*args, bf16_matmul=_dtypes.is_bfloat16(rounding))


def _own_gemm(a, b, out, trans_a, trans_b, bias, accumulate):
    _cpu.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, bias=bias, accumulate=accumulate)


class CudaBackend:
    """The CUDA kernels (``module``: rnnfast._cuda or rnnfast._cuda_emulated) over the array
    library ``xp`` (CuPy, or NumPy for the emulator); the large GEMMs are the library's."""

    def __init__(self, name, xp, module, type_name, stream):
        self.name, self.xp, self._module, self.type_name = name, xp, module, type_name
        self.array_type = xp.ndarray
        self.cuda = True  # for rnnfast._dtypes.matmul_rounding
        self._stream = stream  # () -> the stream handle the kernels are enqueued on

    @property
    def path_refused(self):
        """The type of the ValueError, saying why, that a call path="persistent" cannot run
        raises."""
        return self._module.PersistentPathRefused

    def scratch(self, slot, shape, dtype):
        return self.xp.empty(shape, dtype)  # CuPy's allocator (or NumPy) reuses the memory

    def free_scratch(self):
        pass

    def empty(self, shape, dtype, aligned=False):
        # CuPy's allocations are 256-byte aligned (torch's caching allocator's, 512-byte)
        return self.xp.empty(shape, dtype)

    def contiguous(self, a):
        return self.xp.ascontiguousarray(a)

    def index(self, a, dtype):
        return None if a is None else self.xp.ascontiguousarray(self.xp.asarray(a), dtype)

    def gemm(self, a, b, out, *, trans_a=False, trans_b=False, bias=None, accumulate=False,
             rounding=None):
        """As CpuBackend.gemm, in the array library's GEMM (cuBLAS for CuPy) in float32: a 16-bit
        rounding rounds the operands first (the products of two 16-bit values are exact in
        float32). TF32 is the tensor cores' on a GPU; the emulator (NumPy) rounds the operands
        to TF32 instead, so that its results have TF32's precision. On CuPy rnnfast does not
        switch TF32 on: CuPy's only switch is process-wide (CUPY_TF32=1, read at its first
        float32 matmul), so these GEMMs follow it whatever the precision setting."""
        if rounding is not None and (rounding is not _dtypes.TF32 or self.xp is np):
            a, b = _dtypes.round_operand(a, rounding), _dtypes.round_operand(b, rounding)
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if bias is not None:
            product += bias
        if accumulate:
            out += product
        else:
            out[...] = product

    def column_sums(self, a):
        """The sums of the columns of ``a`` [T*B, G*H] (the bias gradients), accumulated in
        float64: adding the rows one after the other in float32 has an error that grows with
        T*B (at T = 1000 it passed twice the reference's, which sums each step's rows first).
        Costs about 1.6x a float32 sum, a pass over dzx."""
        return a.sum(axis=0, dtype=self.xp.float64).astype(a.dtype)

    def _workspace(self, direction, cell, zx_or_dzx, w_hh, w_hr):
        """The kernels' workspace for a call: its size from B (zx or dzx [T, B, G*H]) and H, P
        (w_hh [G*H, H], or with the projection w_hr [P, H])."""
        hidden, proj = (w_hh.shape[1], 0) if w_hr is None else (w_hr.shape[1], w_hr.shape[0])
        size = self._module.workspace_size(direction, cell, zx_or_dzx.shape[1], hidden, proj)
        return self.xp.empty(size, zx_or_dzx.dtype) if size else None

    @staticmethod
    def _path():
        path = _cuda_path.get()
        return "standard" if path == "auto" else path

    @staticmethod
    def _rounding(rounding):
        """The kernels' name of a rounding of _dtypes.matmul_rounding (None kept): on either
        path the recurrent matmul multiplies operands so rounded on the tensor cores."""
        return None if rounding is None else "tf32" if rounding is _dtypes.TF32 else \
            np.dtype(rounding).name

    def together(self, cell, hidden, proj, dtype, rounding):
        """Whether both directions of a layer run their forward recurrences in one launch: on
        the persistent path, where both fit on the device at once (the module's
        persistent_refusal with directions=2)."""
        return self._path() == "persistent" and self._module.persistent_refusal(
            cell, hidden, proj, np.dtype(dtype).name, self._rounding(rounding),
            directions=2) == ""

    def recurrent_forward(self, calls, rounding=None):
        """One direction's recurrent_forward, or both directions' in one launch (the module's
        recurrent_forward_pair, where ``together`` said so)."""
        workspaces = tuple(self._workspace("forward", c.cell, c.zx, c.w_hh, c.w_hr)
                           for c in calls)
        options = {"stream": self._stream(), "rounding": self._rounding(rounding)}
        if len(calls) == 2:
            self._module.recurrent_forward_pair(*calls, workspaces=workspaces, **options)
        else:
            self._module.recurrent_forward(*calls[0], workspace=workspaces[0],
                                           path=self._path(), **options)

    def recurrent_backward(self, cell, w_hh, h0, c0, y, saved, dy, dh_n, dc_n, dzx, dzh, dh0,
                           dc0, lengths, resets, w_hr, dh_proj, rounding=None):
        self._module.recurrent_backward(
            cell, w_hh, h0, c0, y, saved, dy, dh_n, dc_n, dzx, dzh, dh0, dc0, lengths, resets,
            w_hr, dh_proj,
            workspace=self._workspace("backward", cell, dzx, w_hh, w_hr),
            stream=self._stream(), path=self._path(), rounding=self._rounding(rounding))


CPU = CpuBackend()
_loaded = {}


def _emulated():
    if "cuda-emulated" not in _loaded:
        from . import _cuda_emulated

        _loaded["cuda-emulated"] = CudaBackend("cuda-emulated", np, _cuda_emulated,
                                               "numpy.ndarray", lambda: 0)
    return _loaded["cuda-emulated"]


def cuda_backend(cupy):
    """The CUDA backend over the module ``cupy`` (CuPy), loaded on first use: an ImportError
    when this rnnfast was built without its CUDA module. (The tests register a stand-in for
    CuPy here: ``_loaded["cuda"]``, see tests/_fake_cupy.py.)"""
    if "cuda" not in _loaded:
        try:
            from . import _cuda
        except ImportError as error:
            raise ImportError("this rnnfast was built without its CUDA module (nvcc was not "
                              "found when it was built, or RNNFAST_ENABLE_CUDA=OFF); rebuild "
                              "it where nvcc is on the PATH") from error
        _loaded["cuda"] = CudaBackend("cuda", cupy, _cuda, "cupy.ndarray",
                                      lambda: cupy.cuda.get_current_stream().ptr)
    return _loaded["cuda"]


def is_cupy_array(x):
    """Whether ``x`` is a CuPy array (without importing CuPy for other arrays)."""
    if not type(x).__module__.startswith("cupy"):
        return False
    import cupy

    return isinstance(x, cupy.ndarray)


def for_array(x, name="x"):
    """The backend of an array: NumPy -> the CPU (or the emulator inside emulate_cuda()),
    CuPy -> CUDA; anything else is a TypeError naming the argument. (CuPy's type is checked
    before NumPy subclasses: the tests' stand-in for CuPy is one.)"""
    if type(x) is not np.ndarray and is_cupy_array(x):
        import cupy

        return cuda_backend(cupy)
    if isinstance(x, np.ndarray):
        return _emulated() if _emulating.get() else CPU
    raise TypeError(f"{name} must be a numpy.ndarray (CPU) or a cupy.ndarray (CUDA), not "
                    f"{type(x).__name__}")
