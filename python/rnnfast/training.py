"""What training the NumPy layers needs every day: gradient clipping by global norm, SGD and
Adam, and truncated backpropagation through time.

A training step with a layer and a head of your own (any dict of arrays)::

    import rnnfast
    from rnnfast.training import Adam, clip_grad_norm

    lstm = rnnfast.LSTM(32, 128)
    head = {"weight": ..., "bias": ...}               # your own parameters, NumPy arrays
    optimizer = Adam([lstm, head], lr=1e-3)           # updates them in place
    for x, target in batches:
        out, _ = lstm(x)
        grad_out, head_grads = ...                    # your loss and the head's backward
        lstm.backward(grad_out)                       # sets lstm.grads
        clip_grad_norm([lstm.grads, head_grads], max_norm=1.0)
        optimizer.step([lstm.grads, head_grads])

Parameters and gradients are given as a dict of arrays (name -> array; a layer stands for its
``named_parameters()``) or a list of such dicts; the gradients have the structure, names and
shapes of the parameters. The update formulas are PyTorch's (``torch.optim.SGD``, ``Adam``,
``torch.nn.utils.clip_grad_norm_``), computed in the parameters' dtype.

``truncated_bptt`` runs a sequence too long for one backward in chunks: the states are carried
from one chunk to the next, and no gradient flows across a chunk boundary.
"""

import numbers
from collections import namedtuple

import numpy as np

__all__ = ["clip_grad_norm", "SGD", "Adam", "truncated_bptt", "Chunk"]


