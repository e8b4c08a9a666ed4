"""Devices of the front ends (layers and cells): where their parameters live, moving arrays
between the host and a GPU, and the check that a call's arrays are on the parameters' device.

A device is "cpu" (NumPy arrays) or "cuda:N" (CuPy arrays on GPU N); "cuda" names CuPy's
current device, resolved to "cuda:N" when a layer is placed there. The orchestration
(``rnnfast.functional``) needs none of this: it takes the backend of the arrays it is given.
The front ends hold parameters, so they must say where: PyTorch's ``device=`` and ``.to()``.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np

from . import backends

_CUDA = re.compile(r"cuda(?::(\d+))?")


def cupy():
    """The cupy module, after checking that rnnfast's CUDA backend can run on it: an ImportError
    that says what to install or rebuild otherwise."""
    try:
        import cupy
    except ImportError as error:
        raise ImportError("device='cuda' needs CuPy: pip install 'rnnfast[cuda12]' (CUDA 12) "
                          "or 'rnnfast[cuda13]' (CUDA 13)") from error
    backends.cuda_backend(cupy)  # ImportError when rnnfast was built without _cuda
    return cupy


def resolve(device) -> str:
    """``device`` ("cpu", "cuda", "cuda:N") as "cpu" or "cuda:N": a ValueError for another
    value, an ImportError without CuPy or rnnfast's CUDA module, a RuntimeError for a GPU that
    CuPy does not see."""
    if device == "cpu":
        return "cpu"
    match = _CUDA.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    cp = cupy()
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except RuntimeError as error:  # CuPy's CUDARuntimeError: no driver, no device
        raise RuntimeError(f"device {device!r}: CuPy finds no usable GPU ({error})") from error
    if count < 1:
        raise RuntimeError(f"device {device!r}: CuPy finds no GPU")
    if match.group(1) is None:
        return f"cuda:{cp.cuda.Device().id}"  # CuPy's current device, as torch's "cuda"
    index = int(match.group(1))
    if index >= count:
        raise RuntimeError(f"device {device!r}: CuPy sees {count} GPU(s), 0 to {count - 1}")
    return f"cuda:{index}"


def of(array) -> str:
    """The device of an array: "cpu" for NumPy arrays and anything that is not a CuPy array
    (lists, scalars: host data), "cuda:N" for CuPy arrays. Checks CuPy's type before NumPy's as
    ``backends.for_array`` does (the tests' stand-in for CuPy is a NumPy subclass)."""
    if backends.is_cupy_array(array):
        return f"cuda:{array.device.id}"
    return "cpu"


def on(device: str):
    """A context in which CuPy works on ``device`` (a resolved one): for "cuda:N", GPU N as
    CuPy's current device, so that the arrays a call makes and its kernels are on the
    parameters' GPU whichever is current outside; for "cpu", nothing."""
    if device == "cpu":
        return contextlib.nullcontext()
    return cupy().cuda.Device(int(device[5:]))


def move(array, device: str):
    """``array`` (a NumPy or CuPy array, or None) on ``device`` (a resolved one): itself when it
    is there, else a copy."""
    if array is None or of(array) == device:
        return array
    if device == "cpu":
        return array.get()
    cp = cupy()
    with cp.cuda.Device(int(device[5:])):
        return cp.array(array)  # always a copy, on this GPU


def host(array):
    """``array`` as host data for NumPy: a CuPy array copied to a NumPy array, anything else
    as it is (``np.asarray`` cannot take CuPy arrays)."""
    return array.get() if backends.is_cupy_array(array) else array


def check_on(device: str, value, name: str, owner: str):
    """A TypeError (host against GPU) or ValueError (another GPU) naming the argument ``name``
    when ``value`` is not on ``device``, the device of the parameters of ``owner`` ("layer",
    "cell"), and saying how to move either: before any kernel runs (functional would refuse the
    mix too, but could not name the layer's device)."""
    if type(value) is np.ndarray and device == "cpu":  # the usual call, at its cost alone
        return
    where = of(value)
    if where == device:
        return
    if where == "cpu":
        kind = type(value).__module__.split(".")[0] + "." + type(value).__name__
        raise TypeError(f"{name} is a {kind} (CPU) but the {owner}'s parameters are on "
                        f"{device}: pass cupy.asarray({name}) or call {owner}.to('cpu')")
    if device == "cpu":
        raise TypeError(f"{name} is a cupy.ndarray on {where} but the {owner}'s parameters are "
                        f"on the CPU: pass {name}.get() or call {owner}.to('{where}')")
    raise ValueError(f"{name} is on {where} but the {owner}'s parameters are on {device}: "
                     f"pass cupy.asarray({name}) inside `with cupy.cuda.Device("
                     f"{device[5:]}):` or call {owner}.to('{where}')")


def check_states(device: str, owner: str, name: str, states):
    """check_on for states in hx's structure: None, an array, or a tuple or list (an LSTM's
    (h, c)) checked member by member as name[i], None members skipped (one level only: a member
    that is a list is host data)."""
    if not isinstance(states, (tuple, list)):
        if states is not None:
            check_on(device, states, name, owner)
        return
    for i, value in enumerate(states):
        if value is not None and not (type(value) is np.ndarray and device == "cpu"):
            check_on(device, value, f"{name}[{i}]", owner)


def xp(device: str):
    """The array library of a device: NumPy or CuPy."""
    return np if device == "cpu" else cupy()
