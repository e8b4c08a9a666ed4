"""The dtypes the layers take, and how each one computes.

- float32, float64: computed in that dtype throughout.
- bfloat16 (``ml_dtypes.bfloat16``, the NumPy dtype JAX uses; optional: ``pip install
  rnnfast[bf16]``) and float16 (``numpy.float16``): stored in the 16-bit type, computed with
  products of operands rounded to it, float32 sums and float32 gate math. The large GEMMs
  (input projection, input and weight gradients) multiply operands rounded to the 16-bit type
  (``matmul_rounding``). The recurrence runs the float32 kernels on the weights and states
  widened to float32, so that h, the LSTM's cell state c and the gates stay float32 from step
  to step; its W_hh is the 16-bit one widened (``matmul_operand``), and h_{t-1} enters its
  matmul in float32, except for bfloat16 on the CPU instruction sets "amx" and "avx512_bf16",
  whose AMX tiles and vdpbf16ps round it to bfloat16, and on the CUDA backends (either path
  of ``backends.cuda_recurrence``), which multiply on the tensor cores with h_{t-1} (forward)
  and dzh (backward) rounded to the 16-bit type (and, under TF32, W_hh rounded to TF32 too).
  y, h_n, c_n and the gradients of x, h0 and c0 are returned rounded to the 16-bit type, the
  weight and bias gradients in float32 (as oneDNN returns them). The bfloat16 cells'
  step takes bfloat16 arrays and weights and multiplies them with vdpbf16ps on "amx" and
  "avx512_bf16" (below those, widened to float32), float32 sums and gate math, the new state
  rounded to bfloat16 (``_cpu.cell_step`` on weights packed with ``bfloat16=True``); float16
  cells widen x and the state to float32 around the float32 step.

  Per backend: on the CPU, bfloat16's GEMMs are ``_cpu.gemm_bf16`` (AMX or AVX512-BF16 where
  the CPU has them) and float16's the float32 ``_cpu.gemm`` on operands rounded to float16 (a
  product of two 16-bit values is exact in float32, so rounding the operands and multiplying
  in float32 gives the 16-bit products with float32 sums); on the CUDA backends both are
  float32 GEMMs on rounded operands. CuPy has no bfloat16 dtype: bfloat16 values reach the
  CUDA backend in float32 arrays inside ``bfloat16_in_float32()`` (rnnfast.torch's bfloat16
  CUDA tensors), computed as bfloat16 arrays are, and rounded to bfloat16 (in float32) wherever
  a bfloat16 array would be; CuPy's float16 is numpy.float16.
- float32 under ``set_float32_matmul_precision``: "highest" (the default): float32 products.
  "medium" on the CPU: the matmuls' operands rounded to bfloat16 as above, the recurrence's
  included (inputs and results stay float32). "high" and "medium" on CUDA: TF32 for the large
  GEMMs and the recurrence (on the tensor cores; see ``matmul_rounding``): the emulated backend
  rounds the GEMMs' operands to TF32; on CuPy, whose only TF32 switch is process-wide, rnnfast
  does not set it: there the large GEMMs' TF32 follows ``CUPY_TF32=1`` in the environment,
  whatever this setting says.
- float16's range ends at 65504: a gradient beyond it, rounded to float16 as the weight
  gradients' GEMMs round their operands, becomes inf, and the weight gradient inf or NaN
  (as with cuDNN's float16), where float32 would stay finite.
"""

import contextlib
import contextvars
import functools
import importlib.util
import sys

import numpy as np

from . import _cpu


@functools.cache
def bfloat16():
    """ml_dtypes' bfloat16 as a NumPy dtype (None without ml_dtypes), imported at first use:
    importing ml_dtypes takes about a second (it registers its ufunc loops with NumPy), which
    ``import rnnfast`` does not pay for float32 work. ``BFLOAT16`` (a module attribute) is the
    same."""
    try:
        import ml_dtypes
    except ImportError:  # bfloat16 is optional
        return None
    return np.dtype(ml_dtypes.bfloat16)


def __getattr__(name):
    if name == "BFLOAT16":
        return bfloat16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FLOAT16, FLOAT32, FLOAT64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
DTYPE_NAMES = "float32, float64, float16" + (
    " or bfloat16" if importlib.util.find_spec("ml_dtypes") is not None else
    " (bfloat16 needs ml_dtypes: pip install rnnfast[bf16])")
# The rounding of float32 GEMM operands to TensorFloat-32 (8 exponent bits, 10 mantissa bits):
# what CUDA's tensor cores multiply under "high". Not a NumPy dtype: see round_operand.
TF32 = "tf32"


