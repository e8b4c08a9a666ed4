"""Recurrent layers shaped like PyTorch's torch.nn.RNN, LSTM and GRU, over NumPy arrays.

Same constructor arguments, parameter names, shapes, initialisation and call signature as
PyTorch, so that code and weights move between the two unchanged; training is explicit:
``layer.backward(grad_output, grad_hx)`` after a training-mode forward.
"""

import warnings

import numpy as np

from . import functional
from .reference import GATES


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


class _RNNBase:
    """Shared by RNN, LSTM and GRU; ``_cell`` names the cell (see rnnfast.reference.CELLS)."""

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype="float32", seed=None):
        self._cell = cell
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
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
        self.dtype = np.dtype(dtype)
        if self.dtype not in functional.DTYPES:
            raise TypeError(f"dtype must be float32 or float64, not {self.dtype}")
        self.seed = seed
        for option, unsupported in (("num_layers > 1", self.num_layers > 1),
                                    ("bidirectional=True", self.bidirectional),
                                    ("proj_size > 0", self.proj_size > 0)):
            if unsupported:
                raise NotImplementedError(
                    f"{option} is not implemented yet in rnnfast {type(self).__name__}; "
                    "this version runs one layer in one direction")
        if self.dropout > 0 and self.num_layers == 1:
            # As PyTorch: dropout acts between layers, so a single layer has none.
            warnings.warn("dropout > 0 has no effect with num_layers=1: dropout is applied "
                          "between stacked layers", stacklevel=3)
        self.training = True
        self.grads = None
        self._ctx = None
        self._params = self._init_params(np.random.default_rng(seed))

    # ------------------------------------------------------------------ parameters

    def _param_shapes(self):
        gh = GATES[self._cell] * self.hidden_size
        shapes = {"weight_ih_l0": (gh, self.input_size), "weight_hh_l0": (gh, self.hidden_size)}
        if self.bias:
            shapes.update({"bias_ih_l0": (gh,), "bias_hh_l0": (gh,)})
        return shapes

    def _init_params(self, rng):
        # PyTorch's initialisation: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)].
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-bound, bound, shape).astype(self.dtype)
                for name, shape in self._param_shapes().items()}

    def state_dict(self):
        """The parameters as a dict of NumPy arrays (copies), with PyTorch's names and shapes."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict):
        """Loads parameters from a dict with PyTorch's names and shapes (values: anything
        np.asarray accepts, e.g. NumPy arrays or CPU tensors). Every name must be present and
        no other; values are copied and converted to the layer's dtype."""
        expected = self._param_shapes()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise KeyError(f"state_dict does not match {type(self).__name__}: "
                           f"missing {missing}, unexpected {unexpected}")
        loaded = {}
        for name, shape in expected.items():
            value = np.asarray(state_dict[name])
            if value.shape != shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {shape}")
            if not np.issubdtype(value.dtype, np.floating):
                raise TypeError(f"state_dict[{name!r}] has dtype {value.dtype}, expected floats")
            loaded[name] = np.array(value, dtype=self.dtype)
        self._params = loaded

    # ------------------------------------------------------------------ modes

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------ forward and backward

    def _state_shape(self, batch):
        lead = (self.num_layers * (2 if self.bidirectional else 1),)
        return lead + ((batch,) if batch is not None else ()) + (self.hidden_size,)

    def _check_array(self, value, name, shape):
        """``value`` as an ndarray of the layer's dtype and the given shape (``None`` in the
        shape: any size), or a TypeError/ValueError naming the argument."""
        value = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if value.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {value.dtype}, but this layer computes in "
                            f"{self.dtype}; convert it with .astype(np.{self.dtype})")
        if value.ndim != len(shape) or any(s is not None and s != v
                                           for s, v in zip(shape, value.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} has shape {value.shape}, expected {want}")
        return value

    def forward(self, input, hx=None):
        """``output, h_n = layer(input, h0)`` (RNN, GRU) or
        ``output, (h_n, c_n) = layer(input, (h0, c0))`` (LSTM), with PyTorch's shapes:
        input (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size)
        unbatched; states (num_layers * num_directions, B, hidden_size), or without B when
        unbatched; hx None means zeros. Input of any strides is accepted (copied when not
        contiguous); NaN in the input propagates to the outputs."""
        x = input if isinstance(input, np.ndarray) else np.asarray(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"input must be 2-D (unbatched) or 3-D, not of shape {x.shape}")
        unbatched = x.ndim == 2
        x = self._check_array(x, "input", (None,) * (x.ndim - 1) + (self.input_size,))
        x = self._to_time_major(x, unbatched)
        steps, batch, _ = x.shape
        if steps < 1:
            raise ValueError(f"input has shape {input.shape}: the sequence length must be >= 1")

        states = self._states_in(hx, "hx", ("h0", "c0"), batch, unbatched, zeros_for_none=True)
        p = self._params
        y, h_n, c_n, ctx = functional.forward(
            self._cell, x, states[0], p["weight_ih_l0"], p["weight_hh_l0"], p.get("bias_ih_l0"),
            p.get("bias_hh_l0"), states[1] if len(states) > 1 else None, training=self.training)
        self._ctx = ctx
        self._batch = (steps, batch, unbatched)
        return self._from_time_major(y, unbatched), self._states_out((h_n, c_n), unbatched)

    __call__ = forward

    def backward(self, grad_output, grad_hx=None):
        """Backpropagation through time for the last training-mode forward.

        grad_output: gradient of the loss with respect to output (its shape); grad_hx: with
        respect to the final states, in hx's structure (None, or for the LSTM a tuple whose
        members may be None). Returns ``(grad_input, grad_hx0)``, the gradients for the input
        and for the initial states (hx's structure), and sets ``self.grads``, the parameter
        gradients keyed like ``state_dict()``. It may be called again for the same forward."""
        if self._ctx is None:
            raise RuntimeError("backward needs a forward in training mode first "
                               "(layer.train(), then call the layer)")
        steps, batch, unbatched = self._batch
        out_shape = ((steps, self.hidden_size) if unbatched else
                     (batch, steps, self.hidden_size) if self.batch_first else
                     (steps, batch, self.hidden_size))
        dy = self._to_time_major(self._check_array(grad_output, "grad_output", out_shape),
                                 unbatched)
        finals = self._states_in(grad_hx, "grad_hx", ("h_n", "c_n"), batch, unbatched,
                                 zeros_for_none=False)
        g = functional.backward(self._ctx, dy, *finals)

        self.grads = {"weight_ih_l0": g["w_ih"], "weight_hh_l0": g["w_hh"]}
        if self.bias:
            self.grads.update({"bias_ih_l0": g["b_ih"], "bias_hh_l0": g["b_hh"]})
        return self._from_time_major(g["x"], unbatched), self._states_out(
            (g["h0"], g["c0"]), unbatched)

    # ------------------------------------------------------------------ layouts
    # Inside, everything is time-major and batched: sequences [T, B, C], states [B, H] per layer
    # and direction. These convert at the API edge.

    def _to_time_major(self, a, unbatched):
        if unbatched:
            return a[:, None]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def _from_time_major(self, a, unbatched):
        if unbatched:
            return a[:, 0]
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if self.batch_first else a

    def _states_in(self, states, name, lstm_parts, batch, unbatched, zeros_for_none):
        """User states in hx's structure (an array, or for the LSTM a tuple of two, each
        [L*D, B, H], or [L*D, H] unbatched; None for zeros or for no gradient) as a list of
        [B, H] arrays for the single layer (None kept when not zeros_for_none)."""
        if self._cell == "lstm":
            if states is None:
                states = (None, None)
            if not isinstance(states, (tuple, list)) or len(states) != 2:
                raise TypeError(f"{name} must be None or a tuple {lstm_parts} for the LSTM")
            names = tuple(f"{name}[{i}] ({part})" for i, part in enumerate(lstm_parts))
        else:
            states, names = (states,), (name,)
        shape = self._state_shape(None if unbatched else batch)
        out = []
        for state, name in zip(states, names):
            if state is None:
                out.append(np.zeros((batch, self.hidden_size), self.dtype) if zeros_for_none
                           else None)
                continue
            state = self._check_array(state, name, shape)
            out.append(state[0][None] if unbatched else state[0])
        return out

    def _states_out(self, states, unbatched):
        """[B, H] arrays (None skipped) as the user's structure: an array, or a tuple (LSTM)."""
        out = tuple(s if unbatched else s[None] for s in states if s is not None)
        return out if self._cell == "lstm" else out[0]

    def __repr__(self):
        args = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            args += f", num_layers={self.num_layers}"
        if self.batch_first:
            args += ", batch_first=True"
        return f"{type(self).__name__}({args}, dtype={self.dtype.name})"


class RNN(_RNNBase):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype="float32",
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, dtype, seed)


class LSTM(_RNNBase):
    """LSTM with PyTorch's gate order (i, f, g, o)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype="float32", seed=None):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype, seed)


class GRU(_RNNBase):
    """GRU with PyTorch's gate order (r, z, n) and its reset gate applied after the recurrent
    matmul."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, seed)
