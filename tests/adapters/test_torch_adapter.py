"""rnnfast.torch against torch.nn.

Every comparison loads the same state_dict into both and checks the outputs, the final states
and the gradients of the input, hx and every parameter, by the tolerance rule of _util.py: the
oracle is torch.nn in float64 on the same (float32-rounded) inputs and weights; float64 results
within FLOAT64_TOL of it, float32 ones within twice torch.nn-in-float32's own error plus
FLOAT32_FLOOR.
"""

import copy
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import rnnfast  # noqa: E402
import rnnfast.torch as rt  # noqa: E402

from _util import FLOAT32_FLOOR, FLOAT64_TOL, rel_err  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
import train_torch_ddp  # noqa: E402

# torch.nn warns that its fast CPU path (oneDNN) lacks the projection.
pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")]

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = {"f32": torch.float32, "f64": torch.float64}
# The largest relative errors seen, per dtype (printed by -s).
WORST = {torch.float32: 0.0, torch.float64: 0.0}


def build(namespace, cell, dtype, cells=False, **options):
    """torch.nn's or rnnfast.torch's module for ``cell`` (a layer, or with cells=True a cell)."""
    name = {"lstm": "LSTM", "gru": "GRU"}.get(cell, "RNN") + ("Cell" if cells else "")
    if cell.startswith("rnn_"):
        options["nonlinearity"] = cell[4:]
    return getattr(namespace, name)(**options, dtype=dtype)


def leaf(a, dtype):
    return torch.tensor(a, dtype=dtype, requires_grad=True)


def run(module, x, hx, lengths=None, enforce_sorted=True):
    """Forward (a PackedSequence when lengths are given) and backward of a fixed random linear
    function of every output; returns float64 arrays of the outputs and of every gradient."""
    dtype = next(module.parameters()).dtype
    x = leaf(x, dtype)
    hx = None if hx is None else tuple(leaf(h, dtype) for h in hx)
    inp = x if lengths is None else pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=getattr(module, "batch_first", False),
        enforce_sorted=enforce_sorted)
    result = module(inp, None if hx is None else hx if len(hx) == 2 else hx[0])
    out, states = (None, result) if isinstance(module, torch.nn.RNNCellBase) else result
    results = {}
    if isinstance(out, PackedSequence):
        results = {k: getattr(out, k).numpy() for k in
                   ("batch_sizes", "sorted_indices", "unsorted_indices")
                   if getattr(out, k) is not None}
        out = out.data
    outputs = ([] if out is None else [out]) + list(states if isinstance(states, tuple)
                                                  else (states,))
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(dtype)).sum()
               for o in outputs)
    inputs = {"input": x, **{f"hx{i}": h for i, h in enumerate(hx or ())},
              **dict(module.named_parameters())}
    grads = torch.autograd.grad(loss, list(inputs.values()))
    results.update({f"output{i}": o.detach().double().numpy() for i, o in enumerate(outputs)})
    results.update({"grad_" + k: g.double().numpy() for k, g in zip(inputs, grads)})
    return results


def compare(cell, dtype, problem, cells=False, **options):
    """rnnfast.torch against torch.nn on ``problem`` = (x, hx, lengths, enforce_sorted)."""
    reference = build(torch.nn, cell, torch.float32, cells, **options)
    state = reference.state_dict()
    oracle_module = build(torch.nn, cell, torch.float64, cells, **options)
    oracle_module.load_state_dict(state)
    ours = build(rt, cell, dtype, cells, **options)
    ours.load_state_dict(state)
    x, hx, lengths, enforce_sorted = problem
    # Inputs rounded to float32 first, so that every run sees the same values.
    x = np.float32(x).astype(np.float64)
    hx = None if hx is None else tuple(np.float32(h).astype(np.float64) for h in hx)
    got = run(ours, x, hx, lengths, enforce_sorted)
    oracle = run(oracle_module, x, hx, lengths, enforce_sorted)
    torch32 = run(reference, x, hx, lengths, enforce_sorted) if dtype == torch.float32 else None
    assert set(got) == set(oracle)
    failures = []
    for name, value in got.items():
        assert value.shape == oracle[name].shape, name
        if value.dtype.kind == "i":  # PackedSequence's batch_sizes and indices
            assert np.array_equal(value, oracle[name]), name
            continue
        err = rel_err(value, oracle[name])
        bound = FLOAT64_TOL if dtype == torch.float64 else \
            2 * rel_err(torch32[name], oracle[name]) + FLOAT32_FLOOR
        WORST[dtype] = max(WORST[dtype], err)
        if not err <= bound:
            failures.append(f"{name}: rel err {err:.3e} > {bound:.3e}")
    assert not failures, "; ".join(failures)


