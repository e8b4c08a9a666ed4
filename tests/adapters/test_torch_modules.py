"""rnnfast.torch's modules behave as torch.nn's: on PyTorch's own test material for these
modules (the ModuleInfo samples and error inputs of torch.testing._internal.common_modules),
the same exceptions for the same bad inputs, hidden_size=0, hyper-parameters changed after
construction, higher-order gradients.
"""

import copy
import re

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

# PyTorch's test material (it imports expecttest, from the test extra)
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402
from torch.testing._internal.common_utils import gradcheck, gradgradcheck  # noqa: E402
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten  # noqa: E402

import rnnfast.torch as rt  # noqa: E402

from _util import FLOAT32_FLOOR, FLOAT64_TOL, rel_err  # noqa: E402

pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning"),
              pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning")]


def pair(name, *args, dtype=torch.float32, **options):
    """torch.nn's module ``name`` and rnnfast.torch's, with the same weights."""
    theirs = getattr(torch.nn, name)(*args, **options, dtype=dtype)
    ours = getattr(rt, name)(*args, **options, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def outcome(function, *args, **kwargs):
    """``function(*args, **kwargs)``, or the exception it raised."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001  (any exception is an outcome to compare)
        return error


def flat(result):
    """The tensors of a module's result (nested tuples, PackedSequence data)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, torch.nn.utils.rnn.PackedSequence):
        return [result.data]
    return [t for item in result for t in flat(item)]


def r(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# ------------------------------------------------------------------ PyTorch's ModuleInfo material

NAMES = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")
MODULE_INFOS = {name: next(info for info in module_db if info.module_cls is getattr(torch.nn, name))
                for name in NAMES}


def module_info_samples(name, dtype, training):
    """PyTorch's ModuleInfo samples of torch.nn's ``name`` (drawn from a fixed seed), packed
    sequences included, as PyTorch's own RNN module tests ask for them."""
    info = MODULE_INFOS[name]
    torch.manual_seed(0)
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                        training=training, with_packed_sequence=True))


def module_info_error_inputs(name, dtype):
    info = MODULE_INFOS[name]
    torch.manual_seed(0)
    return info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False,
                                         training=True)


def outputs_and_gradients(module, args):
    """Every tensor of the module's result on ``args`` (a PackedSequence's fields included), then
    the gradients of a fixed random linear function of its floating outputs with respect to
    every input tensor that requires grad and every parameter, in that order."""
    outputs = [t for t in tree_leaves(module(*args)) if t is not None]
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
               for o in outputs if o.is_floating_point())
    wrt = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    return [o.detach() for o in outputs] + list(torch.autograd.grad(
        loss, wrt + list(module.parameters())))