def resolve(dtype):
    """``np.dtype(dtype)``, the name "bfloat16" included (which NumPy knows once ml_dtypes is
    imported)."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        bfloat16()
    return np.dtype(dtype)


def is_bfloat16(dtype):
    """Whether ``dtype`` is ml_dtypes' bfloat16, without importing ml_dtypes (an array of that
    dtype exists only once it is imported). (Never ``dtype == BFLOAT16`` directly: without
    ml_dtypes BFLOAT16 is None, and NumPy takes None for float64.)"""
    return "ml_dtypes" in sys.modules and bfloat16() is not None and dtype == bfloat16()


def is_supported(dtype):
    """Whether the layers compute in ``dtype`` (the DTYPE_NAMES)."""
    return dtype in (FLOAT32, FLOAT64, FLOAT16) or is_bfloat16(dtype)


def is_16bit(dtype):
    """Whether ``dtype`` is a 16-bit storage type (bfloat16 or float16), computed in float32."""
    return dtype == FLOAT16 or is_bfloat16(dtype)


_float32_holds = contextvars.ContextVar("rnnfast_float32_holds", default=None)


@contextlib.contextmanager
def bfloat16_in_float32():
    """Within this block (in this thread or task), float32 arrays hold bfloat16 values and are
    computed as bfloat16 arrays: their matmuls round their operands to bfloat16 and what a
    bfloat16 array would store (``to_storage``) is rounded to bfloat16, in float32 (requires
    ml_dtypes). For array libraries without a bfloat16 dtype: CuPy (rnnfast.torch's bfloat16
    CUDA tensors, handed over as float32 copies)."""
    token = _float32_holds.set(bfloat16())
    try:
        yield
    finally:
        _float32_holds.reset(token)


def storage(dtype):
    """The type whose values arrays of ``dtype`` hold: ``dtype`` itself, but bfloat16 for
    float32 inside ``bfloat16_in_float32()``."""
    held = _float32_holds.get() if dtype == FLOAT32 else None
    return dtype if held is None else held


_PRECISIONS = ("highest", "high", "medium")
_matmul_precision = "highest"


def set_float32_matmul_precision(precision):
    """How the layers' large GEMMs multiply float32 arrays (PyTorch's names): "highest" (the
    default) in float32; "high" in TF32 on CUDA (the emulated CUDA backend rounds the operands
    to TF32; on CuPy TF32 follows CuPy's process-wide CUPY_TF32 instead, see the module's
    docstring), float32 on the CPU, which has no TF32-like middle ground; "medium" in bfloat16
    with float32 sums on the CPU (the recurrence's matmul too), TF32 on CUDA as "high". Inputs
    and results stay float32; h, c and the gates stay float32."""
    global _matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, not {precision!r}")
    _matmul_precision = precision


def get_float32_matmul_precision():
    """The setting of set_float32_matmul_precision."""
    return _matmul_precision


def compute_dtype(dtype):
    """The dtype the recurrence computes and the weight gradients are returned in."""
    return FLOAT32 if is_16bit(dtype) else dtype


def matmul_rounding(dtype, cuda):
    """What the matmuls of a call on arrays of ``dtype`` round their operands to before
    multiplying them with float32 sums: BFLOAT16 or FLOAT16 (the storage type; also bfloat16
    for float32 under "medium" on the CPU), TF32 (float32 under "high" or "medium" on a CUDA
    backend, ``cuda``) or None (exact products in the compute
    dtype). Without ml_dtypes, which the rounding to bfloat16 needs, "medium" on the CPU is
    "highest"."""
    stored = storage(dtype)
    if is_16bit(stored):
        return stored
    if dtype != FLOAT32 or _matmul_precision == "highest":
        return None
    if cuda:
        return TF32
    return bfloat16() if _matmul_precision == "medium" else None


def round_operand(array, rounding):
    """A GEMM operand (float32, or 16-bit storage) as float32 values rounded to ``rounding``
    (a value of matmul_rounding, not None), to nearest even; in the array's own library (NumPy
    or CuPy). TF32, and bfloat16 on arrays other than NumPy's own (CuPy has no bfloat16 dtype),
    are rounded by their bits (_round_mantissa); the others by the library's cast (ml_dtypes'
    for bfloat16, which rounds float64 values once too, not through float32: dropout's scale)."""
    if rounding is TF32:
        return _round_mantissa(array, 10)
    if is_bfloat16(rounding) and type(array) is not np.ndarray:
        return _round_mantissa(array, 7)
    return array.astype(rounding).astype(FLOAT32)


def _round_mantissa(array, kept):
    """``array`` as float32 with ``kept`` of its 23 mantissa bits (10: TF32, 7: bfloat16),
    rounded to nearest even in place of the others; inf and NaN kept as they are (the carry
    would overflow their exponent)."""
    dropped = 23 - kept
    bits = array.astype(FLOAT32).view(np.uint32)
    half = np.uint32((1 << (dropped - 1)) - 1)
    rounded = (bits + half + ((bits >> np.uint32(dropped)) & np.uint32(1))) \
        & np.uint32(0xFFFFFFFF << dropped & 0xFFFFFFFF)
    finite = (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    return (rounded * finite + bits * ~finite).view(FLOAT32)


def to_compute(array):
    """``array`` in the dtype its computation runs in (a float32 copy of a 16-bit array; None
    kept)."""
    if array is None or not is_16bit(array.dtype):
        return array
    return array.astype(FLOAT32)


def matmul_operand(array, rounding):
    """A weight of the recurrent matmul as the kernels multiply it: in float32, its values
    rounded to ``rounding`` where that is a 16-bit type (so that every instruction set
    multiplies the same weights, the ones without vdpbf16ps in float32). Under TF32 it stays
    float32: the CUDA kernels round it to TF32 as they load it."""
    if rounding is None or rounding is TF32 or is_16bit(array.dtype):
        return to_compute(array)
    return round_operand(array, rounding)


def to_storage(array, dtype):
    """``array`` (computed in compute_dtype(dtype)) as ``dtype``, rounded to nearest; None
    kept. Inside ``bfloat16_in_float32()``, float32 rounded to bfloat16 values (float32 ones)."""
    if array is None:
        return None
    stored = storage(dtype)
    if stored is not dtype:
        return round_operand(array, stored)
    if array.dtype == dtype:
        return array
    if type(array) is np.ndarray and array.dtype == FLOAT32 and is_16bit(dtype):
        # astype's values bit for bit, several times as fast (NumPy's and ml_dtypes' casts run
        # on one core)
        out = np.empty(array.shape, dtype)
        _cpu.round_to(np.ascontiguousarray(array), out)
        return out
    return array.astype(dtype)
