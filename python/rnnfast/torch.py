"""PyTorch adapter: ``torch.nn.RNN``, ``LSTM``, ``GRU`` and their cells on rnnfast's kernels.

``rnnfast.torch.LSTM`` is a ``torch.nn.LSTM`` (a subclass: the same constructor arguments and
defaults, parameter names, shapes, initialisation, ``state_dict`` and repr) whose ``forward``
is torch.nn's own code run with this module's ``_VF`` in place of ``torch._VF``: torch.nn's
checks, errors, defaults and layouts, and rnnfast's kernels where torch.nn calls torch's
(``rnnfast.functional.forward_layers`` on the tensors' own memory). Likewise ``GRU``, ``RNN``,
``LSTMCell``, ``GRUCell`` and ``RNNCell`` (a cell runs as a one-step layer); ``convert(model)``
switches the ``torch.nn`` ones inside a model over in place::

    import rnnfast.torch
    model = rnnfast.torch.convert(model)   # the same weights, now on rnnfast's kernels

- The kernels are the custom operators ``rnnfast::recurrent`` and ``rnnfast::recurrent_backward``
  (fake implementations, registered autograd), so that torch.compile (fullgraph) and
  torch.export record them as single nodes.
- CPU and CUDA tensors of float32, float64, float16 or bfloat16 (``module.half()``,
  ``module.bfloat16()``; bfloat16 needs ml_dtypes: ``rnnfast[bf16]``). The 16-bit types
  compute as ``rnnfast.LSTM(dtype="float16")`` and ``dtype="bfloat16"`` do
  (``rnnfast._dtypes``): products of operands rounded to the 16-bit type, float32 sums and
  float32 gate math; outputs, states and every gradient come back in the module's dtype, as
  torch.nn returns them (the weight and bias gradients computed in float32, then rounded).
  Empty inputs and states (a batch of 0, hidden_size=0) go to torch's own op.
- CUDA tensors (needs CuPy, ``rnnfast[cuda12]``, and rnnfast's CUDA module) reach the CUDA
  backend as CuPy arrays through DLPack, without a copy, and run on torch's current stream
  (CuPy's current stream within the call); bfloat16 ones, a dtype CuPy lacks, as float32
  copies made by torch, computed as bfloat16 (``_dtypes.bfloat16_in_float32``: the same
  operands rounded, the same values stored as a bfloat16 array's), the results rounded back by
  torch. The arrays rnnfast allocates within the call come from torch's caching allocator
  (on torch's current stream; they count in ``torch.cuda.memory_allocated``), not CuPy's pool,
  and go back to it when freed, a result with its tensor; like any tensor's memory, a result's
  is returned to the pool of the stream it was made on (use it on another stream only after
  synchronising with that one: ``record_stream`` does not reach memory that came through
  DLPack). Not yet run on a GPU.
- Dropout (training mode, between stacked layers, as ``torch.nn``) draws its masks with
  rnnfast's generator, seeded from PyTorch's (so ``torch.manual_seed`` makes it reproducible),
  but not the same masks as ``torch.nn`` draws: results with dropout match torch.nn in
  distribution, not bit for bit.
- A double backward (create_graph=True), batched gradients and torch.func transforms run
  torch's own op (differentiable, batchable) for that part; through dropout they raise.
- The module's hyper-parameters (num_layers, dropout, ...) are read at every call.
- Threads: once this module is imported, rnnfast's kernels run on torch's OpenMP threads
  (``share_torch_threads``), as torch's own parallel ops do, with rnnfast's thread count
  (``rnnfast.set_num_threads``, ``RNNFAST_NUM_THREADS``). Its own threads would compete for
  the cores with torch's, which busy-wait for a while after each of torch's parallel ops: on 2
  cores that cost a training loop 8-32% of a step (benchmarks/torch_training_loop.py; the
  README).

This module imports torch; ``import rnnfast`` does not import it.
"""


import contextlib
import functools
import importlib.abc
import importlib.machinery
import itertools
import os
import sys
import types
import typing
import weakref

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _cpu, _devices, _dtypes, backends, functional

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert",
           "share_torch_threads"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64,
                 torch.float16: np.float16}