def layer_problem(cell, options, T=5, B=4, I=3, H=6, given_hx=True, lengths=None, seed=1):
    """(x, hx, lengths, enforce_sorted) for a layer with ``options``; enforce_sorted when the
    lengths descend."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if options.get("batch_first") else (T, B, I))
    L = options.get("num_layers", 1) * (1 + options.get("bidirectional", False))
    hx = (rng.standard_normal((L, B, options.get("proj_size") or H)),)
    if cell == "lstm":
        hx += (rng.standard_normal((L, B, H)),)
    sorted_ = lengths is not None and list(lengths) == sorted(lengths, reverse=True)
    return x, hx if given_hx else None, lengths, sorted_


# (name, options of the layer, options of the problem), each run for every cell and dtype.
LAYER_CASES = [
    ("plain", {}, {}),
    ("no_hx", {}, {"given_hx": False}),
    ("2layers_bi_batch_first", {"num_layers": 2, "bidirectional": True, "batch_first": True},
     {}),
    ("packed_sorted_bi", {"bidirectional": True}, {"lengths": [5, 5, 3, 1]}),
    ("packed_unsorted_2layers_bi", {"num_layers": 2, "bidirectional": True},
     {"lengths": [2, 5, 1, 4], "given_hx": False}),
    ("packed_unsorted_batch_first", {"batch_first": True},
     {"lengths": [3, 5, 3, 2]}),
    ("no_bias_2layers", {"num_layers": 2, "bias": False}, {}),
]
PROJ_CASES = [
    ("proj", {"proj_size": 3}, {}),
    ("proj_2layers_bi_packed", {"proj_size": 2, "num_layers": 2, "bidirectional": True},
     {"lengths": [4, 5, 2, 5]}),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("cell, case", [(c, case) for c in CELLS for case in LAYER_CASES]
                         + [("lstm", case) for case in PROJ_CASES],
                         ids=lambda v: v[0] if isinstance(v, tuple) else v)
def test_layers_match_torch(cell, case, dtype):
    _, options, problem = case
    compare(cell, dtype, layer_problem(cell, options, **problem), input_size=3, hidden_size=6,
            **options)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_matches_torch(cell, dtype):
    x, hx, _, _ = layer_problem(cell, {"bidirectional": True}, B=1)
    compare(cell, dtype, (x[:, 0], tuple(h[:, 0] for h in hx), None, False), input_size=3,
            hidden_size=6, bidirectional=True)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("cell", CELLS)
def test_cells_match_torch(cell, given_hx, batched, dtype):
    rng = np.random.default_rng(2)
    lead = (4,) if batched else ()
    hx = tuple(rng.standard_normal(lead + (6,)) for _ in range(2 if cell == "lstm" else 1))
    compare(cell, dtype, (rng.standard_normal(lead + (3,)), hx if given_hx else None, None,
                          False), cells=True, input_size=3, hidden_size=6)


def test_report_worst_errors():
    """Runs after the comparisons above: prints the largest relative errors seen (-s)."""
    assert WORST[torch.float32] > 0 and WORST[torch.float64] > 0
    print(f"\nlargest relative errors vs torch.nn in float64: float32 "
          f"{WORST[torch.float32]:.2e}, float64 {WORST[torch.float64]:.2e}")


# ------------------------------------------------------------------ gradcheck


GRADCHECK_CASES = [
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 2}, None),
    ("gru", {"num_layers": 2, "bidirectional": True}, [3, 1, 2]),
    ("rnn_tanh", {"bidirectional": True, "batch_first": True}, [1, 3, 2]),
    ("rnn_relu", {"num_layers": 2}, None),
]


@pytest.mark.parametrize("cell, options, lengths", GRADCHECK_CASES, ids=lambda v: str(v))
def test_gradcheck(cell, options, lengths):
    """Finite differences in float64 through input, hx and every parameter (and packing)."""
    module = build(rt, cell, torch.float64, input_size=2, hidden_size=3, **options)
    x, hx, _, _ = layer_problem(cell, options, T=3, B=3, I=2, H=3)
    x = leaf(x, torch.float64)
    hx = tuple(leaf(h, torch.float64) for h in hx)
    names = [name for name, _ in module.named_parameters()]
    batch_first = options.get("batch_first", False)

    def f(x, *tensors):
        params = dict(zip(names, tensors[len(hx):]))
        states = tensors[:len(hx)]
        inp = x if lengths is None else pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
        out, finals = torch.func.functional_call(
            module, params, (inp, states if len(states) == 2 else states[0]))
        out = out.data if lengths is not None else out
        return (out, *(finals if isinstance(finals, tuple) else (finals,)))

    assert torch.autograd.gradcheck(f, (x, *hx, *module.parameters()))


@pytest.mark.parametrize("cell", CELLS)
def test_cells_gradcheck(cell):
    module = build(rt, cell, torch.float64, cells=True, input_size=2, hidden_size=3)
    rng = np.random.default_rng(3)
    hx = tuple(leaf(rng.standard_normal((2, 3)), torch.float64)
               for _ in range(2 if cell == "lstm" else 1))
    names = [name for name, _ in module.named_parameters()]

    def f(x, *tensors):
        states = tensors[:len(hx)]
        return torch.func.functional_call(module, dict(zip(names, tensors[len(hx):])),
                                          (x, states if len(states) == 2 else states[0]))

    x = leaf(rng.standard_normal((2, 2)), torch.float64)
    assert torch.autograd.gradcheck(f, (x, *hx, *module.parameters()))


# ------------------------------------------------------------------ modules and conversion


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("cells", [False, True], ids=["layer", "cell"])
def test_same_parameters_initialisation_and_repr_as_torch(cell, cells):
    options = dict(input_size=3, hidden_size=5, bias=False)
    if not cells:
        options.update(num_layers=2, bidirectional=True, batch_first=True)
    torch.manual_seed(7)
    reference = build(torch.nn, cell, torch.float32, cells, **options)
    torch.manual_seed(7)
    ours = build(rt, cell, torch.float32, cells, **options)
    assert isinstance(ours, type(reference))
    assert repr(ours) == repr(reference)
    got, want = ours.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


class Stack(torch.nn.Module):
    """A model with several recurrent modules, one nested."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
        self.inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
        self.inner.add_module("gru", torch.nn.GRU(4, 6, batch_first=True))
        self.rnn = torch.nn.RNN(6, 2, nonlinearity="relu")
        self.cell = torch.nn.GRUCell(2, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.inner.gru(self.inner[1](self.inner[0](y)).transpose(0, 1))
        y, h = self.rnn(y.transpose(0, 1))
        return self.cell(y[-1], None).sum() + y.square().sum() + h.sum()


def test_convert_keeps_weights_outputs_and_gradients():
    torch.manual_seed(0)
    model = Stack().double()
    before = copy.deepcopy(model)
    params = list(model.parameters())
    assert rt.convert(model) is model
    assert [type(m) for m in (model.lstm, model.inner.gru, model.rnn, model.cell)] == \
        [rt.LSTM, rt.GRU, rt.RNN, rt.GRUCell]
    assert all(a is b for a, b in zip(model.parameters(), params))  # the same tensors
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    got, want = model(x), before(x)
    assert rel_err(got.detach(), want.detach()) <= FLOAT64_TOL
    got.backward()
    want.backward()
    for (name, p), q in zip(model.named_parameters(), before.parameters()):
        assert p.dtype == torch.float64
        assert rel_err(p.grad, q.grad) <= FLOAT64_TOL, name


def test_gradients_only_for_the_tensors_that_need_them():
    """An input or state that needs no gradient gets None (its gradient is not computed), and
    the weights' gradients are the same, bit for bit, as when they all need one."""
    torch.manual_seed(0)
    module = rt.LSTM(3, 5, num_layers=2, bidirectional=True)
    x, h0, c0 = torch.randn(4, 2, 3), torch.randn(4, 2, 5), torch.randn(4, 2, 5)
    grads = []
    for needs in (True, False):
        module.zero_grad()
        for t in (x, h0, c0):
            t.grad = None
            t.requires_grad_(needs)
        output, (h_n, c_n) = module(x, (h0, c0))
        (output.sum() + h_n.square().sum()).backward()
        assert all((t.grad is not None) == needs for t in (x, h0, c0))
        grads.append([p.grad for p in module.parameters()])
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(*grads))


