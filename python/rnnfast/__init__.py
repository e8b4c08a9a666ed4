"""rnnfast: fused RNN, LSTM and GRU kernels, forward and backpropagation through time.

Layers shaped like PyTorch's (``rnnfast.RNN``, ``LSTM``, ``GRU``) over NumPy arrays (or CuPy
arrays: ``device="cuda"``), single-step cells for streaming inference (``rnnfast.RNNCell``,
``LSTMCell``, ``GRUCell``), a functional API (``rnnfast.functional``), training helpers
(``rnnfast.training``: gradient clipping, SGD and Adam, truncated BPTT) and the NumPy reference
that every kernel is tested against (``rnnfast.reference``).
"""

import os as _os
import re as _re
import warnings as _warnings
from importlib.metadata import PackageNotFoundError, version as _version

from . import _cpu, backends, cell_registry, functional, reference, training
from ._dtypes import get_float32_matmul_precision, set_float32_matmul_precision
from .cells import GRUCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN

try:
    __version__ = _version("rnnfast")
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "functional", "reference",
           "backends", "cell_registry", "training", "cpu_info", "cuda_info", "set_num_threads",
           "get_num_threads", "set_float32_matmul_precision", "get_float32_matmul_precision",
           "__version__"]

# RNNFAST_ISA forces an instruction set (e.g. a lower one, to compare numerics or speed).
if _os.environ.get("RNNFAST_ISA"):
    try:
        _cpu.set_isa(_os.environ["RNNFAST_ISA"])
    except ValueError as _error:
        _warnings.warn(f"RNNFAST_ISA ignored: {_error}; using {_cpu.active_isa()}",
                       RuntimeWarning, stacklevel=2)

# RNNFAST_NUM_THREADS is read by the thread pool (thread_pool.cpp), which keeps its default for a
# value that is not an integer in [1, 4096] (strtol's syntax: optional blanks and sign, digits).
_threads_env = _os.environ.get("RNNFAST_NUM_THREADS")
if _threads_env and not (_re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", _threads_env)
                         and 1 <= int(_threads_env) <= 4096):
    _warnings.warn(f"RNNFAST_NUM_THREADS={_threads_env!r} ignored: not an integer in [1, 4096]; "
                   f"using {_cpu.num_threads()} threads", RuntimeWarning, stacklevel=2)


def cpu_info() -> dict:
    """The CPU kernels' instruction sets, as a dict:

    - "isa": the one in use ("baseline", "avx2", "avx512", "avx512_bf16" or "amx"; the last two
      differ from "avx512" in the bfloat16 products only): the best of "available", or the one
      the environment variable RNNFAST_ISA names (read at import);
    - "available": compiled into this build and supported by this CPU, lowest first;
    - "compiled": compiled into this build;
    - "cpu_features": the CPU's instruction-set extensions that matter here;
    - "num_threads": the threads the CPU kernels use;
    - "caches": the data caches read at run time, in bytes ("l1d", "l2" per core, "l3" the
      instance a core shares with its neighbours), as Linux describes them (sysfs), else as the
      C library reads them from the CPU; 0 where unknown; the environment variable
      RNNFAST_L2_CACHE_BYTES replaces "l2";
    - "tuning": the kernels' parameters derived from them, which change speed only, never a
      result: "row_split_panel_bytes", the largest packed W_hh for which the recurrence splits
      a step's batch rows (of 7 to 12) between the threads instead of W_hh's columns;
      "gemm_block_bytes", the largest block of A's rows that the GEMM multiplies at a time.
    """
    tuning = _cpu.cpu_tuning()
    return {"isa": _cpu.active_isa(), "available": _cpu.available_isas(),
            "compiled": _cpu.compiled_isas(), "cpu_features": _cpu.cpu_features(),
            "num_threads": _cpu.num_threads(),
            "caches": {level: tuning[f"{level}_bytes"] for level in ("l1d", "l2", "l3")},
            "tuning": {name: tuning[name]
                       for name in ("row_split_panel_bytes", "gemm_block_bytes")}}


def set_num_threads(threads: int) -> None:
    """Sets the number of threads of the CPU kernels (>= 1). The default is the number of cores
    this process may run on, or the environment variable RNNFAST_NUM_THREADS. It covers the
    layers' large GEMMs too (rnnfast's own, not NumPy's BLAS). Results are bitwise identical
    for any thread count."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    _cpu.set_num_threads(threads)


def get_num_threads() -> int:
    """The number of threads of the CPU kernels."""
    return _cpu.num_threads()


def cuda_info() -> dict:
    """Whether the CUDA module was built, and what it sees: a dict with "built" (bool), "cupy"
    (CuPy's version, None when it is not installed: the layers and cells need it for
    ``device="cuda"``, ``pip install "rnnfast[cuda12]"`` or ``[cuda13]``) and, when built,
    "compiled_architectures", "runtime_version", "driver_version", "devices" and "error" (why
    no device is usable, or None)."""
    try:
        import cupy

        cupy_version = cupy.__version__
    except ImportError:
        cupy_version = None
    try:
        from . import _cuda
    except ImportError:
        return {"built": False, "cupy": cupy_version}
    return {"built": True, "cupy": cupy_version,
            "compiled_architectures": _cuda.compiled_architectures, **_cuda.device_info()}
