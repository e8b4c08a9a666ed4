"""Recurrent layers shaped like PyTorch's torch.nn.RNN, LSTM and GRU, over NumPy arrays.

Same constructor arguments, parameter names, shapes, initialisation and call signature as
PyTorch, so that code and weights move between the two unchanged; training is explicit:
``layer.backward(grad_output, grad_hx)`` after a training-mode forward.
"""

import warnings

import numpy as np

from . import _dtypes, functional
from ._params import init_params, load_params, positive_int
from .reference import GATES


def _reverse_order(lengths, steps, batch):
    """order [T, B]: order[t, b] = lengths[b] - 1 - t for t < lengths[b], else t (padding stays
    where it is). Gathering with it reverses every sequence within its own length."""
    t = np.arange(steps)[:, None]
    ends = np.full(batch, steps) if lengths is None else lengths
    return np.where(t < ends, ends - 1 - t, t)


def _gather(a, order):
    """a[order[t, b], b] for every t, b: a is [T, B] or [T, B, C]."""
    return np.take_along_axis(a, order if a.ndim == 2 else order[:, :, None], axis=0)


class _RNNBase:
    """Shared by RNN, LSTM and GRU; ``_cell`` names the cell (see rnnfast.reference.CELLS)."""

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype="float32", seed=None):
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
        self.dtype = np.dtype(dtype)
        if self.dtype not in functional.DTYPES:
            raise TypeError(f"dtype must be {_dtypes.DTYPE_NAMES}, not {self.dtype}")
        self.seed = seed
        if self.dropout > 0 and self.num_layers == 1:
            # As PyTorch: dropout acts between layers, so a single layer has none.
            warnings.warn("dropout > 0 has no effect with num_layers=1: dropout is applied "
                          "between stacked layers", stacklevel=3)
        self.training = True
        self.grads = None
        self._ctx = None
        # One generator, seeded by `seed`, for the initial parameters and then the dropout masks.
        self._rng = np.random.default_rng(seed)
        self._params = init_params(self._param_shapes(), self.hidden_size, self.dtype,
                                   self._rng)

    # ------------------------------------------------------------------ parameters

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _out_size(self):
        """Size of h and of each direction's output: proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _names(self, k, d):
        """PyTorch's parameter names of layer k, direction d (1: reverse), in its order."""
        sfx = f"_l{k}" + ("_reverse" if d else "")
        names = {"w_ih": "weight_ih" + sfx, "w_hh": "weight_hh" + sfx}
        if self.bias:
            names.update({"b_ih": "bias_ih" + sfx, "b_hh": "bias_hh" + sfx})
        if self.proj_size:
            names["w_hr"] = "weight_hr" + sfx
        return names

    def _param_shapes(self):
        gh, r = GATES[self._cell] * self.hidden_size, self._out_size
        shapes = {}
        for k in range(self.num_layers):
            inputs = self.input_size if k == 0 else self.num_directions * r
            for d in range(self.num_directions):
                full = {"w_ih": (gh, inputs), "w_hh": (gh, r), "b_ih": (gh,), "b_hh": (gh,),
                        "w_hr": (self.proj_size, self.hidden_size)}
                shapes.update({name: full[ours] for ours, name in self._names(k, d).items()})
        return shapes

    def state_dict(self):
        """The parameters as a dict of NumPy arrays (copies), with PyTorch's names and shapes."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict):
        """Loads parameters from a dict with PyTorch's names and shapes (values: anything
        np.asarray accepts, e.g. NumPy arrays or CPU tensors). Every name must be present and
        no other; values are copied and converted to the layer's dtype."""
        self._params = load_params(type(self).__name__, self._param_shapes(), state_dict,
                                   self.dtype)

    # ------------------------------------------------------------------ modes

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------ forward and backward

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

    def forward(self, input, hx=None, lengths=None, resets=None, seed=None):
        """``output, h_n = layer(input, h0)`` (RNN, GRU) or
        ``output, (h_n, c_n) = layer(input, (h0, c0))`` (LSTM), with PyTorch's shapes:
        input (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size)
        unbatched; output (.., num_directions * R) with R = proj_size or hidden_size, both
        directions concatenated (forward first); states (num_layers * num_directions, B, R),
        the LSTM's c (.., B, hidden_size), indexed by layer * num_directions + direction, or
        without B when unbatched; hx None means zeros. Input of any strides is accepted
        (copied when not contiguous); NaN in the input propagates to the outputs.

        lengths: integers [B] (a single integer when unbatched), in any order: sequence b has
        lengths[b] steps and the rest is padding. Its outputs there are 0, its final states
        are those after its own last step (h0, c0 for a length of 0), and the reverse
        direction starts at its own last step: what PyTorch's packed sequences give. None: T.

        resets: bools [T, B] ([B, T] with batch_first, [T] unbatched): where set, the state of
        sequence b is put back to its initial state (hx's, or zeros) before step t, in every
        layer. The reverse direction crosses the same boundaries the other way: it is reset
        before step t-1 where resets[t] is set.

        seed: seeds this call's dropout masks (training mode, num_layers > 1, dropout > 0);
        None draws them from the layer's generator (seeded by the layer's ``seed``)."""
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        output, states, self._ctx = self._forward(self._params, self.training,
                                                  rng if self.training else None, input, hx,
                                                  lengths, resets)
        return output, states

    __call__ = forward

    def _forward(self, params, training, dropout_rng, input, hx, lengths, resets):
        """``forward`` on the given parameters (a dict like ``state_dict()`` of arrays of the
        layer's dtype, used as they are: e.g. views of a torch module's tensors). ``training``:
        save what ``_backward`` needs; ``dropout_rng``: the numpy Generator of the dropout
        masks, None for no dropout. Returns ``(output, states, saved)``; ``saved`` (None unless
        training) is kept by the caller, so that several forwards can wait for their
        backward."""
        x = input if isinstance(input, np.ndarray) else np.asarray(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"input must be 2-D (unbatched) or 3-D, not of shape {x.shape}")
        unbatched = x.ndim == 2
        x = self._check_array(x, "input", (None,) * (x.ndim - 1) + (self.input_size,))
        x = self._to_time_major(x, unbatched)
        steps, batch, _ = x.shape
        if steps < 1:
            raise ValueError(f"input has shape {input.shape}: the sequence length must be >= 1")
        if lengths is not None and unbatched and np.ndim(lengths) == 0:
            lengths = np.reshape(lengths, 1)
        lengths = functional.check_lengths(lengths, steps, batch)
        if resets is not None:  # to [T, B]
            resets = np.asarray(resets)
            if unbatched and resets.ndim == 1:
                resets = resets[:, None]
            elif self.batch_first and resets.ndim == 2:
                resets = resets.T
        resets = functional.check_resets(resets, steps, batch)

        h0, c0 = self._states_in(hx, "hx", ("h0", "c0"), batch, unbatched, zeros_for_none=True)
        # The reverse direction runs on each sequence reversed within its own length: step t
        # of it is step order[t, b] of the input (an involution: the same indices bring the
        # results back), and its resets are those of the step after, reversed the same way.
        order = _reverse_order(lengths, steps, batch) if self.bidirectional else None
        resets_by_direction = (resets, None if resets is None or order is None else _gather(
            np.concatenate([resets[1:], np.zeros((1, batch), bool)]), order))
        dropout = dropout_rng is not None and self.dropout > 0

        layer_in, h_n, c_n, ctxs, masks = x, [], [], [], []
        for k in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                i = k * self.num_directions + d
                p = {ours: params[name] for ours, name in self._names(k, d).items()}
                y, h, c, ctx = functional.forward(
                    self._cell, layer_in if d == 0 else _gather(layer_in, order), h0[i],
                    p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"),
                    None if c0 is None else c0[i], training=training, lengths=lengths,
                    resets=resets_by_direction[d], w_hr=p.get("w_hr"))
                outputs.append(y if d == 0 else _gather(y, order))
                h_n.append(h)
                c_n.append(c)
                ctxs.append(ctx)
            layer_in = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
            if dropout and k < self.num_layers - 1:
                keep = dropout_rng.random(layer_in.shape) >= self.dropout
                scale = 0.0 if self.dropout == 1 else 1.0 / (1.0 - self.dropout)
                masks.append((keep * scale).astype(self.dtype))
                layer_in = layer_in * masks[-1]
        saved = (ctxs, masks, order, (steps, batch, unbatched)) if training else None
        finals = (np.stack(h_n), np.stack(c_n) if self._cell == "lstm" else None)
        return (self._from_time_major(layer_in, unbatched), self._states_out(finals, unbatched),
                saved)

    def backward(self, grad_output, grad_hx=None):
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
        grad_input, grad_hx0, self.grads = self._backward(self._ctx, grad_output, grad_hx)
        return grad_input, grad_hx0

    def _backward(self, saved, grad_output, grad_hx):
        """``backward`` for the ``saved`` of a ``_forward``: returns ``(grad_input, grad_hx0,
        grads)``, grads keyed like ``state_dict()``."""
        ctxs, masks, order, (steps, batch, unbatched) = saved
        r, dirs = self._out_size, self.num_directions
        features = dirs * r
        out_shape = ((steps, features) if unbatched else
                     (batch, steps, features) if self.batch_first else
                     (steps, batch, features))
        dy = self._to_time_major(self._check_array(grad_output, "grad_output", out_shape),
                                 unbatched)
        dh_n, dc_n = self._states_in(grad_hx, "grad_hx", ("h_n", "c_n"), batch, unbatched,
                                     zeros_for_none=False)
        dh0, dc0 = [None] * len(ctxs), [None] * len(ctxs)
        grads = {}
        for k in reversed(range(self.num_layers)):
            if k < len(masks):
                dy = dy * masks[k]
            dx = 0
            for d in range(dirs):
                i = k * dirs + d
                part = dy[:, :, d * r:(d + 1) * r]
                g = functional.backward(ctxs[i], part if d == 0 else _gather(part, order),
                                        None if dh_n is None else dh_n[i],
                                        None if dc_n is None else dc_n[i])
                dx = dx + (g["x"] if d == 0 else _gather(g["x"], order))
                dh0[i], dc0[i] = g["h0"], g["c0"]
                grads.update({name: g[ours] for ours, name in self._names(k, d).items()})
            dy = dx
        grads = {name: grads[name] for name in self._param_shapes()}  # state_dict's order
        finals = (np.stack(dh0), np.stack(dc0) if self._cell == "lstm" else None)
        return self._from_time_major(dy, unbatched), self._states_out(finals, unbatched), grads

    # ------------------------------------------------------------------ layouts
    # Inside, everything is time-major and batched: sequences [T, B, C], states [L*D, B, C].
    # These convert at the API edge.

    def _to_time_major(self, a, unbatched):
        if unbatched:
            return a[:, None]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def _from_time_major(self, a, unbatched):
        if unbatched:
            return a[:, 0]
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if self.batch_first else a

    def _states_in(self, states, name, lstm_parts, batch, unbatched, zeros_for_none):
        """User states in hx's structure (an array [L*D, B, R], or for the LSTM a tuple of it
        and [L*D, B, H]; without B when unbatched; None for zeros or for no gradient) as
        [h, c], arrays [L*D, B, .] (c None unless LSTM; None kept when not zeros_for_none)."""
        if self._cell == "lstm":
            if states is None:
                states = (None, None)
            if not isinstance(states, (tuple, list)) or len(states) != 2:
                raise TypeError(f"{name} must be None or a tuple {lstm_parts} for the LSTM")
            names = tuple(f"{name}[{i}] ({part})" for i, part in enumerate(lstm_parts))
            sizes = (self._out_size, self.hidden_size)
        else:
            states, names, sizes = (states,), (name,), (self._out_size,)
        out = [None, None]
        for i, (state, name, size) in enumerate(zip(states, names, sizes)):
            lead = self.num_layers * self.num_directions
            if state is None:
                if zeros_for_none:
                    out[i] = np.zeros((lead, batch, size), self.dtype)
                continue
            state = self._check_array(state, name, (lead,) + (() if unbatched else (batch,))
                                      + (size,))
            out[i] = state[:, None] if unbatched else state
        return out

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
