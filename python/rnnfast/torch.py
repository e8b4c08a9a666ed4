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


import functools
import types

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import functional

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _numpy(tensor):
    """A NumPy view of a CPU tensor's memory (no copy); None stays None."""
    return None if tensor is None else tensor.detach().numpy()


# The recurrent ops of torch._VF that torch.nn's forward calls, and the cell ops with the cell
# they run.
_CELL_OPS = {"rnn_tanh_cell": "rnn_tanh", "rnn_relu_cell": "rnn_relu", "lstm_cell": "lstm",
             "gru_cell": "gru"}


class _Call:
    """One call of a recurrent op of torch._VF (``torch._VF.lstm`` & co., with the arguments
    torch.nn's forward gives it), split into its tensors, ``(x, *states, *weights)``, and the
    rest. ``save``: keep what backward needs (a gradient may be asked for)."""

    def __init__(self, op, args, save):
        self.op, self.save = op, save
        # Two overloads: (input, hx, params, has_biases, num_layers, dropout, train,
        # bidirectional, batch_first) and, packed, (data, batch_sizes, hx, params, ...).
        self.packed = isinstance(args[3], (list, tuple))
        if self.packed:
            (x, self.batch_sizes, hx, weights, self.has_biases, self.num_layers, self.dropout,
             self.train, self.bidirectional) = args
            self.batch_first = False
        else:
            (x, hx, weights, self.has_biases, self.num_layers, self.dropout, self.train,
             self.bidirectional, self.batch_first) = args
        states = tuple(hx) if isinstance(hx, (list, tuple)) else (hx,)
        self.state_count = len(states)
        self.tensors = (x, *states, *weights)

    def torch_args(self, tensors):
        """The arguments of torch._VF's op, with ``tensors`` in place of the call's own."""
        x, states = tensors[0], tensors[1:1 + self.state_count]
        weights = list(tensors[1 + self.state_count:])
        hx = states if self.state_count == 2 else states[0]
        rest = (weights, self.has_biases, self.num_layers, self.dropout, self.train,
                self.bidirectional)
        return (x, self.batch_sizes, hx, *rest) if self.packed else (x, hx, *rest,
                                                                      self.batch_first)

    def dropout_between_layers(self):
        return self.dropout if self.train and self.num_layers > 1 else 0.0

    def param_names(self):
        """PyTorch's names of the weights, in torch.nn's _flat_weights order."""
        directions = ("", "_reverse") if self.bidirectional else ("",)
        per_direction = (len(self.tensors) - 1 - self.state_count) // (
            self.num_layers * len(directions))
        kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.has_biases else [])
        kinds += ["weight_hr"] if per_direction > len(kinds) else []
        return [f"{kind}_l{k}{d}" for k in range(self.num_layers) for d in directions
                for kind in kinds]


def _run_kernels(call):
    """rnnfast.functional.forward_layers on the call's tensors (NumPy views of their memory):
    returns the op's outputs as torch._VF's (output, h_n[, c_n]) and the training context."""
    x, lengths = call.tensors[0], None
    if call.packed:  # padded [T, B, I], sorted by decreasing length as the batch_sizes are
        x, lengths = pad_packed_sequence(PackedSequence(x, call.batch_sizes))
        lengths = lengths.numpy()
    elif call.batch_first:
        x = x.transpose(0, 1)
    states = tuple(map(_numpy, call.tensors[1:1 + call.state_count]))
    weights = call.tensors[1 + call.state_count:]
    dropout = call.dropout_between_layers()
    # Dropout masks come from a numpy generator seeded by PyTorch's default generator.
    generator = (np.random.default_rng(int(torch.randint(2**62, (), dtype=torch.int64)))
                 if dropout > 0 else None)
    out, h_n, c_n, saved = functional.forward_layers(
        call.op, _numpy(x),
        dict(zip(call.param_names(), map(_numpy, weights))),
        hx=states if len(states) == 2 else states[0], lengths=lengths,
        num_layers=call.num_layers, bidirectional=call.bidirectional, dropout=dropout,
        generator=generator, training=call.save)
    out = torch.from_numpy(out)
    if call.packed:  # back to the packed layout: the valid steps, time-major
        out = out[torch.arange(out.shape[1]) < call.batch_sizes[:, None]]
    elif call.batch_first:
        out = out.transpose(0, 1)
    return (out, *(torch.from_numpy(a) for a in (h_n, c_n) if a is not None)), saved


