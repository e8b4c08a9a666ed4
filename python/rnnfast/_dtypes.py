"""The dtypes the CPU layers take, and how each one computes.

- float32, float64: computed in that dtype throughout.
- bfloat16 (``ml_dtypes.bfloat16``, the NumPy dtype JAX uses; optional: ``pip install
  rnnfast[bf16]``): stored in bfloat16, computed with bfloat16 products and float32 sums and gate
  math. The large GEMMs (input projection, input and weight gradients) multiply in bfloat16
  (``_cpu.gemm_bf16``: AMX or AVX512-BF16 where the CPU has them). The recurrence runs the
  float32 kernels on the weights and states widened to float32, so that h, the LSTM's cell
  state c and the gates stay float32 from step to step; its matmul (h_{t-1} W_hh^T, and dzh_t
  W_hh backward) multiplies bfloat16-rounded operands on AMX tiles (instruction set "amx") or
  with vdpbf16ps ("avx512_bf16", e.g. AMD Zen 4), float32 ones on the others. y, h_n, c_n and
  the gradients of x, h0 and c0 are returned rounded to bfloat16, the weight and bias gradients
  in float32 (as oneDNN returns them).
- float32 with ``set_float32_matmul_precision("medium")``: float32 in and out, the matmuls'
  operands rounded to bfloat16 as above (PyTorch's name for the same trade).
"""

import numpy as np

try:
    import ml_dtypes
except ImportError:  # bfloat16 is optional
    BFLOAT16 = None
else:
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

FLOAT32, FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = (FLOAT32, FLOAT64) + ((BFLOAT16,) if BFLOAT16 is not None else ())
DTYPE_NAMES = "float32, float64" + (" or bfloat16" if BFLOAT16 is not None else
                                    " (bfloat16 needs ml_dtypes: pip install rnnfast[bf16])")



def is_bfloat16(dtype):
    """Whether ``dtype`` is ml_dtypes' bfloat16. (Never ``dtype == BFLOAT16`` directly: without
    ml_dtypes BFLOAT16 is None, and NumPy takes None for float64.)"""
    return BFLOAT16 is not None and dtype == BFLOAT16


_PRECISIONS = ("highest", "high", "medium")
_matmul_precision = "highest"


def set_float32_matmul_precision(precision):
    """How the layers' large GEMMs multiply float32 arrays: "highest" (the default) and "high" in
    float32; "medium" in bfloat16 with float32 sums (inputs and results stay float32; the
    recurrence stays float32). PyTorch's names; rnnfast has no TF32-like middle ground on the
    CPU, so "high" is "highest"."""
    global _matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, not {precision!r}")
    _matmul_precision = precision


def get_float32_matmul_precision():
    """The setting of set_float32_matmul_precision."""
    return _matmul_precision


def compute_dtype(dtype):
    """The dtype the recurrence computes and the weight gradients are returned in."""
    return FLOAT32 if is_bfloat16(dtype) else dtype


def bf16_matmul(dtype):
    """Whether arrays of ``dtype`` multiply in bfloat16: bfloat16 ones, and float32 ones under
    set_float32_matmul_precision("medium")."""
    return is_bfloat16(dtype) or (dtype == FLOAT32 and _matmul_precision == "medium")


def to_compute(array):
    """``array`` in the dtype its computation runs in (a float32 copy of bfloat16; None kept)."""
    if array is None or not is_bfloat16(array.dtype):
        return array
    return array.astype(FLOAT32)


def matmul_operand(array, dtype):
    """A weight of the recurrent matmul as the kernels multiply it: rounded to bfloat16 values
    (in float32) where bf16_matmul(dtype), so that every instruction set multiplies the same
    weights (the ones without vdpbf16ps in float32)."""
    if not bf16_matmul(dtype) or is_bfloat16(array.dtype):
        return to_compute(array)
    return array.astype(BFLOAT16).astype(FLOAT32)


def to_storage(array, dtype):
    """``array`` (computed in compute_dtype(dtype)) as ``dtype``, rounded to nearest; None
    kept."""
    return array if array is None or array.dtype == dtype else array.astype(dtype)
