"""rnnfast: fused RNN, LSTM and GRU kernels, forward and backpropagation through time.

Layers shaped like PyTorch's (``rnnfast.RNN``, ``LSTM``, ``GRU``) over NumPy arrays, a
functional API (``rnnfast.functional``) and the NumPy reference that every kernel is tested
against (``rnnfast.reference``).
"""

from importlib.metadata import PackageNotFoundError, version as _version

from . import _cpu, functional, reference
from .layers import GRU, LSTM, RNN

try:
    __version__ = _version("rnnfast")
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["RNN", "LSTM", "GRU", "functional", "reference", "cpu_info", "cuda_info",
           "__version__"]


def cpu_info():
    """The CPU kernels' instruction set in use, the ones available on this machine, and the
    CPU's relevant features, as a dict: {"isa": str, "available": [str], "cpu_features": [str]}.

    This version compiles one portable x86-64 target ("baseline").
    """
    return {"isa": "baseline", "available": ["baseline"], "cpu_features": _cpu.cpu_features()}


def cuda_info():
    """Whether the CUDA module was built, and what it sees: a dict with "built" (bool) and,
    when built, "compiled_architectures", "runtime_version", "driver_version", "devices" and
    "error" (why no device is usable, or None)."""
    try:
        from . import _cuda
    except ImportError:
        return {"built": False}
    return {"built": True, "compiled_architectures": _cuda.compiled_architectures,
            **_cuda.device_info()}
