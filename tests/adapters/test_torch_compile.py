"""rnnfast.torch under torch.compile (fullgraph, aot_eager and inductor) and torch.export: the
modules trace as the rnnfast::recurrent custom operator, with the same results as eager."""

import copy

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import rnnfast.functional  # noqa: E402
import rnnfast.torch as rt  # noqa: E402

from _util import FLOAT64_TOL, rel_err  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning"),
    # torch.nn's forward assigns self._flat_weights, which torch.export warns about (for
    # torch.nn's own modules too).
    pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning"),
    # inductor imports torch.utils.mkldnn, which uses torch.jit.script_method.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


class Model(torch.nn.Module):
    """Every kind of recurrent module (a projection, two directions, a cell) around torch.nn
    layers."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, num_layers=2, proj_size=2, batch_first=True)
        self.gru = torch.nn.GRU(2, 3, bidirectional=True, batch_first=True)
        self.rnn = torch.nn.RNN(6, 4, nonlinearity="relu", batch_first=True)
        self.cell = torch.nn.LSTMCell(4, 3)
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, h = self.gru(y.tanh())
        y, _ = self.rnn(y, torch.cat([h[0], h[1, :, :1]], -1)[None])  # h0 of 4 units
        h, _ = self.cell(y[:, -1])
        return self.head(h).square().mean()


def converted_model():
    torch.manual_seed(0)
    return rt.convert(Model().double())


def loss_and_grads(model, x):
    loss = model(x)
    return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_and_inference_equal_eager(backend, monkeypatch):
    """Equal results, with rnnfast's kernels (not torch's) forward and backward."""
    calls = []
    for name in ("forward_layers", "backward_layers"):
        function = getattr(rnnfast.functional, name)
        monkeypatch.setattr(rnnfast.functional, name, lambda *a, f=function, n=name, **k: (
            calls.append(n), f(*a, **k))[1])
    model = converted_model()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    want = loss_and_grads(model, x)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    # inductor's compilation in this process: a pool of compile workers takes minutes to
    # start on a busy 2-core machine.
    with torch._inductor.config.patch(compile_threads=1):
        calls.clear()
        got = loss_and_grads(compiled, x)
    assert calls.count("forward_layers") == calls.count("backward_layers") == 4
    assert not rt._WORKSPACES  # the training contexts went with the graph
    assert all(rel_err(g, w) <= FLOAT64_TOL for g, w in zip(got, want))
    with torch.no_grad():
        assert rel_err(compiled(x), want[0]) <= FLOAT64_TOL


def test_compiled_graph_holds_the_custom_op():
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    module = rt.GRU(2, 3, dtype=torch.float64)
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    want = module(x)[0]
    got = torch.compile(module, fullgraph=True, backend=backend)(x)[0]
    assert torch.equal(got, want)
    (graph,) = graphs
    targets = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    assert torch.ops.rnnfast.recurrent.default in targets


def test_torch_nn_modules_are_still_refused_by_dynamo():
    """rnnfast lets Dynamo trace its own modules only; torch._dynamo.config.allow_rnn keeps
    deciding for torch.nn's."""
    module = torch.nn.LSTM(2, 3)
    assert not torch._dynamo.config.allow_rnn
    with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
        torch.compile(module, fullgraph=True, backend="aot_eager")(torch.randn(3, 1, 2))


def test_export_round_trip_equals_eager():
    model = converted_model()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    exported = torch.export.export(copy.deepcopy(model), (x,))
    assert any("rnnfast.recurrent" in str(node.target) for node in exported.graph.nodes)
    # the exported program on another input of the same shape
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    assert rel_err(exported.module()(x).detach(), model(x).detach()) <= FLOAT64_TOL


def test_workspaces_of_the_custom_op_are_freed_with_the_graph():
    """The exported program calls rnnfast::recurrent through PyTorch's dispatcher, which keeps
    each training context under a workspace handle until the handle is freed."""
    module = rt.GRU(2, 3, num_layers=2)
    x = torch.randn(4, 2, 2)
    run = torch.export.export(module, (x,)).module()
    run(x)[0].sum().backward()  # freed by the backward
    out = run(x)[0]
    assert len(rt._WORKSPACES) == 1
    del out  # freed with the graph, without a backward
    assert not rt._WORKSPACES


def test_compiled_lstm_on_packed_sequences_equals_eager():
    """A PackedSequence given to a compiled LSTM (fullgraph, training): the batch of the zero
    states torch.nn's forward makes for it depends on the data (batch_sizes[0]), which the
    trace keeps symbolic. (torch.nn's GRU and RNN forward compare that batch with hx's, which
    Dynamo cannot decide; packing inside the compiled code is refused by Dynamo itself.)"""
    torch.manual_seed(0)
    module = rt.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 2, dtype=torch.float64)

    def loss_and_grads(run, lengths):
        out, (h, c) = run(pack_padded_sequence(x, lengths, enforce_sorted=False))
        loss = out.data.square().sum() + h.sum() + c.tanh().sum()
        return [loss.detach(), *torch.autograd.grad(loss, list(module.parameters()))]

    for lengths in ([2, 4, 1], [3, 3, 4]):  # the second run reuses the compiled graph
        got, want = (loss_and_grads(run, torch.tensor(lengths)) for run in (compiled, module))
        assert all(rel_err(g, w) <= FLOAT64_TOL for g, w in zip(got, want))


@pytest.mark.parametrize("make", [lambda: torch.nn.Linear(2, 3), lambda: rt.GRU(2, 3)],
                         ids=["torch.nn.Linear", "rnnfast.GRU"])
def test_double_backward_under_compile_raises_as_for_torch_modules(make):
    """torch.compile's AOTAutograd supports no double backward, for any module: a gradient
    penalty through a compiled rnnfast module raises as through a compiled torch.nn.Linear,
    instead of dropping the penalty's graph. (Which of AOTAutograd's two refusals comes
    depends on whether the compiled backward donates its buffers. Eager double backward:
    test_torch_modules.py.)"""
    module = make().double()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    out = torch.compile(module, fullgraph=True, backend="aot_eager")(x)
    out = out[0] if isinstance(out, tuple) else out
    with pytest.raises(RuntimeError, match="support double backward|requires create_graph=False"):
        (grad,) = torch.autograd.grad(out.tanh().sum(), x, create_graph=True)
        torch.autograd.grad(grad.square().sum(), list(module.parameters()))