def _dicts(value, name):
    """``value`` (a dict of arrays, an object with named_parameters(), or a list/tuple of these)
    as a list of dicts name -> array, or a TypeError naming the argument."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name} is empty")
    out = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
        if hasattr(item, "named_parameters"):
            item = dict(item.named_parameters())
        if not isinstance(item, dict):
            raise TypeError(f"{where} must be a dict of arrays (or a layer), not "
                            f"{type(item).__name__}")
        for key, array in item.items():
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"{where}[{key!r}] must be a floating-point NumPy array, not "
                                f"{type(array).__name__}"
                                + (f" of dtype {array.dtype}" if hasattr(array, "dtype") else ""))
        out.append(item)
    return out


def _positive(value, name, allow_zero=False, allow_inf=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value) \
            or (np.isinf(value) and not allow_inf) or value < 0 \
            or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} {'' if allow_inf else 'finite '}number, "
                         f"not {value!r}")
    return float(value)


def clip_grad_norm(grads, max_norm):
    """Scales the gradients in place so that their global L2 norm (over every array of every
    dict) is at most ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``: each array is
    multiplied by ``min(1, max_norm / (total_norm + 1e-6))``. Returns the total norm before
    clipping (a float; NaN or inf if a gradient is not finite, and then the gradients become
    NaN, as PyTorch's do). ``max_norm=float("inf")`` only measures the norm.

    grads: a dict of arrays (e.g. ``layer.grads``) or a list of dicts (several layers, heads)."""
    dicts = _dicts(grads, "grads")
    max_norm = _positive(max_norm, "max_norm", allow_inf=True)
    arrays = [a for d in dicts for a in d.values()]
    total = float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))
    with np.errstate(invalid="ignore"):  # inf / inf and inf * 0: NaN, as in PyTorch
        scale = max_norm / (total + 1e-6)
        if not scale >= 1.0:  # NaN included
            for a in arrays:
                a *= a.dtype.type(scale)
    return total


class _Optimizer:
    def __init__(self, params, lr):
        self._params = _dicts(params, "params")
        for i, d in enumerate(self._params):
            for key, array in d.items():
                if not array.flags.writeable:
                    raise ValueError(f"params[{i}][{key!r}] is read-only: the optimizer "
                                     f"updates the parameters in place")
        self.lr = _positive(lr, "lr")
        self.state = [{key: {} for key in d} for d in self._params]
        self.steps = 0

    def step(self, grads):
        """One update of every parameter from ``grads`` (the structure, names and shapes of
        the parameters given to the constructor)."""
        dicts = _dicts(grads, "grads")
        if len(dicts) != len(self._params):
            raise ValueError(f"grads has {len(dicts)} dicts, but the optimizer has "
                             f"{len(self._params)} dicts of parameters")
        for i, (params, grad) in enumerate(zip(self._params, dicts)):
            if set(grad) != set(params):
                raise KeyError(f"grads[{i}] does not match the parameters: missing "
                               f"{sorted(set(params) - set(grad))}, unexpected "
                               f"{sorted(set(grad) - set(params))}")
            for key, p in params.items():
                if grad[key].shape != p.shape:
                    raise ValueError(f"grads[{i}][{key!r}] has shape {grad[key].shape}, "
                                     f"expected {p.shape}")
        self.steps += 1
        for params, grad, state in zip(self._params, dicts, self.state):
            for key, p in params.items():
                self._update(p, grad[key].astype(p.dtype, copy=False), state[key])

    def _update(self, param, grad, state):
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (without dampening and Nesterov):
    ``g = grad + weight_decay * p``; with momentum ``b = momentum * b + g`` (b = g at the
    first step) and g = b; then ``p -= lr * g``.

    params: a layer, a dict of arrays, or a list of these; updated in place."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = _positive(momentum, "momentum", allow_zero=True)
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)

    def _update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + param.dtype.type(self.weight_decay) * param
        if self.momentum:
            if "momentum" not in state:
                state["momentum"] = np.array(grad, copy=True)
            else:
                state["momentum"] *= param.dtype.type(self.momentum)
                state["momentum"] += grad
            grad = state["momentum"]
        param -= param.dtype.type(self.lr) * grad


class Adam(_Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``: ``m = b1 m + (1 - b1) g``,
    ``v = b2 v + (1 - b2) g^2``, ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``,
    with ``g = grad + weight_decay * p`` (L2 penalty, not AdamW's decoupled decay).

    params: a layer, a dict of arrays, or a list of these; updated in place."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or \
                not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), not {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _positive(eps, "eps", allow_zero=True)
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)

    def _update(self, param, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + param.dtype.type(self.weight_decay) * param
        if not state:
            state["m"], state["v"] = np.zeros_like(param), np.zeros_like(param)
        m, v = state["m"], state["v"]
        m += param.dtype.type(1 - beta1) * (grad - m)
        v *= param.dtype.type(beta2)
        v += param.dtype.type(1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** self.steps)
        denom = np.sqrt(v) / param.dtype.type(np.sqrt(1 - beta2 ** self.steps)) \
            + param.dtype.type(self.eps)
        param -= param.dtype.type(step_size) * m / denom


Chunk = namedtuple("Chunk", "steps loss state grad_input")
Chunk.__doc__ = """What ``truncated_bptt`` yields per chunk: its slice of the time axis, the loss
that ``loss_and_grad`` returned, the layer's final states after it and the gradient of the loss
with respect to the chunk's input."""


def truncated_bptt(layer, input, chunk_size, loss_and_grad, hx=None):
    """Truncated backpropagation through time: runs ``layer`` (a training-mode rnnfast.RNN,
    LSTM or GRU) over ``input`` in chunks of ``chunk_size`` steps (the last one may be shorter),
    each chunk starting from the final states of the one before, and backpropagates each chunk
    on its own: the gradient stops at the chunk's first step (it does not reach the previous
    chunk or ``hx``). Returns a generator (the arguments are checked at once); per chunk, in
    order:

    1. ``output, state = layer(chunk, state)`` (``state`` starts as ``hx``, None: zeros);
    2. ``loss, grad_output = loss_and_grad(output, steps)``, your function: ``steps`` is the
       chunk's slice of the time axis (index your targets with it), ``grad_output`` the
       gradient of the loss with respect to ``output``;
    3. ``grad_input, _ = layer.backward(grad_output)``, which sets ``layer.grads`` to this
       chunk's gradients;
    4. yields a ``Chunk(steps, loss, state, grad_input)`` (a named tuple; ``grad_input``: the
       gradient for this chunk of the input, e.g. for an embedding below the layer): step your
       optimizer in the loop body::

        for chunk in truncated_bptt(lstm, x, 50, loss_and_grad):
            optimizer.step([lstm.grads, head_grads])

    input: the layer's layout ((T, B, I), (B, T, I) with batch_first, or (T, I) unbatched).
    Forward, the chunks together compute exactly what one call on the whole input computes.
    (No ``resets``: a chunk's resets would go back to that chunk's initial state, the carried
    one, not to ``hx``.)"""
    if not hasattr(layer, "backward") or not hasattr(layer, "batch_first"):
        raise TypeError(f"layer must be an rnnfast.RNN, LSTM or GRU, not {type(layer).__name__}")
    if not layer.training:
        raise ValueError("layer is in eval mode: truncated_bptt trains (call layer.train())")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, not {chunk_size!r}")
    if not callable(loss_and_grad):
        raise TypeError("loss_and_grad must be a function (output, steps) -> (loss, grad_output)")
    x = np.asarray(input)
    if x.ndim not in (2, 3):
        raise ValueError(f"input must be 2-D (unbatched) or 3-D, not of shape {x.shape}")
    return _chunks(layer, x, int(chunk_size), loss_and_grad, hx)  # checked now, run lazily


def _chunks(layer, x, chunk_size, loss_and_grad, state):
    time_axis = 1 if layer.batch_first and x.ndim == 3 else 0
    for start in range(0, x.shape[time_axis], chunk_size):
        steps = slice(start, min(start + chunk_size, x.shape[time_axis]))
        index = (slice(None),) * time_axis + (steps,)
        output, state = layer(x[index], state)
        loss, grad_output = loss_and_grad(output, steps)
        grad_input, _ = layer.backward(grad_output)
        yield Chunk(steps, loss, state, grad_input)
