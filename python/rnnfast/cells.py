"""Single-step cells for streaming inference, shaped like PyTorch's torch.nn.LSTMCell, GRUCell
and RNNCell, over NumPy arrays (CPU) or CuPy arrays (GPU).

``h, c = cell(x, (h, c))`` runs one step for a batch x [B, input_size] (or [input_size]
unbatched). The weights are packed once for the compiled kernel and the step is a single
pass over them (both matmuls, then the gates, fused per tile); with ``out=`` the step
allocates nothing, so a streaming loop can run on two sets of state arrays in turn::

    cell = rnnfast.LSTMCell(64, 256)
    state = [tuple(np.zeros((1, 256), np.float32) for _ in "hc") for _ in range(2)]
    for t, x in enumerate(stream):  # x: [1, 64] float32
        h, c = cell(x, state[t % 2], out=state[(t + 1) % 2])

The parameters (``weight_ih`` [G*H, I], ``weight_hh`` [G*H, H], ``bias_ih``, ``bias_hh``
[G*H], PyTorch's names, shapes, gate order and initialisation) are read-only arrays (CuPy
arrays on a GPU cannot be made read-only: do not modify them in place there either): assign
new ones (``cell.weight_hh = w``) or use ``load_state_dict``, and the cell packs them again.
The cells compute inference only; for training use the sequence layers.

On a GPU (``device="cuda"``, ``cell.to("cuda")``) a step is ``rnnfast.functional.forward`` over
one time step, since the packed single-step kernel is the CPU's: an input-projection GEMM, a
recurrence launch and copies into ``out``, several kernel launches per step (a GPU runs best
on whole sequences: use the layers where the inputs are known ahead). Its arguments are checked
as the CPU's kernel checks them, with the same errors.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from . import _cpu, _devices, _dtypes, functional
from ._params import init_params, load_params, positive_int
from .cell_registry import spec

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _param_property(name):
    def get(self):
        return self._params.get(name)

    def set(self, value):
        if name not in self._params:
            raise AttributeError(f"{name} cannot be set on a cell built with bias=False")
        self.load_state_dict({**self._params, name: value})

    return property(get, set, doc=f"{name}: a read-only array (on a GPU a CuPy array, which "
                    "cannot be made read-only); assign a new one to change it")


def _kernel_input(a):
    """``a`` as the kernel reads it: itself if C-contiguous and aligned (or no array: the
    kernel refuses it by name), else such a copy."""
    if not isinstance(a, np.ndarray) or (a.flags.c_contiguous and a.flags.aligned):
        return a
    return np.require(a, requirements=("C", "A"))


def _kernel_writable(a, dtype, shape):
    """Whether the kernel can write a result into ``a`` in place, or must refuse it itself (by
    name: not an array, another dtype or shape, read-only); else it writes to a buffer that is
    copied into ``a`` (any strides and alignment)."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        return True
    return not a.flags.writeable or (a.flags.c_contiguous and a.flags.aligned)


# The kernel's refusals of a layout that _step_any_layout handles (cpp/bindings/binding_util.h).
_LAYOUT_ERROR = re.compile("must be C-contiguous|must be aligned to its element size")


def _check_no_overlap(outputs, inputs, xp=np):
    """Each output (name, array) must not share memory with an input or another output: the
    step reads the inputs while it writes (refused as the kernel refuses it, which sees copies
    and buffers here). xp: the arrays' library, NumPy or CuPy."""
    for name, target in outputs:
        for other_name, other in inputs + [pair for pair in outputs if pair[1] is not target]:
            if (isinstance(target, xp.ndarray) and isinstance(other, xp.ndarray)
                    and xp.shares_memory(target, other)):
                raise ValueError(f"{name} overlaps the memory of {other_name}; pass separate "
                                 "arrays")


