"""Recurrent layers shaped like PyTorch's torch.nn.RNN, LSTM and GRU, over NumPy arrays (CPU)
or CuPy arrays (GPU).

Same constructor arguments, parameter names, shapes, initialisation and call signature as
PyTorch, so that code and weights move between the two unchanged; training is explicit:
``layer.backward(grad_output, grad_hx)`` after a training-mode forward. The parameters live on
the layer's ``device`` (``device=`` at construction, ``layer.to(device)``), and so must the
arrays of a call (rnnfast._devices).
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np

from . import _devices, _dtypes, functional
from ._params import init_params, load_params, positive_int
from .cell_registry import spec


class _RNNBase:
    """Shared by RNN, LSTM and GRU; ``_cell`` names the cell (see rnnfast.cell_registry)."""

    device = "cpu"  # the default for layers pickled before they had a device

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype="float32", seed=None, device="cpu"):
        self._cell = cell
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], not {dropout!r}")
        self.dropout = float(dropout)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) \
                or not 0 <= proj_size < self.hidden_size:
            raise ValueError(f"proj_size must be an integer in [0, hidden_size), not {proj_size!r}")
        self.proj_size = int(proj_size)
        self.dtype = _dtypes.resolve(dtype)
        if not _dtypes.is_supported(self.dtype):
            raise TypeError(f"dtype must be {_dtypes.DTYPE_NAMES}, not {self.dtype}")
        self.seed = seed
        device = _devices.resolve(device)  # before the parameters: refuse a device up front
        if self.dropout > 0 and self.num_layers == 1:
            # As PyTorch: dropout acts between layers, so a single layer has none.
            warnings.warn("dropout > 0 has no effect with num_layers=1: dropout is applied "
                          "between stacked layers", stacklevel=3)
        self.training = True
        self.grads = None
        self._ctx = None
        # One generator, seeded by `seed`, for the initial parameters and then the dropout masks.
        self._rng = np.random.default_rng(seed)
        # Drawn on the host, then copied: the same seed gives the same parameters on every
        # device.
        self.device = "cpu"
        self._params = init_params(repr(self), self._param_shapes(), self.hidden_size,
                                   self.dtype, self._rng)
        self.to(device)

    # ------------------------------------------------------------------ parameters

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _out_size(self):
        """Size of h and of each direction's output: proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _param_shapes(self):
        gh, r = spec(self._cell).gate_count * self.hidden_size, self._out_size
        full = {"w_hh": (gh, r), "b_ih": (gh,), "b_hh": (gh,),
                "w_hr": (self.proj_size, self.hidden_size)}
        shapes = {}
        names = functional.param_names(self.num_layers, self.bidirectional, self.bias,
                                       self.proj_size > 0)
        for i, n in enumerate(names):
            inputs = self.input_size if i < self.num_directions else self.num_directions * r
            shapes.update({theirs: full.get(ours, (gh, inputs)) for ours, theirs in n.items()})
        return shapes

    def state_dict(self) -> dict[str, Any]:
        """The parameters as a dict of arrays (copies, on the layer's device: NumPy or CuPy
        arrays), with PyTorch's names and shapes."""
        with _devices.on(self.device):  # CuPy copies to its current GPU
            return {name: value.copy() for name, value in self._params.items()}

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """(name, array) pairs of the parameters themselves, not copies (state_dict's names and
        order), as torch's ``named_parameters``: for optimizers that update them in place
        (``rnnfast.training``). Changing them between a training forward and its backward
        changes what the backward computes."""
        return iter(self._params.items())

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads parameters from a dict with PyTorch's names and shapes (values: CuPy arrays
        or anything np.asarray accepts, e.g. NumPy arrays or CPU tensors, on any device). Every
        name must be present and no other; values are copied, converted to the layer's dtype
        and placed on its device (checked on the host: a GPU value is copied there and back)."""
        params = load_params(type(self).__name__, self._param_shapes(),
                             {name: _devices.host(value) for name, value in state_dict.items()},
                             self.dtype)
        self._params = {name: _devices.move(value, self.device)
                        for name, value in params.items()}

    def to(self, device) -> _RNNBase:
        """Moves the parameters (and ``grads``) to ``device``: "cpu", "cuda" (CuPy's current
        GPU) or "cuda:N"; returns the layer, as torch's ``Module.to``. Arrays already there are
        not copied. A training forward made before must be run again before ``backward``."""
        device = _devices.resolve(device)
        if device != self.device:
            self._params = {name: _devices.move(value, device)
                            for name, value in self._params.items()}
            if self.grads is not None:
                self.grads = {name: _devices.move(value, device)
                              for name, value in self.grads.items()}
            self._ctx = None
            self.device = device
        return self

    # ------------------------------------------------------------------ modes

    def train(self, mode: bool = True) -> _RNNBase:
        self.training = bool(mode)
        return self

    def eval(self) -> _RNNBase:
        return self.train(False)

    # ------------------------------------------------------------------ forward and backward

    def forward(self, input: Any, hx: Any = None, *, lengths: Any = None, resets: Any = None,
                seed: int | None = None) -> tuple[Any, Any]:
        """``output, h_n = layer(input, h0)`` (RNN, GRU) or
        ``output, (h_n, c_n) = layer(input, (h0, c0))`` (LSTM), with PyTorch's shapes:
        input (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size)
        unbatched; output (.., num_directions * R) with R = proj_size or hidden_size, both
        directions concatenated (forward first); states (num_layers * num_directions, B, R),
        the LSTM's c (.., B, hidden_size), indexed by layer * num_directions + direction, or
        without B when unbatched; hx None means zeros. Input of any strides is accepted
        (copied when not contiguous); NaN in the input propagates to the outputs. input, hx
        and resets must be on the layer's device (else a TypeError or ValueError naming
        them, before anything runs); the outputs are there too.

        lengths: integers [B] (a single integer when unbatched; on any device: read on the
        host, which for a CuPy array waits for the GPU), in any order: sequence b has
        lengths[b] steps and the rest is padding. Its outputs there are 0, its final states
        are those after its own last step (h0, c0 for a length of 0), and the reverse
        direction starts at its own last step: what PyTorch's packed sequences give. None: T.

        resets: bools [T, B] ([B, T] with batch_first, [T] unbatched): where set, the state of
        sequence b is put back to its initial state (hx's, or zeros) before step t, in every
        layer. The reverse direction crosses the same boundaries the other way: it is reset
        before step t-1 where resets[t] is set.

        seed: seeds this call's dropout masks (training mode, num_layers > 1, dropout > 0);
        None draws them from the layer's generator (seeded by the layer's ``seed``)."""
        # On the layer's device, before anything runs (lengths: anywhere, read on the host).
        for name, value in (("input", input), ("resets", resets)):
            if value is not None:
                _devices.check_on(self.device, value, name, "layer")
        _devices.check_states(self.device, "layer", "hx", hx)
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        # Backward reads nothing the caller can modify: the input, hx and output it keeps are
        # private (the torch adapter calls functional directly and has autograd check them).
        with _devices.on(self.device):  # what the call makes, on the parameters' GPU
            input, hx = functional.private_inputs(self.training, input, hx)
            output, states, self._ctx = self._forward(self._params, self.training, rng, input,
                                                      hx, lengths, resets)
            if self._ctx is not None:
                output = functional.private_output(output, self._ctx[0])
        return output, states

    __call__ = forward

    def _forward(self, params, training, generator, input, hx, lengths, resets):
        """``forward`` on the given parameters (a dict like ``state_dict()``, used as they
        are); returns ``(output, states, ctx)``, ctx (None unless training) for
        ``_backward``, kept by the caller so that several forwards can wait for theirs."""
        x = input if hasattr(input, "ndim") else np.asarray(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"input must be 2-D (unbatched) or 3-D, not of shape {x.shape}")
        unbatched = x.ndim == 2
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has shape {x.shape}: its last dimension must be "
                             f"input_size = {self.input_size}")
        x = self._to_time_major(x, unbatched)
        if lengths is not None and unbatched and np.ndim(lengths) == 0:
            lengths = np.reshape(lengths, 1)
        if resets is not None:  # to [T, B]
            resets = resets if hasattr(resets, "ndim") else np.asarray(resets)
            if unbatched and resets.ndim == 1:
                resets = resets[:, None]
            elif self.batch_first and resets.ndim == 2:
                resets = resets.T
        output, h_n, c_n, ctx = functional.forward_layers(
            self._cell, x, params, num_layers=self.num_layers, bidirectional=self.bidirectional,
            hx=self._states_in(hx, unbatched), lengths=lengths, resets=resets,
            dropout=self.dropout if training else 0.0, generator=generator, training=training)
        if ctx is not None:
            ctx = (ctx, unbatched)
        return (self._from_time_major(output, unbatched),
                self._states_out((h_n, c_n), unbatched), ctx)

    def backward(self, grad_output: Any, grad_hx: Any = None) -> tuple[Any, Any]:
        """Backpropagation through time for the last training-mode forward, through every
        layer and direction (with its lengths, resets and dropout masks).

        grad_output: gradient of the loss with respect to output (its shape); grad_hx: with
        respect to the final states, in hx's structure (None, or for the LSTM a tuple whose
        members may be None). Returns ``(grad_input, grad_hx0)``, the gradients for the input
        and for the initial states (hx's structure), and sets ``self.grads``, the parameter
        gradients keyed like ``state_dict()``. It may be called again for the same forward."""
        if self._ctx is None:
            raise RuntimeError("backward needs a forward in training mode first "
                               "(layer.train(), then call the layer)")
        _devices.check_on(self.device, grad_output, "grad_output", "layer")
        _devices.check_states(self.device, "layer", "grad_hx", grad_hx)
        with _devices.on(self.device):
            grad_input, grad_hx0, self.grads = self._backward(self._ctx, grad_output, grad_hx)
        return grad_input, grad_hx0

    def _backward(self, ctx, grad_output, grad_hx):
        """``backward`` for the ctx of a ``_forward``: ``(grad_input, grad_hx0, grads)``."""
        ctx, unbatched = ctx
        dy = grad_output if hasattr(grad_output, "ndim") else np.asarray(grad_output)
        if dy.ndim != (2 if unbatched else 3):
            raise ValueError(f"grad_output has shape {dy.shape}, expected the output's shape")
        dx, dh0, dc0, grads = functional.backward_layers(
            ctx, self._to_time_major(dy, unbatched), self._states_in(grad_hx, unbatched))
        return (self._from_time_major(dx, unbatched), self._states_out((dh0, dc0), unbatched),
                grads)

    # ------------------------------------------------------------------ layouts
    # Inside, everything is time-major and batched: sequences [T, B, C], states [L*D, B, C].
    # These convert at the API edge; functional checks the rest.

    def _to_time_major(self, a, unbatched):
        if unbatched:
            return a[:, None]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def _from_time_major(self, a, unbatched):
        if unbatched:
            return a[:, 0]
        return a.transpose(1, 0, 2).copy() if self.batch_first else a

    def _states_in(self, states, unbatched):
        """User states in hx's structure, with a batch axis added when unbatched."""
        grow = (lambda s: s if s is None or not hasattr(s, "ndim") else s[:, None]) \
            if unbatched else (lambda s: s)
        if isinstance(states, (tuple, list)):
            return tuple(grow(s) for s in states)
        return grow(states)

    def _states_out(self, states, unbatched):
        """[L*D, B, .] arrays (None skipped) as the user's structure: an array, or a tuple
        (LSTM)."""
        out = tuple(s[:, 0] if unbatched else s for s in states if s is not None)
        return out if self._cell == "lstm" else out[0]

    def __repr__(self):
        args = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            args += f", num_layers={self.num_layers}"
        for name, default in (("batch_first", False), ("bidirectional", False),
                              ("proj_size", 0), ("dropout", 0.0), ("bias", True)):
            if getattr(self, name) != default:
                args += f", {name}={getattr(self, name)}"
        device = "" if self.device == "cpu" else f", device={self.device!r}"
        return f"{type(self).__name__}({args}, dtype={self.dtype.name}{device})"


class RNN(_RNNBase):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype="float32",
                 seed=None, device="cpu"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, dtype, seed, device)


class LSTM(_RNNBase):
    """LSTM with PyTorch's gate order (i, f, g, o)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype="float32", seed=None,
                 device="cpu"):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype, seed, device)


class GRU(_RNNBase):
    """GRU with PyTorch's gate order (r, z, n) and its reset gate applied after the recurrent
    matmul."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None,
                 device="cpu"):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, seed, device)