if _dtypes.BFLOAT16 is not None:  # ml_dtypes (rnnfast[bf16]) installed
    _NUMPY_DTYPES[torch.bfloat16] = _dtypes.BFLOAT16


def _array(tensor):
    """A NumPy view of a CPU tensor's memory (no copy; bfloat16 as ml_dtypes.bfloat16), or a
    CuPy view of a CUDA tensor's (DLPack, no copy; bfloat16, which CuPy lacks, as a float32 copy
    made by torch, computed inside _dtypes.bfloat16_in_float32: _on_torch_resources); None stays
    None."""
    if tensor is None:
        return None
    if tensor.is_cuda:  # (3x as fast as asking tensor.device.type)
        tensor = tensor.detach()
        return _devices.cupy().from_dlpack(
            tensor.float() if tensor.dtype == torch.bfloat16 else tensor)
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16 of its own: same bits
        return tensor.detach().view(torch.int16).numpy().view(_dtypes.BFLOAT16)
    return tensor.detach().numpy()


def _tensor(array, dtype):
    """A tensor of ``dtype`` from a NumPy or CuPy array: its memory where the dtypes agree, else
    converted (the float32 weight gradients of 16-bit weights; on CUDA, every float32 result of a
    bfloat16 call, whose values but the weight gradients' are bfloat16 ones already)."""
    if backends.is_cupy_array(array):
        tensor = torch.from_dlpack(array)
    elif _dtypes.is_bfloat16(array.dtype):
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


# The cell ops of torch._VF, with the recurrent op (of torch._VF and rnnfast's) of their cell.
_CELL_OPS = {"rnn_tanh_cell": "rnn_tanh", "rnn_relu_cell": "rnn_relu", "lstm_cell": "lstm",
             "gru_cell": "gru"}


class _Call(typing.NamedTuple):
    """What a call of a recurrent op of torch._VF (``torch._VF.lstm`` & co.) passes besides its
    tensors (x, *states, *weights); the same as the arguments of the custom ops below."""

    op: str
    state_count: int
    batch_sizes: torch.Tensor | None  # of a PackedSequence (then x is its data)
    has_biases: bool
    num_layers: int
    dropout: float
    train: bool
    bidirectional: bool
    batch_first: bool

    @classmethod
    def parse(cls, op, args):
        """(call, tensors) of torch._VF's ``op`` called with ``args``."""
        # Two overloads: (input, hx, params, has_biases, num_layers, dropout, train,
        # bidirectional, batch_first) and, packed, (data, batch_sizes, hx, params, ...).
        if isinstance(args[3], (list, tuple)):
            x, batch_sizes, hx, weights, *rest = args
            rest.append(False)
        else:
            x, hx, weights, *rest = args
            batch_sizes = None
        states = tuple(hx) if isinstance(hx, (list, tuple)) else (hx,)
        return cls(op, len(states), batch_sizes, *rest), [x, *states, *weights]

    def torch_args(self, tensors):
        """The arguments of torch._VF's op, with ``tensors`` in place of the call's own."""
        x, states = tensors[0], tensors[1:1 + self.state_count]
        weights = list(tensors[1 + self.state_count:])
        hx = tuple(states) if self.state_count == 2 else states[0]
        rest = (weights, self.has_biases, self.num_layers, self.dropout, self.train,
                self.bidirectional)
        if self.batch_sizes is not None:
            return (x, self.batch_sizes, hx, *rest)
        return (x, hx, *rest, self.batch_first)

    def dropout_between_layers(self):
        return self.dropout if self.train and self.num_layers > 1 else 0.0

    def param_names(self, weight_count):
        """PyTorch's names of the weights, in torch.nn's _flat_weights order."""
        per_layer = (4 if self.has_biases else 2) * (2 if self.bidirectional else 1)
        return _flat_param_names(self.num_layers, self.bidirectional, self.has_biases,
                                 weight_count > per_layer * self.num_layers)


@functools.cache
def _flat_param_names(num_layers, bidirectional, has_biases, projection):
    """rnnfast.functional.param_names as one tuple, torch.nn's _flat_weights order."""
    return tuple(name for names in functional.param_names(num_layers, bidirectional, has_biases,
                                                          projection)
                 for name in names.values())


