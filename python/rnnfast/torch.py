"""PyTorch adapter: ``torch.nn.RNN``, ``LSTM``, ``GRU`` and their cells on rnnfast's kernels.

``rnnfast.torch.LSTM`` is a ``torch.nn.LSTM`` (a subclass: the same constructor arguments and
defaults, parameter names, shapes, initialisation, ``state_dict`` and repr) whose ``forward``
runs the rnnfast layers (``rnnfast.layers``) on the parameter tensors' own memory, through a
``torch.autograd.Function`` that gives the gradients for the input, hx and every parameter.
Likewise ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell`` and ``RNNCell``; ``convert(model)`` switches
the ``torch.nn`` ones inside a model over in place::

    import rnnfast.torch
    model = rnnfast.torch.convert(model)   # the same weights, now on rnnfast's kernels

- ``forward(input, hx=None)`` takes what the ``torch.nn`` class takes (a Tensor, batched or
  unbatched, batch_first or not, or a ``PackedSequence``) and returns the same outputs.
- CPU tensors of float32 or float64 only. CUDA tensors raise ``NotImplementedError``: the CUDA
  backend is not merged yet.
- Dropout (training mode, between stacked layers, as ``torch.nn``) draws its masks with
  rnnfast's generator, seeded from PyTorch's (so ``torch.manual_seed`` makes it reproducible),
  but not the same masks as ``torch.nn`` draws: results with dropout match torch.nn in
  distribution, not bit for bit.
- Double backward is not supported: differentiating the gradients raises a RuntimeError.
- The module's hyper-parameters (num_layers, dropout, ...) are read when a dtype is first used;
  changing them afterwards is not supported.

This module imports torch; ``import rnnfast`` does not import it.
"""

import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import layers as _layers

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _numpy(tensor):
    """A NumPy view of a CPU tensor's memory (no copy); None stays None."""
    return None if tensor is None else tensor.detach().numpy()


def _tensor(array):
    """A tensor on a NumPy array's memory (no copy); None stays None."""
    return None if array is None else torch.from_numpy(array)


class _LayerFunction(torch.autograd.Function):
    """An rnnfast layer (``rnnfast.layers``, built time-major) as an autograd Function: input x
    [T, B, I], initial states h0, c0 (None: zeros; c0 only for the LSTM), the parameters
    ``weights`` under the layer's ``names``; ``training``: save what backward needs;
    ``dropout_rng``: see the layer's ``_forward``. Returns (output, h_n), or
    (output, h_n, c_n) for the LSTM."""

    @staticmethod
    def forward(ctx, layer, names, training, dropout_rng, lengths, x, h0, c0, *weights):
        lstm = layer._cell == "lstm"
        hx = None if h0 is None else (_numpy(h0), _numpy(c0)) if lstm else _numpy(h0)
        params = dict(zip(names, map(_numpy, weights)))
        out, states, saved = layer._forward(params, training, dropout_rng, _numpy(x), hx,
                                            lengths, None)
        outputs = tuple(map(torch.from_numpy, (out, *(states if lstm else (states,)))))
        ctx.layer, ctx.names, ctx.saved, ctx.has_hx = layer, names, saved, h0 is not None
        # The kernels keep views of x, the weights and the output for backward: saving them
        # here too makes autograd refuse a backward after one of them was modified in place.
        ctx.save_for_backward(x, outputs[0], *weights)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *grad_states):
        ctx.saved_tensors  # noqa: B018  (raises if something saved was modified in place)
        lstm = ctx.layer._cell == "lstm"
        grad_hx = tuple(map(_numpy, grad_states))
        grad_x, grad_hx0, grads = ctx.layer._backward(ctx.saved, _numpy(grad_out),
                                                      grad_hx if lstm else grad_hx[0])
        grad_h0, grad_c0 = grad_hx0 if lstm else (grad_hx0, None)
        if not ctx.has_hx:
            grad_h0 = grad_c0 = None
        return (None, None, None, None, None, _tensor(grad_x), _tensor(grad_h0),
                _tensor(grad_c0), *(torch.from_numpy(grads[name]) for name in ctx.names))