def in_float64(tensor):
    """A float64 leaf of a floating tensor's values (with its requires_grad); others as they
    are."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        return tensor
    return tensor.detach().double().requires_grad_(tensor.requires_grad)


SAMPLES = [(name, index) for name in NAMES
           for index in range(len(module_info_samples(name, torch.float32, True)))]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, index", SAMPLES, ids=[f"{n}-{i}" for n, i in SAMPLES])
def test_module_info_samples_match_torch(name, index, dtype, training):
    """Outputs, states and the gradients of the inputs and of every parameter, by the tolerance
    rule of _util.py (the oracle: torch.nn in float64 on the same values)."""
    sample = module_info_samples(name, dtype, training)[index]
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(index)
    theirs = getattr(torch.nn, name)(*args, **kwargs).to(dtype).train(training)
    ours = getattr(rt, name)(*args, **kwargs).to(dtype).train(training)
    ours.load_state_dict(theirs.state_dict())
    oracle = copy.deepcopy(theirs).double()
    inputs = sample.forward_input.args
    assert not sample.forward_input.kwargs  # (none of these samples has any)
    got = outputs_and_gradients(ours, inputs)
    want = outputs_and_gradients(oracle, tree_map(in_float64, inputs))
    torch32 = outputs_and_gradients(theirs, inputs) if dtype == torch.float32 else None
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == (dtype if w.is_floating_point() else w.dtype), i
        if not w.is_floating_point():  # PackedSequence's batch sizes and indices
            assert torch.equal(g, w), i
            continue
        bound = (FLOAT64_TOL if dtype == torch.float64 else
                 2 * rel_err(torch32[i], w) + FLOAT32_FLOOR)
        assert rel_err(g, w) <= bound, i


@pytest.mark.parametrize("check", [gradcheck, pytest.param(gradgradcheck, marks=pytest.mark.slow)],
                         ids=["gradcheck", "gradgradcheck"])
@pytest.mark.parametrize("name, index", SAMPLES, ids=[f"{n}-{i}" for n, i in SAMPLES])
def test_module_info_samples_gradcheck(name, index, check):
    """PyTorch's gradcheck and gradgradcheck (its test wrappers: fast mode, batched gradients
    checked too) of rnnfast.torch's module in float64, by the inputs and the parameters, as
    PyTorch's own module tests run them."""
    sample = module_info_samples(name, torch.float64, True)[index]
    module = getattr(rt, name)(*sample.constructor_input.args,
                               **sample.constructor_input.kwargs).double()
    names = [name for name, _ in module.named_parameters()]
    leaves, spec = tree_flatten((sample.forward_input.args, tuple(module.parameters())))

    def f(*leaves):
        inputs, parameters = tree_unflatten(list(leaves), spec)
        result = torch.func.functional_call(module, dict(zip(names, parameters)), inputs)
        return tuple(t for t in tree_leaves(result) if t is not None and t.is_floating_point())

    assert check(f, leaves)


ERROR_INPUTS = [(name, index) for name in NAMES
                for index in range(len(module_info_error_inputs(name, torch.float32)))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, index", ERROR_INPUTS, ids=[f"{n}-{i}" for n, i in ERROR_INPUTS])
def test_module_info_error_inputs_raise_as_torch(name, index, dtype):
    """The exception PyTorch's test expects (type and message), from torch.nn and rnnfast.torch
    alike, at construction or in forward."""
    error_input = module_info_error_inputs(name, dtype)[index]
    sample = error_input.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    if error_input.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        raised = [outcome(getattr(namespace, name), *args, **kwargs)
                  for namespace in (torch.nn, rt)]
    else:
        theirs = getattr(torch.nn, name)(*args, **kwargs)
        ours = getattr(rt, name)(*args, **kwargs)
        ours.load_state_dict(theirs.state_dict())
        inputs = sample.forward_input.args
        raised = [outcome(module, *inputs) for module in (theirs, ours)]
    for who, error in zip(("torch.nn", "rnnfast.torch"), raised):
        assert isinstance(error, error_input.error_type), f"{who}: {error!r}"
        assert re.search(error_input.error_regex, str(error)), f"{who}: {error!r}"
    assert type(raised[1]) is type(raised[0])


# ------------------------------------------------------------------ more bad inputs

D = torch.float64
# (module, constructor arguments, forward arguments): bad inputs, and the corner cases next to
# them that torch.nn accepts.
CASES = [
    # from issue 19
    ("GRU", (3, 5, 2), lambda: (r(6, 4, 3), r(2, 7, 5))),
    ("LSTM", (5, 6), lambda: (torch.ones(0, 10, 5),)),
    ("RNNCell", (10, 20), lambda: (r(3, 11), r(3, 20))),
    # ranks
    ("LSTM", (3, 5), lambda: (r(2, 4, 3, 1),)),
    ("GRU", (3, 5), lambda: (r(6, 4, 3), r(4, 5))),
    ("GRU", (3, 5), lambda: (r(6, 3), r(1, 1, 5))),
    ("LSTM", (3, 5), lambda: (r(6, 4, 3), (r(1, 4, 5), r(4, 5)))),
    ("RNNCell", (3, 5), lambda: (r(2, 4, 3),)),
    ("GRUCell", (3, 5), lambda: (r(4, 3), r(1, 4, 5))),
    ("LSTMCell", (3, 5), lambda: (r(4, 3), (r(4, 5), r(1, 4, 5)))),
    # sizes
    ("RNN", (3, 5), lambda: (r(6, 4, 2),)),
    ("LSTM", (3, 5, 2), lambda: (r(6, 4, 3), (r(2, 4, 5), r(2, 4, 6)))),
    ("LSTM", (3, 5), lambda: (r(6, 4, 3), (r(1, 4, 5),))),
    ("GRUCell", (3, 5), lambda: (r(4, 3), r(2, 5))),
    ("GRUCell", (3, 5), lambda: (r(4, 3), r(4, 6))),
    ("LSTMCell", (3, 5), lambda: (r(4, 3), (r(4, 5), r(4, 6)))),
    ("LSTMCell", (3, 5), lambda: (r(4, 3), (r(4, 5),))),
    ("RNNCell", (3, 5), lambda: (r(3), r(4, 5))),
    # dtypes (checked after the shapes by the cells)
    ("GRU", (3, 5), lambda: (r(6, 4, 3, dtype=D),)),
    ("GRU", (3, 5), lambda: (r(6, 4, 3), r(1, 4, 5, dtype=D))),
    ("LSTM", (3, 5), lambda: (r(6, 4, 3), (r(1, 4, 5), r(1, 4, 5, dtype=D)))),
    ("RNNCell", (3, 5), lambda: (r(4, 3, dtype=D), r(4, 5))),
    ("GRUCell", (3, 5), lambda: (r(4, 3), r(4, 5, dtype=D))),
    ("LSTMCell", (3, 5), lambda: (r(4, 4, dtype=D), (r(4, 5), r(4, 5)))),
    # empty batches
    ("LSTM", (5, 6), lambda: (torch.ones(10, 0, 5),)),
    ("GRUCell", (3, 5), lambda: (r(0, 3),)),
]


@pytest.mark.parametrize("name, args, inputs", CASES,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(CASES)])
def test_same_exceptions_as_torch(name, args, inputs):
    theirs, ours = pair(name, *args)
    torch.manual_seed(0)
    inputs = inputs()
    want, got = outcome(theirs, *inputs), outcome(ours, *inputs)
    if isinstance(want, Exception):
        assert type(got) is type(want), f"torch.nn raised {want!r}, rnnfast.torch {got!r}"
        return
    assert not isinstance(got, Exception), f"torch.nn accepted it, rnnfast.torch raised {got!r}"
    assert [t.shape for t in flat(got)] == [t.shape for t in flat(want)]