def _kernel_backward(call, saved, grad_out, grad_states):
    """rnnfast.functional.backward_layers, in the layouts of the call: the gradients of
    (x, *states, *weights)."""
    if call.packed:
        grad_out = pad_packed_sequence(PackedSequence(grad_out, call.batch_sizes))[0]
    elif call.batch_first:
        grad_out = grad_out.transpose(0, 1)
    grad_hx = tuple(map(_numpy, grad_states))
    grad_x, grad_h0, grad_c0, grads = functional.backward_layers(
        saved, _numpy(grad_out), grad_hx if len(grad_hx) == 2 else grad_hx[0])
    grad_x = torch.from_numpy(grad_x)
    if call.packed:
        grad_x = grad_x[torch.arange(grad_x.shape[1]) < call.batch_sizes[:, None]]
    elif call.batch_first:
        grad_x = grad_x.transpose(0, 1)
    states = (grad_h0, grad_c0)[:call.state_count]
    return (grad_x, *map(torch.from_numpy, states),
            *(torch.from_numpy(grads[name]) for name in call.param_names()))


def _differentiable_backward(call, tensors, grads, needs_grad):
    """The gradients of (x, *states, *weights) as differentiable torch operations, for a
    double backward (create_graph=True): torch's own op run again on the same tensors, and
    torch.autograd.grad through it with create_graph."""
    if call.dropout_between_layers() > 0:
        # torch's op would draw other dropout masks than the forward's.
        raise RuntimeError("rnnfast.torch cannot differentiate twice through dropout between "
                           "layers; use dropout=0 or eval mode for a double backward")
    with torch.enable_grad():
        outputs = getattr(torch._VF, call.op)(*call.torch_args(tensors))
    wanted = [t for t, needed in zip(tensors, needs_grad) if needed]
    got = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True,
                                   allow_unused=True))
    return tuple(next(got) if needed else None for needed in needs_grad)


class _Recurrence(torch.autograd.Function):
    """A recurrent op of torch._VF on rnnfast's kernels, as an autograd Function of the call's
    tensors: the fused backward kernels, or with create_graph=True a backward made of
    differentiable torch operations."""

    @staticmethod
    def forward(ctx, call, *tensors):
        outputs, ctx.saved = _run_kernels(call)
        ctx.call = call
        # The kernels keep views of x, the weights and the output for backward: saving them
        # here too makes autograd refuse a backward after one of them was modified in place,
        # and gives a double backward the tensors to run torch's op on.
        ctx.save_for_backward(*tensors, outputs[0])
        return outputs

    @staticmethod
    def backward(ctx, grad_out, *grad_states):
        tensors = ctx.saved_tensors[:-1]  # (raises if something saved was modified in place)
        if torch.is_grad_enabled():  # create_graph=True
            return None, *_differentiable_backward(ctx.call, tensors, (grad_out, *grad_states),
                                                   ctx.needs_input_grad[1:])
        return None, *_kernel_backward(ctx.call, ctx.saved, grad_out, grad_states)


def _check_device_and_dtype(tensors):
    """What rnnfast's kernels need beyond torch's own checks: CPU tensors of float32 or
    float64, all of one dtype."""
    for tensor in tensors:
        if tensor.device.type != "cpu":
            raise NotImplementedError(
                f"a tensor is on {tensor.device}: rnnfast.torch runs on CPU tensors only for "
                "now (the CUDA backend is not merged yet); use torch.nn's module on the GPU")
    dtype = tensors[-1].dtype  # a weight's
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(f"rnnfast computes in float32 or float64, not in {dtype}: convert the "
                        "module with .float() or .double()")
    for tensor in tensors:
        if tensor.dtype != dtype:  # torch raises a RuntimeError from its matrix products
            raise RuntimeError(f"expected every input and state to have the parameters' dtype "
                               f"{dtype}, but one is {tensor.dtype}")