# ------------------------------------------------------------------ errors


def test_double_backward_through_dropout_raises():
    module = rt.GRU(2, 3, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="differentiate twice or with batched gradients"):
        torch.autograd.grad(module(x)[0].square().sum(), x, create_graph=True)


def test_other_devices_and_dtypes_raise():
    module = rt.LSTM(2, 3)
    with pytest.raises(NotImplementedError, match="meta: rnnfast.torch runs on CPU and CUDA"):
        module(torch.zeros(3, 2, 2, device="meta"))
    with pytest.raises(NotImplementedError, match="a tensor is on meta"):
        module(torch.zeros(3, 2, 2), (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, device="meta")))
    with pytest.raises(TypeError, match="computes in float32, float64, float16.* not in "
                                        "torch.float8_e4m3fn"):
        module.to(torch.float8_e4m3fn)(torch.zeros(3, 2, 2, dtype=torch.float8_e4m3fn))


# The dtypes of the GPU test, and the floor of the 16-bit rule (the type's unit roundoff, as in
# test_torch_bfloat16.py).
GPU_DTYPES = {"f64": torch.float64, "bf16": torch.bfloat16, "f16": torch.float16}
FLOORS16 = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def run_on_the_gpu(module, x, hx, lengths, dtype):
    """Forward and backward of ``module`` on CUDA tensors of x and hx rounded to ``dtype``,
    then in the module's dtype: outputs and every gradient (in the module's dtype, on the GPU)
    as float64 host arrays."""
    own = next(module.parameters()).dtype
    xt = torch.tensor(x, device="cuda").to(dtype).to(own).requires_grad_()
    hxt = tuple(torch.tensor(h, device="cuda").to(dtype).to(own).requires_grad_() for h in hx)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, states = module(packed, hxt if len(hxt) == 2 else hxt[0])
    outputs = [out.data, *(states if len(hxt) == 2 else (states,))]
    loss = sum((o.double() * torch.linspace(-1, 1, o.numel(), device="cuda",
                                            dtype=torch.float64).reshape(o.shape)).sum()
               for o in outputs)
    grads = torch.autograd.grad(loss, [xt, *hxt, *module.parameters()])
    assert all(g.device.type == "cuda" and g.dtype == own for g in grads)
    assert all(o.dtype == own for o in outputs)
    return [t.detach().double().cpu().numpy() for t in [*outputs, *grads]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available")
@pytest.mark.parametrize("dtype", GPU_DTYPES.values(), ids=GPU_DTYPES.keys())
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_tensors_match_torch_nn_on_the_gpu(cell, dtype):
    """CUDA tensors through DLPack into CuPy, on torch's stream and torch's caching allocator
    (needs CuPy and rnnfast's CUDA module): a packed, stacked, bidirectional layer against
    torch.nn on the same GPU, outputs and every gradient. float64: within FLOAT64_TOL of
    torch.nn's. bfloat16 (float32 copies computed as bfloat16) and float16: results in the
    module's dtype, within twice the error of torch.nn's run in that type against torch.nn in
    float64 on the same 16-bit inputs and weights, plus the type's unit roundoff. Memory:
    rnnfast's arrays come from torch's allocator (CuPy's pool stays as it was), and all of it
    is back there once the results are gone. (Not run where the suite was written: no GPU.)"""
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("rnnfast._cuda")
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")
    options = {"input_size": 3, "hidden_size": 6, "num_layers": 2, "bidirectional": True}
    reference = build(torch.nn, cell, dtype, **options).cuda()
    oracle = build(torch.nn, cell, torch.float64, **options).cuda()
    oracle.load_state_dict(reference.state_dict())  # the same (16-bit) values
    ours = build(rt, cell, dtype, **options).cuda()
    ours.load_state_dict(reference.state_dict())
    problem = layer_problem(cell, options, lengths=[2, 5, 1, 4])[:3]

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()  # so that an allocation from it would have to grow it
    pool_before = pool.total_bytes()
    run_on_the_gpu(ours, *problem, dtype)  # what either library allocates once and keeps
    torch.cuda.synchronize()
    allocated_before = torch.cuda.memory_allocated()
    got = run_on_the_gpu(ours, *problem, dtype)
    torch.cuda.synchronize()
    assert pool.total_bytes() == pool_before, "rnnfast allocated from CuPy's pool"
    assert torch.cuda.memory_allocated() == allocated_before, "memory not given back to torch"

    want = run_on_the_gpu(oracle, *problem, dtype)
    theirs = run_on_the_gpu(reference, *problem, dtype) if dtype != torch.float64 else None
    for i, (value, expected) in enumerate(zip(got, want)):
        bound = FLOAT64_TOL if theirs is None else \
            2 * rel_err(theirs[i], expected) + FLOORS16[dtype]
        assert rel_err(value, expected) <= bound, i


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_calls_run_on_torchs_stream_and_allocator(fake_cupy, monkeypatch, dtype):
    """The context of a call on a CUDA tensor (a stand-in: no GPU here; the GPU test checks the
    memory itself): CuPy on torch's current stream of the tensor's device, and CuPy's allocator
    one on torch's caching allocator, allocating for that device and stream and freeing to it
    when CuPy's memory goes; a bfloat16 call computes float32 as bfloat16. Outside it, CuPy's
    own again."""
    from rnnfast import _dtypes

    calls = []
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device: types.SimpleNamespace(cuda_stream=1234))
    monkeypatch.setattr(torch.cuda, "caching_allocator_alloc",
                        lambda *args: calls.append(("alloc", *args)) or 4096)
    monkeypatch.setattr(torch.cuda, "caching_allocator_delete",
                        lambda *args: calls.append(("delete", *args)))
    tensor = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0), dtype=dtype)
    with rt._on_torch_resources(tensor):
        assert fake_cupy.cuda.get_current_stream().ptr == 1234
        memory = fake_cupy.cuda.get_allocator()(512)
        assert calls == [("alloc", 512, 0, 1234)] and memory.ptr == 4096
        del memory
        assert calls[1:] == [("delete", 4096)]
        held = _dtypes.storage(_dtypes.FLOAT32)
        assert held == (_dtypes.BFLOAT16 if dtype == torch.bfloat16 else _dtypes.FLOAT32)
    assert fake_cupy.cuda.get_allocator() is None
    assert fake_cupy.cuda.get_current_stream().ptr == 0
    assert _dtypes.storage(_dtypes.FLOAT32) == _dtypes.FLOAT32