def test_packed_sequence_with_hx_of_another_batch_raises_as_torch():
    theirs, ours = pair("LSTM", 3, 5)
    x = pack_padded_sequence(r(4, 3, 3), torch.tensor([4, 2, 1]))
    hx = (r(1, 2, 5), r(1, 2, 5))
    assert type(outcome(ours, x, hx)) is type(outcome(theirs, x, hx)) is RuntimeError


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_hidden_size_zero_cells_as_torch(name):
    theirs, ours = pair(name, 4, 0, dtype=D)
    x = r(3, 4, dtype=D).requires_grad_()
    results = [flat(m(x)) for m in (theirs, ours)]
    assert [[t.shape for t in ts] for ts in results] == [[(3, 0)] * len(results[0])] * 2
    grads = [torch.autograd.grad(sum(t.sum() for t in ts), x) for ts in results]
    assert torch.equal(grads[0][0], grads[1][0])


def test_dropout_changed_after_construction_takes_effect():
    theirs, ours = pair("GRU", 3, 4, num_layers=2, dtype=D)
    x = r(5, 2, 3, dtype=D)
    assert rel_err(ours(x)[0].detach(), theirs(x)[0].detach()) <= FLOAT64_TOL
    # dropout=1 zeroes the first layer's outputs: torch.nn and rnnfast agree on those masks.
    ours.dropout = theirs.dropout = 1.0
    got, want = ours(x)[0].detach(), theirs(x)[0].detach()
    assert rel_err(got, want) <= FLOAT64_TOL
    assert torch.equal(got, ours(2 * x)[0].detach())  # the input no longer reaches the output


# ------------------------------------------------------------------ higher-order gradients


