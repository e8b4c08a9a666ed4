"""Parameters of the layers and cells: PyTorch's initialisation, and loading a state_dict."""

import math
import os

import numpy as np

from ._dtypes import is_supported


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def check_memory(owner, shapes, dtype):
    """Raises MemoryError, naming ``owner`` (e.g. "LSTM(1099511627776, 8)") and the size, when
    arrays of these ``shapes`` (a dict name -> shape) of ``dtype`` would take more than this
    machine's memory: before anything is allocated, instead of NumPy trying."""
    nbytes = sum(math.prod(shape) for shape in shapes.values()) * np.dtype(dtype).itemsize
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not known on this system
        return
    if nbytes > memory:
        raise MemoryError(f"{owner}: its parameters would take {nbytes / 2**30:,.1f} GiB, more "
                          f"than this machine's memory ({memory / 2**30:,.1f} GiB)")


def init_params(owner, shapes, hidden_size, dtype, rng):
    """PyTorch's initialisation: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)], drawn from
    the numpy Generator ``rng`` in the order of ``shapes`` (a dict name -> shape), after
    check_memory(owner, ...)."""
    check_memory(owner, shapes, dtype)
    bound = 1.0 / np.sqrt(hidden_size)
    return {name: rng.uniform(-bound, bound, shape).astype(dtype)
            for name, shape in shapes.items()}


def load_params(owner, expected, state_dict, dtype):
    """The parameters of a state_dict (values: anything np.asarray accepts, e.g. NumPy arrays or
    CPU tensors) as new arrays of ``dtype``, after checking them against ``expected`` (a dict
    name -> shape): every name present and no other, shapes equal, floating-point values.
    ``owner`` names the layer or cell in errors."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(f"state_dict does not match {owner}: missing {missing}, "
                       f"unexpected {unexpected}")
    loaded = {}
    for name, shape in expected.items():
        value = np.asarray(state_dict[name])
        if value.shape != shape:
            raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {shape}")
        if not (np.issubdtype(value.dtype, np.floating) or is_supported(value.dtype)):
            raise TypeError(f"state_dict[{name!r}] has dtype {value.dtype}, expected floats")
        loaded[name] = np.array(value, dtype=dtype)
    return loaded