def test_modified_weights_before_backward_raise():
    module = rt.LSTM(2, 3)
    out, _ = module(torch.randn(3, 2, 2))
    with torch.no_grad():
        module.weight_hh_l0.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_kernels_run_on_the_tensors_memory(monkeypatch):
    """rnnfast.functional gets views of the input and parameter tensors, not copies."""
    seen = {}
    forward = rnnfast.functional.forward_layers

    def spy(cell, input, params, **options):
        seen.update({name: a.ctypes.data for name, a in params.items()}, input=input.ctypes.data)
        return forward(cell, input, params, **options)

    monkeypatch.setattr(rnnfast.functional, "forward_layers", spy)
    module = rt.LSTM(2, 3, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 2)
    module(x)
    assert seen.pop("input") == x.data_ptr()
    assert seen == {name: p.data_ptr() for name, p in module.named_parameters()}


def test_import_rnnfast_does_not_import_torch():
    code = "import sys, rnnfast; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
    # and rnnfast.torch's own `import torch` is PyTorch, not itself
    assert rt.torch is torch and pathlib.Path(rnnfast.__file__).parent not in \
        pathlib.Path(torch.__file__).parents


# ------------------------------------------------------------------ dropout


def dropout_probe(p, T=20, B=20, H=50):
    """A 2-layer ReLU RNN whose output is the dropout mask between its layers: the first layer
    outputs ones (weights 0, bias 1), the second passes its input through (identity)."""
    module = rt.RNN(1, H, num_layers=2, nonlinearity="relu", dropout=p, dtype=torch.float64)
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
        module.bias_ih_l0.fill_(1)
        module.weight_ih_l1.copy_(torch.eye(H))
    return module, torch.zeros(T, B, 1, dtype=torch.float64)