def _to_padded(call, a):
    """A tensor in the call's layout (packed data, batch-first) as time-major [T, B, F]."""
    if call.batch_sizes is not None:
        return pad_packed_sequence(PackedSequence(a, call.batch_sizes))[0]
    return a.transpose(0, 1) if call.batch_first else a


def _from_padded(call, a):
    """A time-major [T, B, F] tensor in the call's layout, contiguous (as the fake
    implementations say)."""
    if call.batch_sizes is not None:  # the valid steps, time-major
        return a[torch.arange(a.shape[1]) < call.batch_sizes[:, None]]
    return a.transpose(0, 1).contiguous() if call.batch_first else a


def _on_torch_resources(tensor):
    """A context in which rnnfast.functional uses torch's resources for a call on ``tensor``'s
    device. CUDA: CuPy (and so rnnfast's CUDA backend) runs on the tensor's GPU and on torch's
    current stream there, so that the DLPack exchanges and the kernels are ordered with torch's
    own work, without synchronising, and allocates from torch's caching allocator
    (_torch_allocator); a bfloat16 call computes its float32 copies (_array) as bfloat16. CPU:
    the large GEMMs run on torch's (MKL, on the OpenMP threads that rnnfast's kernels share:
    share_torch_threads), 1.2-1.5x faster than rnnfast's own at T*B = 6400 and 1.4-2.4x at
    T*B = 800 on the development machine; but on rnnfast's own where torch's would round float32
    operands (_torch_multiplies_float32_exactly)."""
    if not tensor.is_cuda:
        return backends.cpu_gemm(_torch_gemm if _torch_multiplies_float32_exactly() else None)
    cupy, device = _devices.cupy(), tensor.device.index
    stream = torch.cuda.current_stream(tensor.device).cuda_stream
    stack = contextlib.ExitStack()
    stack.enter_context(_devices.on(f"cuda:{device}"))
    stack.enter_context(cupy.cuda.ExternalStream(stream, device))
    stack.enter_context(cupy.cuda.using_allocator(_torch_allocator(cupy, stream)))
    if tensor.dtype == torch.bfloat16:
        stack.enter_context(_dtypes.bfloat16_in_float32())
    return stack


def _torch_allocator(cupy, stream):
    """A CuPy allocator (for cupy.cuda.using_allocator) on torch's caching allocator, for work on
    torch's stream ``stream`` (a handle): the memory of an allocation is a block of torch's pool
    for that stream, and goes back to it when CuPy frees it, when its last array goes (for an
    array returned as a tensor through DLPack, with the tensor), as a tensor's block goes back
    when the tensor goes. So rnnfast's workspaces and results count in torch.cuda's memory
    statistics and limits, and memory freed by either library is reused by the other, which two
    pools on one GPU would each keep to themselves."""
    return cupy.cuda.PythonFunctionAllocator(
        lambda size, device: torch.cuda.caching_allocator_alloc(size, device, stream),
        lambda pointer, device: torch.cuda.caching_allocator_delete(pointer)).malloc


def _torch_multiplies_float32_exactly():
    """Whether torch's CPU matrix products multiply float32 in float32: not under
    torch.set_float32_matmul_precision("high" or "medium") nor oneDNN's fp32_precision "bf16"
    or "tf32", which round the operands on CPUs with AMX or AVX512-BF16. torch.nn's recurrent
    ops ignore those settings, and so must rnnfast.torch's results."""
    onednn = getattr(torch.backends.mkldnn, "matmul", None)
    return (torch.get_float32_matmul_precision() == "highest"
            and getattr(onednn, "fp32_precision", "none") in ("none", "ieee"))


def _torch_gemm(a, b, out, trans_a, trans_b, bias, accumulate):
    """rnnfast.backends.CpuBackend.gemm's semantics on torch's matrix products, over the NumPy
    arrays' memory: out = op(a) op(b) (+ bias), or out += ... with accumulate."""
    a, b, out = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    a, b = a.T if trans_a else a, b.T if trans_b else b
    if accumulate:
        out.addmm_(a, b)
        if bias is not None:
            out.add_(torch.from_numpy(bias))
    elif bias is not None:
        torch.addmm(torch.from_numpy(bias), a, b, out=out)
    else:
        torch.mm(a, b, out=out)