def functional_module(module, lengths=None):
    """(f, tensors): f(x, *states, *parameters) -> every output tensor of the module, and the
    float64 leaves to check it at (x [3, 2, 2] or [2, 2] for a cell, hx, the parameters)."""
    names = [name for name, _ in module.named_parameters()]
    cell = isinstance(module, torch.nn.RNNCellBase)
    lstm = isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell))
    if cell:
        x, states = r(2, 2, dtype=D), [r(2, module.hidden_size, dtype=D)]
    else:
        layers = module.num_layers * (1 + module.bidirectional)
        x = r(3, 2, 2, dtype=D)
        states = [r(layers, 2, module.proj_size or module.hidden_size, dtype=D)]
    if lstm:
        states.append(r(*states[0].shape[:-1], module.hidden_size, dtype=D))

    def f(x, *tensors):
        hx = tensors[:len(states)]
        inp = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths),
                                                             enforce_sorted=False)
        result = torch.func.functional_call(module, dict(zip(names, tensors[len(states):])),
                                            (inp, hx if lstm else hx[0]))
        return tuple(flat(result))

    leaves = [t.requires_grad_() for t in (x, *states, *(p.detach().clone()
                                                         for p in module.parameters()))]
    return f, leaves


HIGHER_ORDER_CASES = [
    ("RNN", {"nonlinearity": "tanh"}, None),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}, None),
    ("LSTM", {}, None),
    ("LSTM", {"proj_size": 1, "num_layers": 2, "bidirectional": True}, None),
    ("GRU", {"bidirectional": True}, [3, 1]),
    ("LSTM", {"bias": False}, [2, 3]),
    ("RNNCell", {}, None),
    ("LSTMCell", {}, None),
    ("GRUCell", {"bias": False}, None),
]


@pytest.mark.parametrize("name, options, lengths", HIGHER_ORDER_CASES, ids=str)
def test_gradgradcheck(name, options, lengths):
    torch.manual_seed(0)
    module = getattr(rt, name)(2, 2, **options, dtype=D)
    f, leaves = functional_module(module, lengths)
    assert torch.autograd.gradgradcheck(f, leaves)


def test_double_backward_matches_torch_and_keeps_the_graph():
    """A gradient penalty (WGAN-GP): its gradient by the parameters, as torch.nn's."""
    theirs, ours = pair("LSTM", 3, 4, num_layers=2, dtype=D)
    x = r(5, 2, 3, dtype=D).requires_grad_()
    penalties = []
    for module in (theirs, ours):
        (grad,) = torch.autograd.grad(module(x)[0].tanh().sum(), x, create_graph=True)
        assert grad.requires_grad
        penalties.append(torch.autograd.grad(grad.square().sum(), list(module.parameters())))
    for want, got in zip(*penalties):
        assert rel_err(got, want) <= FLOAT64_TOL


# ------------------------------------------------------------------ batched gradients, torch.func


def test_batched_gradients_and_jacrev_as_torch():
    theirs, ours = pair("LSTM", 2, 3, num_layers=2, bidirectional=True, dtype=D)
    x = r(4, 2, 2, dtype=D).requires_grad_()
    results = []
    for module in (theirs, ours):
        out = module(x)[0]
        basis = torch.eye(out.numel(), dtype=D).reshape(-1, *out.shape)
        (batched,) = torch.autograd.grad(out, x, basis, is_grads_batched=True)
        jacobian = torch.func.jacrev(lambda x, module=module: module(x)[0])(x.detach())
        results.append((batched, jacobian.detach()))  # (which depends on the parameters)
    for got, want in zip(results[1], results[0]):
        assert rel_err(got, want) <= FLOAT64_TOL
    assert rel_err(results[1][0].reshape(results[1][1].shape), results[1][1]) <= FLOAT64_TOL


def test_vmap_over_the_module_as_torch():
    """torch.nn has no batching rule for its recurrent ops; rnnfast.torch raises the same."""
    theirs, ours = pair("GRU", 2, 3)
    x = r(5, 4, 1, 2)
    want, got = (outcome(torch.func.vmap(lambda x, m=m: m(x)[0]), x) for m in (theirs, ours))
    assert isinstance(want, RuntimeError) and type(got) is type(want)
