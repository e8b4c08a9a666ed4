"""Parameters of the layers and cells: PyTorch's initialisation, and loading a state_dict."""

import numpy as np

from ._dtypes import DTYPES


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def init_params(shapes, hidden_size, dtype, rng):
    """PyTorch's initialisation: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)], drawn from
    the numpy Generator ``rng`` in the order of ``shapes`` (a dict name -> shape)."""
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
        if not (np.issubdtype(value.dtype, np.floating) or value.dtype in DTYPES):
            raise TypeError(f"state_dict[{name!r}] has dtype {value.dtype}, expected floats")
        loaded[name] = np.array(value, dtype=dtype)
    return loaded