def _forward_kernels(call, tensors, save):
    """torch._VF's recurrent op on rnnfast.functional.forward_layers (NumPy or CuPy views of
    the tensors' memory): ([output, h_n(, c_n)], the training context, or None unless
    ``save``)."""
    with _on_torch_resources(tensors[0]):
        return _forward_on_resources(call, tensors, save)


def _forward_on_resources(call, tensors, save):
    x, states = tensors[0], tensors[1:1 + call.state_count]
    weights = tensors[1 + call.state_count:]
    lengths = None if call.batch_sizes is None else (call.batch_sizes[None] > torch.arange(
        call.batch_sizes[0])[:, None]).sum(1).numpy()
    dropout = call.dropout_between_layers()
    # Dropout masks come from a numpy generator seeded by PyTorch's default generator.
    generator = (np.random.default_rng(int(torch.randint(2**62, (), dtype=torch.int64)))
                 if dropout > 0 else None)
    hx = tuple(map(_array, states))
    out, h_n, c_n, saved = functional.forward_layers(
        call.op, _array(_to_padded(call, x)),
        dict(zip(call.param_names(len(weights)), map(_array, weights))),
        hx=hx if call.state_count == 2 else hx[0], lengths=lengths,
        num_layers=call.num_layers, bidirectional=call.bidirectional, dropout=dropout,
        generator=generator, training=save)
    dtype = x.dtype
    return [_from_padded(call, _tensor(out, dtype)),
            *(_tensor(a, dtype) for a in (h_n, c_n) if a is not None)], saved


def _backward_kernels(call, saved, grads, needed):
    """rnnfast.functional.backward_layers on the training context ``saved``: the gradients of
    the forward's tensors (x, *states, *weights) from those of its outputs, None for those not
    ``needed`` (a bool for each tensor; x's gradient is then not computed)."""
    with _on_torch_resources(grads[0]):
        grad_hx = tuple(map(_array, grads[1:]))
        grad_x, grad_h0, grad_c0, weight_grads = functional.backward_layers(
            saved, _array(_to_padded(call, grads[0])),
            grad_hx if call.state_count == 2 else grad_hx[0], input_grad=needed[0])
        dtype = grads[0].dtype  # every tensor's (_check_device_and_dtype)
        names = call.param_names(len(needed) - 1 - call.state_count)
        others = [*(grad_h0, grad_c0)[:call.state_count], *map(weight_grads.get, names)]
        return [grad_x if grad_x is None else _from_padded(call, _tensor(grad_x, dtype)),
                *(_tensor(g, dtype) if need else None for g, need in zip(others, needed[1:]))]


def _needs_torch_backward(grads):
    """Whether a backward must be made of torch's operations: with create_graph=True, or
    with batched gradients (autograd.grad's is_grads_batched, which batches with vmap's
    legacy implementation: it has no rules for custom operators)."""
    return torch.is_grad_enabled() or any(map(torch._C._functorch.is_legacy_batchedtensor,
                                              grads))


def _differentiable_backward(call, tensors, grads):
    """The gradients of (x, *states, *weights) by torch's own op run again on the same
    tensors, and torch.autograd.grad through it (with create_graph when grad mode is on: a
    double backward)."""
    if call.dropout_between_layers() > 0:
        # torch's op would draw other dropout masks than the forward's.
        raise RuntimeError("rnnfast.torch cannot differentiate twice or with batched "
                           "gradients through dropout between layers; use dropout=0 or eval "
                           "mode for that")
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        outputs = getattr(torch._VF, call.op)(*call.torch_args(tensors))
    wanted = [t for t in tensors if t.requires_grad]
    got = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=create_graph,
                                   allow_unused=True))
    return [next(got) if t.requires_grad else None for t in tensors]


