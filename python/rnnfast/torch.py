"""PyTorch adapter: ``torch.nn.RNN``, ``LSTM``, ``GRU`` and their cells on rnnfast's kernels.

``rnnfast.torch.LSTM`` is a ``torch.nn.LSTM`` (a subclass: the same constructor arguments and
defaults, parameter names, shapes, initialisation, ``state_dict`` and repr) whose ``forward``
runs ``rnnfast.functional.forward_layers`` on the parameter tensors' own memory, through a
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
- The module's hyper-parameters (num_layers, dropout, ...) are read at every call.

This module imports torch; ``import rnnfast`` does not import it.
"""


import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import functional

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _numpy(tensor):
    """A NumPy view of a CPU tensor's memory (no copy); None stays None."""
    return None if tensor is None else tensor.detach().numpy()


def _tensor(array):
    """A tensor on a NumPy array's memory (no copy); None stays None."""
    return None if array is None else torch.from_numpy(array)


class _LayerFunction(torch.autograd.Function):
    """``rnnfast.functional.forward_layers`` as an autograd Function: input x [T, B, I],
    initial states h0, c0 (None: zeros; c0 only for the LSTM), the parameters ``weights``
    under PyTorch's ``names``; ``options``: forward_layers's cell and keyword arguments (the
    stack, dropout, generator, training: save what backward needs). Returns (output, h_n), or
    (output, h_n, c_n) for the LSTM."""

    @staticmethod
    def forward(ctx, options, names, lengths, x, h0, c0, *weights):
        cell, options = options
        hx = None if h0 is None else (_numpy(h0), _numpy(c0)) if c0 is not None else _numpy(h0)
        params = dict(zip(names, map(_numpy, weights)))
        out, h_n, c_n, saved = functional.forward_layers(cell, _numpy(x), params, hx=hx,
                                                         lengths=lengths, **options)
        outputs = tuple(torch.from_numpy(a) for a in (out, h_n, c_n) if a is not None)
        ctx.saved, ctx.names, ctx.has_hx = saved, names, h0 is not None
        # The kernels keep views of x, the weights and the output for backward: saving them
        # here too makes autograd refuse a backward after one of them was modified in place.
        ctx.save_for_backward(x, outputs[0], *weights)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *grad_states):
        ctx.saved_tensors  # noqa: B018  (raises if something saved was modified in place)
        grad_hx = tuple(map(_numpy, grad_states))
        grad_x, grad_h0, grad_c0, grads = functional.backward_layers(
            ctx.saved, _numpy(grad_out), grad_hx if len(grad_hx) == 2 else grad_hx[0])
        if not ctx.has_hx:
            grad_h0 = grad_c0 = None
        return (None, None, None, _tensor(grad_x), _tensor(grad_h0), _tensor(grad_c0),
                *(torch.from_numpy(grads[name]) for name in ctx.names))


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
    """What the modules share: the call of rnnfast.functional.forward_layers through
    _LayerFunction, with the module's options (read at every call)."""

    def _run(self, x, hx, lengths, names, weights, num_layers=1, bidirectional=False,
             dropout=0.0):
        """The kernels on time-major batched x [T, B, I] and hx (a tensor, an LSTM's tuple, or
        None): returns (output, h_n) or (output, (h_n, c_n))."""
        h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
        _check_tensors(x, h0, c0, weights)
        dropout = dropout if self.training and num_layers > 1 else 0.0
        # Dropout masks come from a numpy generator seeded by PyTorch's default generator.
        generator = (np.random.default_rng(int(torch.randint(2**62, (), dtype=torch.int64)))
                     if dropout > 0 else None)
        # What backward needs is saved only when a gradient may be asked for (in eval mode
        # too, as torch.nn); not under torch.no_grad().
        tensors = [t for t in (x, h0, c0, *weights) if t is not None]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        options = (self._rnnfast_cell(), {
            "num_layers": num_layers, "bidirectional": bidirectional, "dropout": dropout,
            "generator": generator, "training": needs_grad})
        out, *states = _LayerFunction.apply(options, names, lengths, x, h0, c0, *weights)
        return out, tuple(states) if len(states) == 2 else states[0]

    def _rnnfast_cell(self):
        """The rnnfast.cell_registry name of this module's cell."""
        if isinstance(self, (torch.nn.LSTM, torch.nn.LSTMCell)):
            return "lstm"
        if isinstance(self, (torch.nn.GRU, torch.nn.GRUCell)):
            return "gru"
        return "rnn_" + self.nonlinearity


def _map_hx(hx, fn):
    """fn applied to hx, a tensor or an LSTM's tuple of two (None stays None)."""
    return None if hx is None else tuple(map(fn, hx)) if isinstance(hx, tuple) else fn(hx)


def _doc(torch_class):
    return (f"torch.nn.{torch_class.__name__} on rnnfast's kernels (see rnnfast.torch).\n\n"
            f"{torch_class.__doc__}")


class _Recurrent(_Kernels):
    """forward of RNN, LSTM and GRU, over torch.nn.RNNBase's attributes."""

    def _stack(self):
        return {"num_layers": self.num_layers, "bidirectional": self.bidirectional,
                "dropout": self.dropout}

    def forward(self, input, hx=None):
        """As torch.nn's forward (input a Tensor or a PackedSequence), on rnnfast's kernels."""
        weights = [getattr(self, name) for name in self._flat_weights_names]
        if isinstance(input, PackedSequence):
            # Padded with lengths, in the original batch order (as hx and h_n are).
            x, lengths = pad_packed_sequence(input)
            out, states = self._run(x, hx, lengths.numpy(), self._flat_weights_names, weights,
                                    **self._stack())
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
                                    None, self._flat_weights_names, weights, **self._stack())
            return out.squeeze(1), _map_hx(states, lambda h: h.squeeze(1))
        x = input.transpose(0, 1) if self.batch_first else input
        out, states = self._run(x, hx, None, self._flat_weights_names, weights, **self._stack())
        return out.transpose(0, 1) if self.batch_first else out, states


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


def _subclass(forward, torch_class):
    """The rnnfast class of a torch.nn class: a subclass of it whose forward is ``forward``'s."""
    return type(torch_class.__name__, (forward, torch_class),
                {"__doc__": _doc(torch_class), "__module__": __name__})


RNN, LSTM, GRU = (_subclass(_Recurrent, c) for c in (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU))
RNNCell, LSTMCell, GRUCell = (_subclass(_Cell, c) for c in (torch.nn.RNNCell, torch.nn.LSTMCell,
                                                            torch.nn.GRUCell))
# torch.nn class -> its rnnfast subclass, for convert()
_REPLACEMENTS = {cls.__bases__[1]: cls for cls in (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell)}


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