def _recurrent(op, *args):
    """torch._VF's recurrent op ``op`` (lstm, gru, rnn_tanh, rnn_relu) on rnnfast's kernels:
    called with torch._VF's arguments, returns what it returns."""
    tensors = _Call(op, args, save=False).tensors
    if min(t.numel() for t in tensors) == 0:
        # Empty inputs or states: torch's op (its errors, and its empty results).
        return getattr(torch._VF, op)(*args)
    _check_device_and_dtype(tensors)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    try:
        return _Recurrence.apply(_Call(op, args, save), *tensors)
    except (ValueError, TypeError) as error:
        # rnnfast.functional's argument checks (what torch.nn's forward leaves to torch._VF,
        # such as hx's batch with a PackedSequence): torch._VF raises RuntimeErrors.
        raise RuntimeError(str(error)) from error


def _check_cell_sizes(op, input, states, weight_ih, weight_hh):
    """The checks of PyTorch's cell ops (aten/src/ATen/native/RNN.cpp), in their order, with
    their messages."""
    if op == "lstm_cell" and len(states) != 2:
        raise RuntimeError("lstm_cell expects two hidden states")
    if input.size(1) != weight_ih.size(1):
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected "
                           f"{weight_ih.size(1)}")
    for label, state in enumerate(states):
        if input.size(0) != state.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{label} "
                               f"batch size {state.size(0)}")
        if state.size(1) != weight_hh.size(1):
            raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got "
                               f"{state.size(1)}, expected {weight_hh.size(1)}")


def _cell(op, input, hx, weight_ih, weight_hh, bias_ih, bias_hh):
    """torch._VF's cell op ``op`` on rnnfast's kernels: one step of a one-layer op of T = 1,
    with the cell's parameters as that layer's."""
    states = tuple(hx) if isinstance(hx, (list, tuple)) else (hx,)
    _check_cell_sizes(op, input, states, weight_ih, weight_hh)
    if input.numel() == 0 or weight_hh.numel() == 0:  # an empty batch, hidden_size=0
        return getattr(torch._VF, op)(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    weights = [w for w in (weight_ih, weight_hh, bias_ih, bias_hh) if w is not None]
    step = [s.unsqueeze(0) for s in states]
    _, *final = _recurrent(_CELL_OPS[op], input.unsqueeze(0),
                           step if len(step) == 2 else step[0], weights, bias_ih is not None,
                           1, 0.0, False, False, False)
    return (final[0][0], final[1][0]) if len(final) == 2 else final[0][0]


class _VF:
    """What torch.nn's forward methods call as ``_VF``, on rnnfast's kernels."""


for _op in ("rnn_tanh", "rnn_relu", "lstm", "gru"):
    setattr(_VF, _op, staticmethod(functools.partial(_recurrent, _op)))
for _op in _CELL_OPS:
    setattr(_VF, _op, staticmethod(functools.partial(_cell, _op)))


def _doc(torch_class):
    return (f"torch.nn.{torch_class.__name__} on rnnfast's kernels (see rnnfast.torch).\n\n"
            f"{torch_class.__doc__}")


def _subclass(torch_class):
    """The rnnfast class of a torch.nn class: a subclass of it whose forward is torch.nn's own
    code (its argument checks, errors, defaults and layouts, line for line) with rnnfast's _VF
    in place of torch._VF, the module where that code finds its kernels."""
    forward = torch_class.forward
    ours = types.FunctionType(forward.__code__, {**forward.__globals__, "_VF": _VF},
                              forward.__name__, forward.__defaults__, forward.__closure__)
    ours.__doc__ = f"As torch.nn.{torch_class.__name__}.forward, on rnnfast's kernels."
    return type(torch_class.__name__, (torch_class,),
                {"forward": ours, "__doc__": _doc(torch_class), "__module__": __name__})


RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell = map(_subclass, (
    torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNNCell, torch.nn.LSTMCell,
    torch.nn.GRUCell))
# torch.nn class -> its rnnfast subclass, for convert()
_REPLACEMENTS = {cls.__bases__[0]: cls for cls in (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell)}


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