# The custom operators, for torch.compile and torch.export. The training context of
# rnnfast.functional is a Python object, which a custom operator cannot return: the forward op
# keeps it here under a key that it returns as a tensor (a "workspace handle"), which the
# backward op takes; an entry goes when its handle tensor is freed, as saved tensors are.
_WORKSPACES = {}
_workspace_keys = itertools.count()


@torch.library.custom_op("rnnfast::recurrent", mutates_args=())
def _recurrent_op(tensors: list[torch.Tensor], op: str, state_count: int,
                  batch_sizes: torch.Tensor | None, has_biases: bool, num_layers: int,
                  dropout: float, train: bool, bidirectional: bool, batch_first: bool,
                  save: bool) -> list[torch.Tensor]:
    """torch._VF's recurrent op on rnnfast's kernels: [output, h_n(, c_n)], and with ``save``
    the workspace handle."""
    call = _Call(op, state_count, batch_sizes, has_biases, num_layers, dropout, train,
                 bidirectional, batch_first)
    outputs, saved = _forward_kernels(call, tensors, save)
    if save:
        key = next(_workspace_keys)
        _WORKSPACES[key] = saved
        outputs.append(torch.tensor(key, device=tensors[0].device))  # as the fake's
        weakref.finalize(outputs[-1], _WORKSPACES.pop, key, None)
    return outputs


@_recurrent_op.register_fake
def _(tensors, op, state_count, batch_sizes, has_biases, num_layers, dropout, train,
      bidirectional, batch_first, save):
    x, states = tensors[0], tensors[1:1 + state_count]
    features = (2 if bidirectional else 1) * states[0].shape[-1]
    outputs = [x.new_empty((*x.shape[:-1], features)), *(s.new_empty(s.shape) for s in states)]
    return outputs + [x.new_empty((), dtype=torch.int64)] if save else outputs


@torch.library.custom_op("rnnfast::recurrent_backward", mutates_args=())
def _recurrent_backward_op(handle: torch.Tensor, grads: list[torch.Tensor],
                           tensors: list[torch.Tensor], op: str, state_count: int,
                           batch_sizes: torch.Tensor | None, has_biases: bool, num_layers: int,
                           dropout: float, train: bool, bidirectional: bool,
                           batch_first: bool) -> list[torch.Tensor]:
    """The backward of the forward op whose workspace handle is ``handle``: the gradients of
    ``tensors`` (the forward's) from those of its outputs, ``grads``."""
    call = _Call(op, state_count, batch_sizes, has_biases, num_layers, dropout, train,
                 bidirectional, batch_first)
    return _backward_kernels(call, _WORKSPACES[int(handle)], grads, [True] * len(tensors))


@_recurrent_backward_op.register_fake
def _(handle, grads, tensors, *call):
    return [t.new_empty(t.shape) for t in tensors]


def _setup_context(ctx, inputs, output):
    tensors, *call, save = inputs
    ctx.call = _Call(*call)
    # Saving the inputs makes autograd refuse a backward after one of them was modified in
    # place (the kernels' workspace holds views of x and the weights), and gives a double
    # backward the tensors to run torch's op on.
    ctx.save_for_backward(*tensors, output[-1] if save else None)


def _backward(ctx, grads):
    *tensors, handle = ctx.saved_tensors
    grads = grads[:1 + ctx.call.state_count]  # not the handle's
    if _needs_torch_backward(grads):
        return _differentiable_backward(ctx.call, tensors, grads), *(None,) * 10
    return _recurrent_backward_op(handle, grads, tensors, *ctx.call), *(None,) * 10


_recurrent_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerRecurrence(torch.autograd.Function):
    """rnnfast::recurrent with its autograd, called directly, without PyTorch's dispatcher:
    the same kernels and backward, for eager mode, where the dispatch of a custom operator
    (the flattening and checking of its arguments, twice per training step) costs about 0.3 ms
    per call on a 2-core machine, as long as a small layer's whole forward and backward."""

    @staticmethod
    def forward(ctx, call, *tensors):
        outputs, ctx.workspace = _forward_kernels(call, tensors, save=True)
        ctx.call = call
        ctx.save_for_backward(*tensors)  # as _setup_context
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        tensors = ctx.saved_tensors
        if _needs_torch_backward(grads):
            return None, *_differentiable_backward(ctx.call, tensors, grads)
        return None, *_backward_kernels(ctx.call, ctx.workspace, grads,
                                        ctx.needs_input_grad[1:])