class _CellBase:
    device = "cpu"  # the default for cells pickled before they had a device
    _streaming = None  # and before they had a streaming call (see _set_params)

    def __init__(self, cell, input_size, hidden_size, bias, dtype, seed, device):
        self._cell = cell
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self.dtype = _dtypes.resolve(dtype)
        if not _dtypes.is_supported(self.dtype):
            raise TypeError(f"dtype must be {_dtypes.DTYPE_NAMES}, not {self.dtype}")
        # The CPU step takes arrays of this dtype itself (float16 ones are converted to float32
        # and back around it).
        self._kernel_dtype = self.dtype != _dtypes.FLOAT16
        device = _devices.resolve(device)  # before the parameters: refuse a device up front
        self.device = "cpu"
        self._params = {}
        self._packed = None
        # Drawn on the host, then copied: the same seed gives the same parameters everywhere.
        self.load_state_dict(init_params(repr(self), self._param_shapes(), self.hidden_size,
                                         self.dtype, np.random.default_rng(seed)))
        self.to(device)

    def _param_shapes(self):
        gh = spec(self._cell).gate_count * self.hidden_size
        shapes = {"weight_ih": (gh, self.input_size), "weight_hh": (gh, self.hidden_size)}
        if self.bias:
            shapes.update({"bias_ih": (gh,), "bias_hh": (gh,)})
        return shapes

    # ------------------------------------------------------------------ parameters

    def state_dict(self):
        """The parameters as a dict of arrays (copies, on the cell's device: NumPy or CuPy
        arrays), with PyTorch's names and shapes."""
        with _devices.on(self.device):  # CuPy copies to its current GPU
            return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict):
        """Loads parameters from a dict with PyTorch's names and shapes (every name present and
        no other; values on any device); values are copied, converted to the cell's dtype,
        placed on its device and packed."""
        params = load_params(type(self).__name__, self._param_shapes(),
                             {name: _devices.host(value) for name, value in state_dict.items()},
                             self.dtype)
        self._set_params(params, self.device)

    def to(self, device):
        """Moves the parameters to ``device``: "cpu", "cuda" (CuPy's current GPU) or "cuda:N";
        returns the cell, as torch's ``Module.to``."""
        device = _devices.resolve(device)
        if device != self.device:
            self._set_params({name: value.get() if self.device != "cpu" else value
                              for name, value in self._params.items()}, device)
        return self

    def _set_params(self, params, device):
        """Host arrays ``params`` (new ones, the cell's alone) as the parameters on
        ``device``."""
        if device == "cpu":
            for value in params.values():
                value.flags.writeable = False  # packed copies must not go stale: assign instead
        else:  # CuPy arrays cannot be made read-only; nothing is packed from them
            params = {name: _devices.move(value, device) for name, value in params.items()}
        self._params, self.device = params, device
        self._packed = None
        # Which streaming call (__call__) goes straight to the kernel: "lstm" (states in
        # tuples), "single" (one state array) or None (a GPU, or float16 converted around it).
        self._streaming = None
        if device == "cpu" and self._kernel_dtype:
            self._streaming = "lstm" if self._cell == "lstm" else "single"

    weight_ih, weight_hh, bias_ih, bias_hh = (_param_property(n) for n in _NAMES)

    def _kernel_step(self, x, h, c, h_out, c_out):
        """The kernel's step (it checks every array), on the weights packed in the layout of
        the instruction set in use: packed first where they are not packed yet, or again where
        the kernel refuses them (returns False) as packed for another (set_isa since)."""
        if self._packed is None or not _cpu.cell_step(self._packed, x, h, c, h_out, c_out):
            p = self._params
            self._packed = _cpu.pack_cell(self._cell, *(_dtypes.to_compute(p.get(name))
                                                        for name in _NAMES),
                                          bfloat16=_dtypes.is_bfloat16(self.dtype))
            _cpu.cell_step(self._packed, x, h, c, h_out, c_out)

    # ------------------------------------------------------------------ the step

    def __call__(self, input: np.ndarray, hx: Any = None, out: Any = None) -> Any:
        """One step: input [B, input_size] or [input_size] (unbatched) of the cell's dtype; hx
        the state (LSTM: a tuple (h, c)), each [B, hidden_size] or [hidden_size], None for
        zeros; out: arrays of the state's shapes to write the new state into (None: new
        arrays), which must not overlap input or hx. Returns the new state (out when given)."""
        streaming = self._streaming
        if streaming is not None and type(input) is np.ndarray and input.ndim == 2:
            # The streaming loop's call (a batch, the state and out given as arrays or, for the
            # LSTM, tuples of two): straight to the kernel, which checks every array and names
            # it as _step would. Any other call, or a layout the kernel refuses, takes the
            # general path below. (A step at B = 1, H = 256 costs a few microseconds; this
            # path saves about a microsecond and a half of Python.)
            if (streaming == "lstm" and type(hx) is tuple and type(out) is tuple
                    and len(hx) == len(out) == 2):
                args = (hx[0], hx[1], out[0], out[1])
            elif streaming == "single" and type(hx) is np.ndarray and type(out) is np.ndarray:
                args = (hx, None, out, None)
            else:
                args = None
            if args is not None:
                try:
                    self._kernel_step(input, *args)
                    return out
                except (TypeError, ValueError) as error:
                    # A TypeError may be a CuPy array, which the general path refuses naming
                    # the device; the general path raises any other error again.
                    if isinstance(error, ValueError) and not _LAYOUT_ERROR.search(str(error)):
                        raise
        # On the cell's device, before anything runs.
        _devices.check_on(self.device, input, "input", "cell")
        _devices.check_states(self.device, "cell", "hx", hx)
        _devices.check_states(self.device, "cell", "out", out)
        x = input if isinstance(input, np.ndarray) or self.device != "cpu" else np.asarray(input)
        if x.ndim not in (1, 2):
            raise ValueError(f"input must be 1-D (unbatched) or 2-D (batch, input_size), "
                             f"not of shape {x.shape}")
        unbatched = x.ndim == 1
        state_shape = x.shape[:-1] + (self.hidden_size,)
        lstm = self._cell == "lstm"
        parts = 2 if lstm else 1
        if self.device != "cpu":
            with _devices.on(self.device):  # the states it makes and its kernels, there
                hx = self._state(hx, "hx", parts, state_shape, zeros=True)
                out = self._state(out, "out", parts, state_shape, zeros=False)
                self._device_step(x, hx, out, unbatched)
            return tuple(out) if lstm else out[0]
        hx = self._state(hx, "hx", parts, state_shape, zeros=True)
        out = self._state(out, "out", parts, state_shape, zeros=False)
        try:
            self._step(x, hx, out, unbatched)
        except ValueError as error:
            # Any strides and alignment, as the layers take: the kernel refuses them (the
            # usual, contiguous call pays no check for them here), then this step runs again
            # on copies of the inputs and writes through buffers into out.
            if not _LAYOUT_ERROR.search(str(error)):
                raise
            self._step_any_layout(x, hx, out, unbatched, state_shape)
        return tuple(out) if lstm else out[0]

    def _step(self, x, hx, out, unbatched):
        """The kernel's step on the arrays as they are (it checks every one of them)."""
        if unbatched:
            x, hx, out = x[None], [s[None] for s in hx], [s[None] for s in out]
        lstm = self._cell == "lstm"
        results = out
        if _dtypes.is_16bit(self.dtype):
            names = ("input", "hx[0]", "hx[1]", "out[0]", "out[1]") if lstm else (
                "input", "hx", "out")
            for name, value in zip(names, [x, *hx, *out]):
                if not isinstance(value, np.ndarray) or value.dtype != self.dtype:
                    raise TypeError(f"{name} must be a numpy.ndarray of the cell's dtype "
                                    f"{self.dtype}, not {getattr(value, 'dtype', type(value))}")
        if not self._kernel_dtype:  # float16: the step in float32, the state rounded after
            compute = _dtypes.compute_dtype(self.dtype)
            x, hx = x.astype(compute), [h.astype(compute) for h in hx]
            results = [np.empty(o.shape, compute) for o in out]
        self._kernel_step(x, hx[0], hx[1] if lstm else None, results[0],
                          results[1] if lstm else None)
        if results is not out:
            for view, result in zip(out, results):
                view[...] = result

    def _device_step(self, x, hx, out, unbatched):
        """The step on the GPU: the CPU kernel's checks (in its order, with its errors; CuPy
        arrays have no read-only flag to check), then functional's forward over one time step
        (x [1, B, I]), whose h_n and c_n are copied into out (any strides)."""
        if unbatched:
            x, hx, out = x[None], [s[None] for s in hx], [s[None] for s in out]
        lstm = self._cell == "lstm"
        names = ("hx[0]", "out[0]", "hx[1]", "out[1]") if lstm else ("hx", "out")
        arrays = (hx[0], out[0], hx[1], out[1]) if lstm else (hx[0], out[0])
        batch = x.shape[0]
        for name, value, shape in [("input", x, (batch, self.input_size))] + [
                (n, a, (batch, self.hidden_size)) for n, a in zip(names, arrays)]:
            if value.dtype != self.dtype:
                raise TypeError(f"{name} has dtype {value.dtype}, expected {self.dtype} (the "
                                "dtype of the cell's weights)")
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
        _check_no_overlap([(n, a) for n, a in zip(names, arrays) if n.startswith("out")],
                          [(n, a) for n, a in zip(names, arrays) if n.startswith("hx")]
                          + [("input", x)], _devices.xp(self.device))
        p = self._params
        _, h_n, c_n, _ = functional.forward(
            self._cell, x[None], hx[0], p["weight_ih"], p["weight_hh"], b_ih=p.get("bias_ih"),
            b_hh=p.get("bias_hh"), c0=hx[1] if lstm else None)
        for target, result in zip(out, (h_n, c_n)):
            target[...] = result

    def _step_any_layout(self, x, hx, out, unbatched, state_shape):
        """The step on inputs and outputs of any strides and alignment: inputs copied where the
        kernel cannot read them in place, outputs written through buffers."""
        names = ("[0]", "[1]") if self._cell == "lstm" else ("",)
        _check_no_overlap([("out" + n, a) for n, a in zip(names, out)],
                          [("hx" + n, a) for n, a in zip(names, hx)] + [("input", x)])
        targets = [s if _kernel_writable(s, self.dtype, state_shape) else
                   np.empty(state_shape, self.dtype) for s in out]
        self._step(_kernel_input(x), [_kernel_input(s) for s in hx], targets, unbatched)
        for given, written in zip(out, targets):
            if given is not written:
                given[...] = written

    def _state(self, value, name, parts, shape, zeros):
        """hx or out as a list of `parts` arrays: new ones (zeros for hx) for None."""
        if value is None:
            xp = _devices.xp(self.device)
            make = xp.zeros if zeros else xp.empty
            return [make(shape, self.dtype) for _ in range(parts)]
        if parts == 1:
            return [value]
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be None or a tuple (h, c) for the LSTM cell")
        return list(value)

    # ------------------------------------------------------------------ copies

    def __getstate__(self):
        # The packed weights (a compiled object, in the layout of this machine's instruction
        # set) are not pickled: the next step packs the parameters again.
        return {**self.__dict__, "_packed": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.device == "cpu":
            for value in self._params.values():  # read-only, as load_state_dict leaves them
                value.flags.writeable = False

    def __repr__(self):
        bias = "" if self.bias else ", bias=False"
        device = "" if self.device == "cpu" else f", device={self.device!r}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{bias}, "
                f"dtype={self.dtype.name}{device})")


class LSTMCell(_CellBase):
    """One LSTM step (gates i, f, g, o): ``h, c = cell(x, (h, c))``."""

    def __init__(self, input_size, hidden_size, bias=True, dtype="float32", seed=None,
                 device="cpu"):
        super().__init__("lstm", input_size, hidden_size, bias, dtype, seed, device)


class GRUCell(_CellBase):
    """One GRU step (gates r, z, n; reset applied after the recurrent matmul):
    ``h = cell(x, h)``."""

    def __init__(self, input_size, hidden_size, bias=True, dtype="float32", seed=None,
                 device="cpu"):
        super().__init__("gru", input_size, hidden_size, bias, dtype, seed, device)


class RNNCell(_CellBase):
    """One Elman RNN step, h = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu:
    ``h = cell(x, h)``."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype="float32", seed=None, device="cpu"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, bias, dtype, seed,
                         device)