def test_dropout_masks_follow_torch_semantics_and_seed():
    p = 0.3
    module, x = dropout_probe(p)
    torch.manual_seed(0)
    mask = module(x)[0].detach()
    values = set(np.unique(mask.numpy()))
    assert values == {0.0, 1 / (1 - p)}, values
    # 20000 draws: the standard deviation of the fraction dropped is 0.0032.
    assert abs(float((mask == 0).double().mean()) - p) < 0.02
    torch.manual_seed(0)
    assert torch.equal(module(x)[0], mask)      # PyTorch's seed makes it reproducible
    assert not torch.equal(module(x)[0], mask)  # and each call draws new masks
    module.eval()
    assert torch.equal(module(x)[0], torch.ones_like(mask))  # none in eval mode


def test_eval_mode_has_no_dropout_and_keeps_gradients():
    options = dict(input_size=3, hidden_size=4, num_layers=3, dropout=0.5,
                   dtype=torch.float64)
    reference, ours = torch.nn.GRU(**options).eval(), rt.GRU(**options).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    got, want = ours(x)[0], reference(x)[0]
    assert rel_err(got.detach(), want.detach()) <= FLOAT64_TOL
    assert rel_err(torch.autograd.grad(got.sum(), x)[0],
                   torch.autograd.grad(want.sum(), x)[0]) <= FLOAT64_TOL
    with torch.no_grad():
        assert not ours(x)[0].requires_grad


