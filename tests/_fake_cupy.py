"""A stand-in for CuPy, to test the device logic of the layers and cells on machines without a
GPU (CI). Test-only; ``install(monkeypatch)`` (the ``fake_cupy`` fixture of conftest.py) puts it
in place for one test.

What it does:

- ``sys.modules["cupy"]`` becomes a module whose ``ndarray`` (named ``cupy.ndarray``) is a
  NumPy ndarray subclass: the "device" array. Its functions are NumPy's, returning that
  subclass; ``asarray`` and ``array`` copy host data to the "device", ``asnumpy`` and
  ``ndarray.get`` copy back; ``ndarray.device.id`` is 0; ``cuda.Device``,
  ``cuda.runtime.getDeviceCount`` (one GPU) and ``cuda.get_current_stream`` answer as CuPy's
  do on a one-GPU machine. ``cuda.ExternalStream`` and ``cuda.using_allocator`` are contexts
  that set what ``get_current_stream`` and ``cuda.get_allocator`` return (the allocator is not
  used: the arrays are NumPy's); ``cuda.PythonFunctionAllocator(malloc, free)`` calls them as
  CuPy's does: ``malloc(size, device_id)`` for a pointer, ``free(pointer, device_id)`` when the
  memory object its ``malloc(size)`` returns goes. ``cuda.Event`` and ``cuda.get_elapsed_time``
  time on the host's clock (the emulated kernels run synchronously).
- Like CuPy, it refuses to compute on a host array with a device one: a NumPy function or
  operator (ufuncs, ``np.where``, ``np.concatenate``, ``@``, ...) given a plain NumPy array of
  one or more dimensions alongside a device array raises TypeError, and so do the module's
  functions given host arrays (but ``asarray``). A forgotten copy to the device fails here as
  on a GPU.
- ``rnnfast.backends`` gets a CUDA backend over this module whose kernels are
  ``rnnfast._cuda_emulated``: the CUDA sources built for the host (ARCHITECTURE.md, The CUDA
  emulator). ``for_array`` sends the device arrays there (it checks CuPy's type before NumPy
  subclasses).

What a passing test shows: the front ends place parameters on the device and back bit for bit
(``device=``, ``.to``, ``state_dict``), run a whole call there with every array of the
orchestration on the device, get the results of the CPU within the tolerance rule (through the
CUDA kernels, emulated), and refuse arrays on the wrong device with their own errors.

What it does not show:

- anything about a real GPU: memory, streams and asynchrony (the emulated kernels run on the
  host, synchronously), cuBLAS (the GEMMs are NumPy's), speed;
- that CuPy has every function used with NumPy's spelling and semantics: this module has all of
  NumPy's, CuPy has most (a function CuPy lacks passes here);
- that the CPU backend or the CPU kernels refuse device arrays: a stand-in array is a NumPy
  array to them (``np.asarray`` and pybind11 take it), where CuPy's arrays are refused; the
  tests see the front ends' own checks, made before either;
- more than one GPU (``cuda:1`` does not exist here).
"""

import contextlib
import sys
import time
import types

import numpy as np

from rnnfast import _cuda_emulated, backends