def _check_device_and_dtype(tensors):
    """What rnnfast's kernels need beyond torch's own checks: CPU or CUDA tensors (CUDA: with
    CuPy and rnnfast's CUDA module) of float32, float64, float16 or bfloat16 (with ml_dtypes),
    all of one device and dtype."""
    device = tensors[-1].device  # a weight's
    if device.type not in ("cpu", "cuda") or any(t.device != device for t in tensors):
        for tensor in tensors:
            if tensor.device.type not in ("cpu", "cuda"):
                raise NotImplementedError(f"a tensor is on {tensor.device}: rnnfast.torch runs "
                                          "on CPU and CUDA tensors")
        other = next(t.device for t in tensors if t.device != device)
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least "
                           f"two devices, {device} and {other}!")  # torch's message for a mix
    if device.type == "cuda":
        _devices.cupy()  # an ImportError saying what to install or rebuild
    dtype = tensors[-1].dtype  # a weight's
    if dtype not in _NUMPY_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in _NUMPY_DTYPES)
        hint = "" if _dtypes.BFLOAT16 is not None else (
            "; bfloat16 needs ml_dtypes: pip install rnnfast[bf16]")
        raise TypeError(f"rnnfast.torch computes in {names}, not in {dtype}{hint}: convert the "
                        "module with .float() or .double()")
    other = next((t.dtype for t in tensors if t.dtype != dtype), None)
    if other is not None:  # torch raises a RuntimeError from its matrix products
        raise RuntimeError(f"expected every input and state to have the parameters' dtype "
                           f"{dtype}, but one is {other}")


def _in_torch_func():
    """Whether a torch.func transform is running (not asked while torch.compile traces, where
    Dynamo would answer for the traced program, not for this call)."""
    return (not torch.compiler.is_compiling()
            and torch._C._functorch.peek_interpreter_stack() is not None)


def _any_empty(tensors):
    """Whether one of ``tensors`` has no elements. Under torch.compile, a size that depends on
    data (the batch of the states torch.nn makes for a PackedSequence: its batch_sizes[0], at
    least 1) counts as not empty instead of stopping the trace."""
    if torch.compiler.is_compiling():
        # (imported here: loaded by torch.compile, 0.4 s to import otherwise)
        from torch.fx.experimental.symbolic_shapes import guard_or_false

        return any(guard_or_false(t.numel() == 0) for t in tensors)
    return min(t.numel() for t in tensors) == 0