def test_dropout_gradients_by_gradcheck():
    """The backward uses the forward's masks: gradcheck with the same seed for every call (two
    layers: one dropout between them, in both directions)."""
    module = rt.LSTM(2, 3, num_layers=2, dropout=0.5, bidirectional=True, dtype=torch.float64)
    names = [name for name, _ in module.named_parameters()]

    def f(x, *params):
        torch.manual_seed(0)
        return torch.func.functional_call(module, dict(zip(names, params)), (x,))[0]

    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *module.parameters()))


# ------------------------------------------------------------------ training


def test_ddp_two_processes_equal_one_process_on_the_whole_batch():
    steps = 5
    (losses_0, params_0), (losses_1, params_1) = train_torch_ddp.run_ddp(steps,
                                                                        dtype=torch.float64)
    assert len(losses_0) == len(losses_1) == steps
    assert all(torch.equal(params_0[k], params_1[k]) for k in params_0)
    single = train_torch_ddp.make_model(torch.float64)
    train_torch_ddp.train(single, steps)
    for name, value in single.state_dict().items():
        # the same math; only the order of the sums differs (gradient averaging)
        assert rel_err(params_0[name], value) <= FLOAT64_TOL, name
    assert not torch.equal(params_0["rnn.weight_hh_l0"],
                           train_torch_ddp.make_model(torch.float64).state_dict()[
                               "rnn.weight_hh_l0"])  # it trained


def sum_task_losses(namespace, steps=300, seed=0):
    """Trains namespace's LSTM on a small task (the sum of a sequence of +-1, scaled) from a
    fixed initialisation and data; returns the losses."""
    torch.manual_seed(seed)
    rnn = namespace.LSTM(1, 8, batch_first=True)
    head = torch.nn.Linear(8, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.02)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randint(0, 2, (16, 10, 1), generator=gen).float() * 2 - 1
        loss = torch.nn.functional.mse_loss(head(rnn(x)[0][:, -1]), x.sum(1) / 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


def test_training_reduces_the_loss_as_torch_does():
    # One torch thread: on tiny layers torch's intra-op threads and rnnfast's kernel threads,
    # both waiting busily for a while after their work, slow each other down several times
    # on a machine with few cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours, theirs = sum_task_losses(rt), sum_task_losses(torch.nn)
    finally:
        torch.set_num_threads(threads)
    start, end = ours[:10].mean(), (ours[-20:].mean(), theirs[-20:].mean())
    assert np.isclose(start, theirs[:10].mean(), rtol=1e-4)  # same init and data
    assert max(end) < 0.1 * start
    assert 0.33 < end[0] / end[1] < 3