class ndarray(np.ndarray):
    """A "device" array: NumPy's, refusing to be computed with plain NumPy arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(ufunc.__name__, inputs + (out or ()))
        if out is not None:
            kwargs["out"] = tuple(_host_view(a) for a in out)
        result = getattr(ufunc, method)(*map(_host_view, inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host(func.__name__, args, kwargs.values())
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    @property
    def device(self):
        return _Device(0)

    def get(self):
        """A NumPy copy on the host, as cupy.ndarray.get."""
        return np.array(self.view(np.ndarray))


ndarray.__module__ = "cupy"  # what backends.for_array and error messages read


def _is_host_array(a):
    return isinstance(a, np.ndarray) and not isinstance(a, ndarray) and a.ndim > 0


def _flatten(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _flatten(v)
        elif isinstance(v, dict):
            yield from _flatten(v.values())
        else:
            yield v


def _refuse_host(what, *groups):
    for group in groups:
        for a in _flatten(group):
            if _is_host_array(a):
                raise TypeError(f"fake cupy: {what} was given a numpy.ndarray: CuPy refuses "
                                "host arrays (copy it with cupy.asarray)")


def _host_view(a):
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


def _unwrap(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return _host_view(value)


def _wrap(result):
    if isinstance(result, np.ndarray) and not isinstance(result, ndarray):
        return result.view(ndarray)
    if isinstance(result, tuple):
        return tuple(map(_wrap, result))
    return result


class _Device:
    """cupy.cuda.Device: one GPU, 0 (a context manager, as CuPy's)."""

    def __init__(self, index=0):
        if index != 0:
            raise RuntimeError(f"fake cupy: no device {index} (one GPU, 0)")
        self.id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class _Streams:
    """CuPy's current stream (a stack: ExternalStream's context) and allocator
    (using_allocator's)."""

    def __init__(self):
        self.streams, self.allocator = [types.SimpleNamespace(ptr=0)], None

    def external_stream(self, ptr, device_id=-1):
        streams = self.streams

        class ExternalStream:
            def __enter__(self):
                streams.append(types.SimpleNamespace(ptr=ptr, device_id=device_id))
                return streams[-1]

            def __exit__(self, *exc):
                streams.pop()
                return False

        return ExternalStream()

    @contextlib.contextmanager
    def using_allocator(self, allocator=None):
        before, self.allocator = self.allocator, allocator
        try:
            yield
        finally:
            self.allocator = before


class _PythonFunctionMemory:
    """The memory of a PythonFunctionAllocator's malloc: freed when it goes, as CuPy's."""

    def __init__(self, size, malloc, free):
        self.ptr, self.size, self._free = malloc(size, 0), size, free

    def __del__(self):
        self._free(self.ptr, 0)


class _PythonFunctionAllocator:
    def __init__(self, malloc_func, free_func):
        self._malloc, self._free = malloc_func, free_func

    def malloc(self, size):
        return _PythonFunctionMemory(size, self._malloc, self._free)


class _Event:
    """cupy.cuda.Event: the host's clock when recorded."""

    def record(self):
        self.time = time.perf_counter()


def _elapsed_ms(start, end):
    return (end.time - start.time) * 1e3


def asarray(a, dtype=None):
    """A device array: ``a`` itself when it is one of ``dtype``, else a copy."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return np.array(a, dtype=dtype).view(ndarray)


def array(a, dtype=None):
    """A new device array: a copy of ``a`` (host or device)."""
    return np.array(_host_view(a), dtype=dtype).view(ndarray)


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def _module():
    module = types.ModuleType("cupy", "A stand-in for CuPy (tests/_fake_cupy.py).")
    module.__version__ = "0+fake"
    module.ndarray, module.array, module.asarray, module.asnumpy = (ndarray, array, asarray,
                                                                    asnumpy)
    state = _Streams()
    module.cuda = types.SimpleNamespace(
        Device=_Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        get_current_stream=lambda: state.streams[-1], ExternalStream=state.external_stream,
        using_allocator=state.using_allocator, get_allocator=lambda: state.allocator,
        PythonFunctionAllocator=_PythonFunctionAllocator, Event=_Event,
        get_elapsed_time=_elapsed_ms)

    def getattr_(name):  # the rest of the namespace: NumPy's, on device arrays
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type):
            return value  # dtypes and constants

        def device_function(*args, **kwargs):
            _refuse_host(name, args, kwargs.values())
            return _wrap(value(*args, **kwargs))

        return device_function

    module.__getattr__ = getattr_
    return module


def install(monkeypatch):
    """Puts the stand-in in place for one test (monkeypatch undoes it): as ``cupy``, with a CUDA
    backend over it running ``rnnfast._cuda_emulated``. Returns the module."""
    module = _module()
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setitem(backends._loaded, "cuda", backends.CudaBackend(
        "cuda", module, _cuda_emulated, "cupy.ndarray", lambda: 0))
    return module