def _check_tensors(input, h0, c0, weights):
    """The dtype and device checks of the adapter, naming the argument at fault."""
    for name, tensor in (("input", input), ("hx", h0), ("hx", c0), ("parameters", weights[0])):
        if tensor is not None and tensor.device.type != "cpu":
            raise NotImplementedError(
                f"{name} is on {tensor.device}: rnnfast.torch runs on CPU tensors only for "
                "now (the CUDA backend is not merged yet); use torch.nn's module on the GPU")
    if weights[0].dtype not in _NUMPY_DTYPES:
        raise TypeError(f"rnnfast computes in float32 or float64, not in {weights[0].dtype}: "
                        "convert the module with .float() or .double()")
    if input.dtype != weights[0].dtype:
        raise TypeError(f"input has dtype {input.dtype}, but the module's parameters are "
                        f"{weights[0].dtype}")


class _Kernels:
    """What the modules share: the rnnfast layer that computes them, one per dtype, made on
    first use, and the call of it through _LayerFunction."""

    def _kernel_layer(self, dtype):
        layers = self.__dict__.setdefault("_rnnfast_layers", {})
        if dtype not in layers:
            with warnings.catch_warnings():  # torch.nn has already warned about the options
                warnings.simplefilter("ignore")
                layer = self._make_layer(_NUMPY_DTYPES[dtype])
            # Its own parameters are never used: every call passes the module's tensors.
            layer._params = None
            layers[dtype] = layer
        return layers[dtype]

    def _run(self, x, hx, lengths, names, weights):
        """The kernels on time-major batched x [T, B, I] and hx (a tensor, an LSTM's tuple, or
        None): returns (output, h_n) or (output, (h_n, c_n))."""
        h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
        _check_tensors(x, h0, c0, weights)
        layer = self._kernel_layer(x.dtype)
        dropout = self.training and layer.dropout > 0 and layer.num_layers > 1
        # Dropout masks come from a numpy generator seeded by PyTorch's default generator.
        rng = (np.random.default_rng(int(torch.randint(2**62, (), dtype=torch.int64)))
               if dropout else None)
        # What backward needs is saved only when a gradient may be asked for (in eval mode
        # too, as torch.nn); not under torch.no_grad().
        tensors = [t for t in (x, h0, c0, *weights) if t is not None]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        out, *states = _LayerFunction.apply(layer, names, needs_grad, rng, lengths, x, h0, c0,
                                            *weights)
        return out, tuple(states) if len(states) == 2 else states[0]


def _map_hx(hx, fn):
    """fn applied to hx, a tensor or an LSTM's tuple of two (None stays None)."""
    return None if hx is None else tuple(map(fn, hx)) if isinstance(hx, tuple) else fn(hx)


def _doc(torch_class):
    return (f"torch.nn.{torch_class.__name__} on rnnfast's kernels (see rnnfast.torch).\n\n"
            f"{torch_class.__doc__}")


class _Recurrent(_Kernels):
    """forward of RNN, LSTM and GRU, over torch.nn.RNNBase's attributes."""

    def _layer_options(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, dropout=self.dropout,
                    bidirectional=self.bidirectional)

    def forward(self, input, hx=None):
        """As torch.nn's forward (input a Tensor or a PackedSequence), on rnnfast's kernels."""
        weights = [getattr(self, name) for name in self._flat_weights_names]
        if isinstance(input, PackedSequence):
            # Padded with lengths, in the original batch order (as hx and h_n are).
            x, lengths = pad_packed_sequence(input)
            out, states = self._run(x, hx, lengths.numpy(), self._flat_weights_names, weights)
            # Packed back with the input's own batch_sizes and indices, as torch.nn does.
            if input.sorted_indices is not None:
                out = out.index_select(1, input.sorted_indices)
            valid = torch.arange(out.shape[1]) < input.batch_sizes[:, None]  # [T, B]
            return PackedSequence(out[valid], input.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), states
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 2-D (unbatched) or 3-D, not of shape "
                             f"{tuple(input.shape)}")
        if input.dim() == 2:  # unbatched: a batch of one
            out, states = self._run(input.unsqueeze(1), _map_hx(hx, lambda h: h.unsqueeze(1)),
                                    None, self._flat_weights_names, weights)
            return out.squeeze(1), _map_hx(states, lambda h: h.squeeze(1))
        x = input.transpose(0, 1) if self.batch_first else input
        out, states = self._run(x, hx, None, self._flat_weights_names, weights)
        return out.transpose(0, 1) if self.batch_first else out, states