def _recurrent(op, *args):
    """torch._VF's recurrent op ``op`` (lstm, gru, rnn_tanh, rnn_relu) on rnnfast's kernels:
    called with torch._VF's arguments, returns what it returns."""
    call, tensors = _Call.parse(op, args)
    if _any_empty(tensors) or _in_torch_func():
        # Empty inputs or states: torch's op (its errors, and its empty results). Inside
        # torch.func's transforms (vmap, grad, jacrev, ...), which custom operators with a
        # registered autograd do not support: torch's op too, as torch.nn would run.
        return getattr(torch._VF, op)(*args)
    _check_device_and_dtype(tensors)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    try:
        if torch.compiler.is_compiling():  # torch.compile, torch.export: the custom op
            outputs = _recurrent_op(tensors, *call, save)[:1 + call.state_count]
        elif save:
            outputs = _EagerRecurrence.apply(call, *tensors)
        else:
            outputs = _forward_kernels(call, tensors, save=False)[0]
    except (ValueError, TypeError) as error:
        # rnnfast.functional's argument checks (what torch.nn's forward leaves to torch._VF,
        # such as hx's batch with a PackedSequence): torch._VF raises RuntimeErrors.
        raise RuntimeError(str(error)) from error
    return tuple(outputs)


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
    code (its argument checks, errors, defaults and layouts, line for line) run in this
    module's globals: its ``_VF`` (where that code finds its kernels) is rnnfast's, and its
    other globals (torch, PackedSequence) are the same objects as in torch.nn.modules.rnn.
    Tools that read a function's globals by its module (torch.compile's guards) find them
    here too."""
    forward = torch_class.forward
    ours = types.FunctionType(forward.__code__, globals(), forward.__name__,
                              forward.__defaults__, forward.__closure__)
    ours.__doc__ = f"As torch.nn.{torch_class.__name__}.forward, on rnnfast's kernels."
    return type(torch_class.__name__, (torch_class,),
                {"forward": ours, "__doc__": _doc(torch_class), "__module__": __name__})


RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell = map(_subclass, (
    torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNNCell, torch.nn.LSTMCell,
    torch.nn.GRUCell))
# torch.nn class -> its rnnfast subclass, for convert()
_REPLACEMENTS = {cls.__bases__[0]: cls for cls in (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell)}


def _let_dynamo_trace_these_modules(builder):
    """torch.compile's Dynamo refuses every instance of torch.nn.RNN, LSTM and GRU (ours too,
    since they are subclasses) unless ``torch._dynamo.config.allow_rnn`` is set: its support
    for torch's own RNN kernels is experimental. Ours need no such support: their forward is
    plain Python around the rnnfast::recurrent custom op, which Dynamo records as one node. So
    this lets Dynamo wrap rnnfast's modules as if allow_rnn were set, for them only: a
    user's own torch.nn modules compile (or are refused) as before, and allow_rnn keeps its
    meaning for them. (A wrapper of VariableBuilder.wrap_module in ``builder``, Dynamo's
    torch._dynamo.variables.builder, the one place that makes the check; torch has no public
    way to exempt a class.)"""
    from torch._dynamo import config

    wrap_module = builder.VariableBuilder.wrap_module

    @functools.wraps(wrap_module)
    def wrap_rnnfast_modules_too(self, value):
        if type(value) in _REPLACEMENTS.values():
            with config.patch(allow_rnn=True):
                return wrap_module(self, value)
        return wrap_module(self, value)

    builder.VariableBuilder.wrap_module = wrap_rnnfast_modules_too


class _WhenDynamoLoads(importlib.abc.MetaPathFinder):
    """Runs _let_dynamo_trace_these_modules when Dynamo's builder module is imported: importing
    Dynamo here instead would add seconds to ``import rnnfast.torch`` (and made the spawned
    processes of the DDP example hang now and then)."""

    name = "torch._dynamo.variables.builder"

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            _let_dynamo_trace_these_modules(module)

        spec.loader.exec_module = exec_then_patch
        return spec


if _WhenDynamoLoads.name in sys.modules:
    _let_dynamo_trace_these_modules(sys.modules[_WhenDynamoLoads.name])
else:
    sys.meta_path.insert(0, _WhenDynamoLoads())


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


def _torch_openmp_library():
    """The path of the OpenMP runtime that torch's CPU ops run on, as this process loaded it
    (from /proc/self/maps; torch's own copy first), or None: torch built with another parallel
    backend, or no /proc."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps}
    except OSError:
        return None
    runtimes = sorted(path for path in paths
                      if os.path.basename(path).startswith(("libgomp", "libiomp5", "libomp")))
    torch_lib = os.path.dirname(torch.__file__)
    runtimes.sort(key=lambda path: not path.startswith(torch_lib))
    return runtimes[0] if runtimes else None


def share_torch_threads(enabled: bool = True) -> bool:
    """Whether rnnfast's CPU kernels run on torch's OpenMP threads (``enabled``, the default
    since this module's import) or on rnnfast's own (``False``). Returns whether they now share
    torch's: False where torch's runtime cannot be found (a build of torch without OpenMP).

    Sharing changes no result: only which threads run the same work. rnnfast keeps its own
    thread count (``rnnfast.set_num_threads``); torch's threads are the ones that run torch's
    parallel ops, so they are awake when rnnfast's kernels follow one, instead of busy-waiting on
    the cores that rnnfast's threads need."""
    library = _torch_openmp_library() if enabled else None
    return _cpu.share_openmp_threads(library or "") and library is not None


share_torch_threads()