class RNN(_Recurrent, torch.nn.RNN):
    __doc__ = _doc(torch.nn.RNN)

    def _make_layer(self, dtype):
        return _layers.RNN(**self._layer_options(), nonlinearity=self.nonlinearity, dtype=dtype)


class LSTM(_Recurrent, torch.nn.LSTM):
    __doc__ = _doc(torch.nn.LSTM)

    def _make_layer(self, dtype):
        return _layers.LSTM(**self._layer_options(), proj_size=self.proj_size, dtype=dtype)


class GRU(_Recurrent, torch.nn.GRU):
    __doc__ = _doc(torch.nn.GRU)

    def _make_layer(self, dtype):
        return _layers.GRU(**self._layer_options(), dtype=dtype)


class _Cell(_Kernels):
    """forward of the cells: one step (T = 1) of a one-layer rnnfast layer whose parameters
    are the cell's (the cell's weight_ih is the layer's weight_ih_l0, and so on)."""

    def forward(self, input, hx=None):
        """As torch.nn's cell: input [B, input_size] or [input_size] (unbatched), on
        rnnfast's kernels."""
        if input.dim() not in (1, 2):
            raise ValueError(f"input must be 1-D (unbatched) or 2-D, not of shape "
                             f"{tuple(input.shape)}")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
        batched = input.dim() == 2
        # To the layer's shapes: x [1, B, I], states [1, B, H] (B = 1 when unbatched).
        grow = lambda t: (t if batched else t.unsqueeze(0)).unsqueeze(0)  # noqa: E731
        _, states = self._run(grow(input), _map_hx(hx, grow), None,
                              [name + "_l0" for name in names],
                              [getattr(self, name) for name in names])
        return _map_hx(states, lambda t: t[0] if batched else t[0, 0])


class RNNCell(_Cell, torch.nn.RNNCell):
    __doc__ = _doc(torch.nn.RNNCell)

    def _make_layer(self, dtype):
        return _layers.RNN(self.input_size, self.hidden_size, nonlinearity=self.nonlinearity,
                           bias=self.bias, dtype=dtype)


class LSTMCell(_Cell, torch.nn.LSTMCell):
    __doc__ = _doc(torch.nn.LSTMCell)

    def _make_layer(self, dtype):
        return _layers.LSTM(self.input_size, self.hidden_size, bias=self.bias, dtype=dtype)


class GRUCell(_Cell, torch.nn.GRUCell):
    __doc__ = _doc(torch.nn.GRUCell)

    def _make_layer(self, dtype):
        return _layers.GRU(self.input_size, self.hidden_size, bias=self.bias, dtype=dtype)


_REPLACEMENTS = {torch.nn.RNN: RNN, torch.nn.LSTM: LSTM, torch.nn.GRU: GRU,
                 torch.nn.RNNCell: RNNCell, torch.nn.LSTMCell: LSTMCell,
                 torch.nn.GRUCell: GRUCell}


def convert(model):
    """Switches every torch.nn.RNN, LSTM, GRU (and RNNCell, LSTMCell, GRUCell) inside ``model``
    (recursively, ``model`` included) to rnnfast's, in place, and returns ``model``.

    The modules stay the same objects with the same parameter tensors (same values, dtype,
    device, requires_grad; an optimizer made before keeps working): only their class changes,
    to the rnnfast subclass whose forward runs on rnnfast's kernels. Subclasses of the torch.nn
    classes are left alone (they may have their own forward)."""
    for module in model.modules():
        if type(module) in _REPLACEMENTS:
            module.__class__ = _REPLACEMENTS[type(module)]
    return model
