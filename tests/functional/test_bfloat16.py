"""The 16-bit types, bfloat16 (ml_dtypes.bfloat16) and float16: the bfloat16 GEMM on every
instruction set; the functional API, the layers and cells in both types on every backend NumPy
arrays reach (the CPU on every instruction set, and the emulated CUDA backend: the ``target``
fixture); the float32 matmul precisions "medium" (bfloat16 on the CPU) and "high" (TF32 on
CUDA); and a training loop.

Tolerance (the flash-attention rule): the oracle is the float64 reference on exactly the
16-bit inputs; the kernel's error against it may be at most twice that of the reference run at
the kernel's precision: float32 arithmetic on the same 16-bit inputs, with every value the
kernel rounds to the 16-bit type rounded there too. The kernels round: the results they return
in the 16-bit type (y, h_n, c_n and the gradients of x, h0, c0), and the operands of the
post-loop gradient GEMMs (dzx, dzh, h_prev), which multiply 16-bit values, and for bfloat16 on
the CPU instruction sets avx512_bf16 and amx also those of the recurrent matmul (h_{t-1}, and
dzh_t backward). Within the recurrence, h, c and the gates stay float32, as in the reference.
"""

import contextlib
import functools
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (rnnfast[bf16])")

import rnnfast  # noqa: E402
from rnnfast import _cpu, _dtypes, backends, functional as F, reference as ref  # noqa: E402

from _util import CELLS, FLOAT32_FLOOR, make_problem, rel_err  # noqa: E402

BF16, F16 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
TYPES16 = [pytest.param(BF16, id="bf16"), pytest.param(F16, id="f16")]
EMULATED = "cuda-emulated"
ALL_ISAS = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
BF16_RECURRENCE = ("avx512_bf16", "amx")  # where the recurrence multiplies in bfloat16
WHY_MISSING = {
    "amx": "no AMX on this machine (or the operating system refused its tile state), or not "
           "compiled",
    "avx512_bf16": "no AVX512-BF16 on this machine, or not compiled",
}


@contextlib.contextmanager
def isa_in_use(isa):
    """The CPU kernels on ``isa`` within the block, where this machine has it (else the test is
    skipped with the reason); then the one in use before."""
    if isa not in _cpu.available_isas():
        pytest.skip(WHY_MISSING.get(isa, f"{isa} not available here"))
    before = _cpu.active_isa()
    _cpu.set_isa(isa)
    try:
        yield isa
    finally:
        _cpu.set_isa(before)


@pytest.fixture(params=ALL_ISAS)
def bf16_isa(request):
    """Each instruction set of the CPU in turn (isa_in_use)."""
    with isa_in_use(request.param):
        yield request.param


@pytest.fixture(params=[*ALL_ISAS, pytest.param(EMULATED, marks=pytest.mark.slow)])
def target(request):
    """Where NumPy arrays run: the CPU backend on each instruction set in turn (as bf16_isa),
    then the emulated CUDA backend (slow, as the ``backend`` fixture of conftest.py marks it).
    Yields the instruction set's name or "cuda-emulated"."""
    with backends.emulate_cuda() if request.param == EMULATED else isa_in_use(request.param):
        yield request.param


@pytest.fixture(params=TYPES16)
def dtype16(request):
    return request.param


def rounded(a, dtype=BF16):
    """a rounded to ``dtype`` (a 16-bit type), as float32 (None kept)."""
    return None if a is None else np.asarray(a).astype(dtype).astype(np.float32)


def recurrent_rounding(dtype):
    """What the recurrence rounds its matmul's operands with, for arrays of ``dtype`` on the
    backend and instruction set in use: the 16-bit type on the CUDA backends (the tensor cores,
    on either path), bfloat16 for bfloat16 on the CPU's avx512_bf16 and amx, nothing elsewhere
    (float32 products: float16 and the other instruction sets on the CPU)."""
    if backends.for_array(np.empty(0)) is not backends.CPU:
        return functools.partial(rounded, dtype=dtype)
    if dtype == BF16 and _cpu.active_isa() in BF16_RECURRENCE:
        return rounded
    return None


def check(name, got, oracle, same_precision):
    """The rule of this file for one array."""
    err, err_ref = rel_err(got, oracle), rel_err(same_precision, oracle)
    bound = 2 * err_ref + FLOAT32_FLOOR
    assert err <= bound, f"{name}: rel err {err:.3e} > 2 * {err_ref:.3e} + floor"


# ------------------------------------------------------------------ the GEMM

# (m, n, k): tails of every block (32 rows, 16 and 32 columns, 32 deep), a depth of several
# passes (2048 each), and sizes of 1.
GEMM_SHAPES = [(5, 7, 3), (33, 70, 65), (100, 40, 2100), (64, 1, 1), (1, 130, 4500), (40, 33, 0)]


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "m%d-n%d-k%d" % s)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("types", ["bf16-bf16", "f32-bf16", "bf16-f32"])
def test_gemm_bf16_matches_rounded_product(bf16_isa, shape, trans_a, trans_b, types):
    m, n, k = shape
    rng = np.random.default_rng(m * 7 + n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    a_type, b_type = types.split("-")
    a_in = a.astype(BF16) if a_type == "bf16" else a
    b_in = b.astype(BF16) if b_type == "bf16" else b
    bias = rng.standard_normal(n).astype(np.float32)
    op_a = rounded(a.T if trans_a else a)
    op_b = rounded(b.T if trans_b else b)
    oracle = op_a.astype(np.float64) @ op_b.astype(np.float64) + bias
    same_precision = op_a @ op_b + bias  # float32 sums of the same bfloat16 products
    c = np.empty((m, n), np.float32)
    _cpu.gemm_bf16(a_in, b_in, c, trans_a=trans_a, trans_b=trans_b, bias=bias)
    check("c", c, oracle, same_precision)
    start = rng.standard_normal((m, n)).astype(np.float32)
    c = start.copy()
    _cpu.gemm_bf16(a_in, b_in, c, trans_a=trans_a, trans_b=trans_b, bias=bias, accumulate=True)
    check("c (accumulate)", c, oracle + start, same_precision + start)


def _rounding_cases(rng, shape):
    """float32 values that test rounding to bfloat16: ties between two bfloat16 values (which
    go to the even one), subnormals, NaN and infinities, among random values."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    ties = (rng.standard_normal(flat.size // 4).astype(BF16).astype(np.float32).view(np.uint32)
            | np.uint32(0x8000)).view(np.float32)  # halfway above a bfloat16 value
    flat[: ties.size] = ties
    flat[ties.size: ties.size + 5] = [1e-39, -3e-40, np.float32(2.0**-133), np.inf, -np.inf]
    flat[ties.size + 5] = np.nan
    rng.shuffle(flat)
    return x


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_gemm_bf16_rounds_float32_operands_as_ml_dtypes(bf16_isa, trans_a, trans_b):
    """A float32 operand is rounded as it is packed exactly as ml_dtypes rounds it (to nearest,
    ties to even, subnormals kept, NaN and infinities kept): the product is bit for bit the one
    of the operands rounded beforehand, for each layout the packing reads (an operand's rows or
    its depth contiguous), with tails of every block."""
    m, n, k = 37, 45, 70
    rng = np.random.default_rng(11)
    a = _rounding_cases(rng, (k, m) if trans_a else (m, k))
    b = _rounding_cases(rng, (n, k) if trans_b else (k, n))
    from_float32, from_bf16 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    _cpu.gemm_bf16(a, b, from_float32, trans_a=trans_a, trans_b=trans_b)
    _cpu.gemm_bf16(a.astype(BF16), b.astype(BF16), from_bf16, trans_a=trans_a, trans_b=trans_b)
    assert np.isnan(from_float32).any() and np.isfinite(from_float32).any()  # the cases reached C
    np.testing.assert_array_equal(from_float32, from_bf16)


def test_gemm_bf16_paths_agree_with_each_other_closely():
    """Every instruction set sums the same bfloat16 products in float32: they differ only by
    the order of the sums (a few float32 ulps of the largest partial sum)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((70, 300)).astype(BF16)
    b = rng.standard_normal((300, 50)).astype(BF16)
    results = {}
    for isa in _cpu.available_isas():
        _cpu.set_isa(isa)
        results[isa] = np.empty((70, 50), np.float32)
        _cpu.gemm_bf16(a, b, results[isa])
    _cpu.set_isa(_cpu.available_isas()[-1])
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    for isa, c in results.items():
        assert np.max(np.abs(c - results["baseline"]) / scale) < 1e-5, isa


def test_gemm_bf16_bad_arguments_raise():
    a = np.ones((4, 3), BF16)
    with pytest.raises(TypeError, match="a has dtype float64"):
        _cpu.gemm_bf16(np.ones((4, 3)), a.T.copy(), np.empty((4, 4), np.float32))
    with pytest.raises(TypeError, match="c has dtype bfloat16"):
        _cpu.gemm_bf16(a, a.T.copy(), np.empty((4, 4), BF16))
    with pytest.raises(ValueError, match="b has shape"):
        _cpu.gemm_bf16(a, a, np.empty((4, 4), np.float32))


def test_gemm_bf16_does_not_depend_on_thread_count():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 700)).astype(BF16)
    b = rng.standard_normal((300, 90)).astype(np.float32)
    before = rnnfast.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            rnnfast.set_num_threads(threads)
            c = np.empty((700, 90), np.float32)
            _cpu.gemm_bf16(a, b, c, trans_a=True)
            results.append(c)
    finally:
        rnnfast.set_num_threads(before)
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])


# ------------------------------------------------------------------ one layer

def problem16(cell, T, B, I, H, seed, dtype=BF16, proj=0):
    inputs, douts = make_problem(cell, T, B, I, H, dtype, seed=seed)
    options = {}
    if proj:
        rng = np.random.default_rng(seed + 1)
        k = 1.0 / np.sqrt(H)
        inputs["w_hh"] = rng.uniform(-k, k, (4 * H, proj)).astype(dtype)
        inputs["h0"] = rng.standard_normal((B, proj)).astype(dtype)
        douts["dy"] = rng.standard_normal((T, B, proj)).astype(dtype)
        douts["dh_n"] = rng.standard_normal((B, proj)).astype(dtype)
        options["w_hr"] = rng.uniform(-k, k, (proj, H)).astype(dtype)
    return inputs, douts, options


def reference(cell, inputs, douts, options, dtype, operand=None, lengths=None, resets=None,
              recurrent=None):
    """Forward and backward of the reference in dtype; results keyed like the checks. operand:
    None, or the rounding of the gradient GEMMs' operands; recurrent: that of the recurrent
    matmul's (recurrent_rounding)."""
    c = {k: (None if v is None else np.asarray(v).astype(dtype))
         for k, v in {**inputs, **douts, **options}.items()}
    y, h_n, c_n, cache = ref.forward(cell, c["x"], c["h0"], c["w_ih"], c["w_hh"],
                                     b_ih=c["b_ih"], b_hh=c["b_hh"], c0=c["c0"], w_hr=c.get("w_hr"),
                                     lengths=lengths, resets=resets, operand=recurrent)
    g = ref.backward(cache, c["dy"], c["dh_n"], c["dc_n"], operand=operand)
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    out.update({"d" + k: v for k, v in g.items()})
    return out


# What the kernels return in the 16-bit type (the rest: float32).
RESULTS16 = ("y", "h_n", "c_n", "dx", "dh0", "dc0")


def check_layer(cell, inputs, douts, options, got, lengths=None, resets=None):
    """got (run's results on inputs of a 16-bit type) by the rule of this file."""
    store = inputs["x"].dtype
    to_store = functools.partial(rounded, dtype=store)
    oracle = reference(cell, inputs, douts, options, np.float64, lengths=lengths, resets=resets)
    same = reference(cell, inputs, douts, options, np.float32, operand=to_store,
                     lengths=lengths, resets=resets, recurrent=recurrent_rounding(store))
    failures = []
    for name, value in got.items():
        if oracle[name] is None:
            assert value is None, name
            continue
        want = store if name in RESULTS16 else np.float32
        assert value.dtype == want, f"{name}: dtype {value.dtype}, expected {want}"
        same_precision = to_store(same[name]) if name in RESULTS16 else same[name]
        try:
            check(name, value, oracle[name], same_precision)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, f"{cell}: " + "; ".join(failures)


def run(cell, inputs, douts, options, lengths=None, resets=None):
    y, h_n, c_n, ctx = F.forward(cell, inputs["x"], inputs["h0"], inputs["w_ih"],
                                 inputs["w_hh"], b_ih=inputs["b_ih"], b_hh=inputs["b_hh"],
                                 c0=inputs["c0"], training=True, lengths=lengths, resets=resets,
                                 w_hr=options.get("w_hr"))
    g = F.backward(ctx, douts["dy"], douts["dh_n"], douts["dc_n"])
    return {"y": y, "h_n": h_n, "c_n": c_n, **{"d" + k: v for k, v in g.items()}}


LAYER_SHAPES = [(5, 3, 7, 33), (4, 1, 1, 1), (3, 37, 40, 20), (1, 2, 130, 7)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "T%d-B%d-I%d-H%d" % s)
def test_functional_matches_reference(target, dtype16, cell, shape):
    inputs, douts, options = problem16(cell, *shape, seed=sum(shape), dtype=dtype16)
    check_layer(cell, inputs, douts, options, run(cell, inputs, douts, options))


@pytest.mark.parametrize("cell", CELLS)
def test_functional_lengths_resets_projection(target, dtype16, cell):
    T, B = 6, 5
    proj = 9 if cell == "lstm" else 0
    inputs, douts, options = problem16(cell, T, B, 11, 20, seed=7, dtype=dtype16, proj=proj)
    lengths = np.array([6, 0, 3, 1, 5])
    resets = np.random.default_rng(1).random((T, B)) < 0.3
    got = run(cell, inputs, douts, options, lengths=lengths, resets=resets)
    check_layer(cell, inputs, douts, options, got, lengths=lengths, resets=resets)


def test_functional_does_not_depend_on_thread_count(dtype16):
    inputs, douts, options = problem16("lstm", 9, 40, 70, 48, seed=11, dtype=dtype16)
    before = rnnfast.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            rnnfast.set_num_threads(threads)
            results.append(run("lstm", inputs, douts, options))
    finally:
        rnnfast.set_num_threads(before)
    for got in results[1:]:
        for name, value in got.items():
            if value is not None:
                np.testing.assert_array_equal(value.view(np.uint16) if value.dtype == dtype16
                                              else value,
                                              results[0][name].view(np.uint16)
                                              if value.dtype == dtype16 else results[0][name],
                                              err_msg=name)


@pytest.mark.parametrize("shape", [(6, 5, 40), (3, 37, 70)], ids=["B5-H40", "B37-H70"])
def test_recurrence_rounds_its_operands_on_bf16_isas_only(bf16_isa, shape):
    """bf16_matmul: AMX tiles or vdpbf16ps (results differ from float32 products by the
    rounding of h); elsewhere the flag changes nothing (see cpp/src/cpu/dispatch.cpp)."""
    rng = np.random.default_rng(4)
    T, B, H = shape
    zx = rng.standard_normal((T, B, 4 * H)).astype(np.float32)
    w_hh = rounded(rng.uniform(-0.2, 0.2, (4 * H, H)))
    h0, c0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))

    def forward(bf16_matmul):
        y, h_n, c_n = np.empty((T, B, H), np.float32), np.empty((B, H), np.float32), \
            np.empty((B, H), np.float32)
        _cpu.recurrent_forward("lstm", zx, w_hh, None, h0, c0, y, h_n, c_n, None,
                               bf16_matmul=bf16_matmul)
        return y
    assert np.array_equal(forward(True), forward(False)) == (bf16_isa not in BF16_RECURRENCE)


def test_functional_mixed_and_bad_dtypes_raise(backend, dtype16):
    """On every backend: an argument of another dtype than x's is a TypeError naming it, and so
    is an x of a dtype rnnfast does not compute in."""
    inputs, douts, _ = problem16("lstm", 3, 2, 4, 5, seed=1, dtype=dtype16)
    other = F16 if dtype16 == BF16 else BF16
    for name in ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
        args = {**inputs, name: inputs[name].astype(np.float32)}
        with pytest.raises(TypeError, match=f"{name} has dtype float32, expected {dtype16}"):
            F.forward("lstm", args["x"], args["h0"], args["w_ih"], args["w_hh"],
                      b_ih=args["b_ih"], b_hh=args["b_hh"], c0=args["c0"])
    with pytest.raises(TypeError, match=f"w_hh has dtype {other}, expected {dtype16}"):
        F.forward("lstm", inputs["x"], inputs["h0"], inputs["w_ih"],
                  inputs["w_hh"].astype(other), c0=inputs["c0"])
    _, _, _, ctx = F.forward("lstm", inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
                             c0=inputs["c0"], training=True)
    with pytest.raises(TypeError, match=f"dy has dtype float32, expected {dtype16}"):
        F.backward(ctx, douts["dy"].astype(np.float32))
    for bad in (np.int16, np.complex64):
        with pytest.raises(TypeError, match=f"x has dtype {np.dtype(bad)}, expected float32"):
            F.forward("lstm", inputs["x"].astype(bad), inputs["h0"], inputs["w_ih"],
                      inputs["w_hh"], c0=inputs["c0"])


# ------------------------------------------------------------------ layers and cells

def reference_stack(cell, params, num_layers, bidirectional, x, dy, lengths, dtype, store,
                    recurrent=None):
    """The reference layers in dtype, one layer at a time, with store() applied where a
    16-bit layer rounds to its type: each layer's output and input gradient (operand=store
    rounds the gradient GEMMs' operands within each layer; recurrent: the recurrent matmul's
    operand, as recurrent_rounding). Returns (y, dx, grads)."""
    def of_layer(k, name):  # layer k's names as those of a single layer, and back
        return name.replace(f"_l{k}", "_l0")
    caches, layer_in = [], x.astype(dtype)
    for k in range(num_layers):
        p = {of_layer(k, n): v.astype(dtype) for n, v in params.items() if f"_l{k}" in n}
        d = 2 if bidirectional else 1
        out = p["weight_hh_l0"].shape[1]
        h0 = np.zeros((d, x.shape[1], out), dtype)
        c0 = np.zeros((d, x.shape[1], p["weight_ih_l0"].shape[0] // 4), dtype)
        y, _, _, cache = ref.forward_layers(cell, layer_in, p, 1, bidirectional, h0,
                                            c0 if cell == "lstm" else None, lengths,
                                            operand=recurrent)
        caches.append(cache)
        layer_in = store(y)
    grads, grad = {}, dy.astype(dtype)
    for k in reversed(range(num_layers)):
        grad, _, _, g = ref.backward_layers(caches[k], grad, operand=store)
        grad = store(grad)
        grads.update({n.replace("_l0", f"_l{k}"): v for n, v in g.items()})
    return layer_in, grad, grads


@pytest.mark.parametrize("cell,options", [
    ("lstm", dict(num_layers=2, bidirectional=True, proj_size=5)),
    ("gru", dict(num_layers=3, batch_first=True)),
    ("rnn_tanh", dict(num_layers=2, bidirectional=True)),
])
def test_layers_match_reference(target, dtype16, cell, options):
    """Stacks, directions, batch_first, lengths and the projection of a 16-bit layer, by the
    rule of this file; its same-precision reference rounds between the layers as well."""
    kind = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn_tanh": rnnfast.RNN}[cell]
    layer = kind(6, 12, dtype=dtype16.name, seed=4, **options)
    rng = np.random.default_rng(2)
    T, B = 5, 3
    x = rng.standard_normal((T, B, 6)).astype(dtype16)
    features = (2 if layer.bidirectional else 1) * (layer.proj_size or layer.hidden_size)
    dy = rng.standard_normal((T, B, features)).astype(dtype16)
    lengths = np.array([5, 2, 4])

    def edge(a):  # time-major <-> the layer's layout
        return a.transpose(1, 0, 2) if layer.batch_first else a
    out, _ = layer(edge(x), lengths=lengths)
    dx, _ = layer.backward(edge(dy))
    got = {"y": edge(out), "dx": edge(dx), **layer.grads}
    args = (cell, layer.state_dict(), layer.num_layers, layer.bidirectional, x, dy, lengths)
    results = {}
    to_store = functools.partial(rounded, dtype=dtype16)
    for name, dtype, store, recurrent in (
            ("oracle", np.float64, lambda a: a, None),
            ("same", np.float32, to_store, recurrent_rounding(dtype16))):
        y, grad, grads = reference_stack(*args, dtype, store, recurrent)
        results[name] = {"y": y, "dx": grad, **grads}
    for key, value in got.items():
        assert value.dtype == (dtype16 if key in ("y", "dx") else np.float32), key
        check(key, value, results["oracle"][key], results["same"][key])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_cell_step_matches_reference(bf16_isa, dtype16, cell):
    """The cells (CPU only), on every instruction set: the step's products of bfloat16 values
    (vdpbf16ps on avx512_bf16 and amx, else float32 on the widened values), float32 math, the
    new state rounded to the cell's 16-bit type; float16 converted to float32 and back around
    the float32 step."""
    kind = {"lstm": rnnfast.LSTMCell, "gru": rnnfast.GRUCell}.get(cell)
    c = kind(7, 9, dtype=dtype16.name, seed=1) if kind else rnnfast.RNNCell(
        7, 9, nonlinearity="relu", dtype=dtype16.name, seed=1)
    p = c.state_dict()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7)).astype(dtype16)
    hx = tuple(rng.standard_normal((4, 9)).astype(dtype16) for _ in range(2 if cell == "lstm"
                                                                          else 1))
    out = c(x, hx if cell == "lstm" else hx[0])
    out = out if cell == "lstm" else (out,)

    def step(dtype):
        r = ref.forward(cell, x[None].astype(dtype), hx[0].astype(dtype),
                        p["weight_ih"].astype(dtype), p["weight_hh"].astype(dtype),
                        b_ih=p["bias_ih"].astype(dtype), b_hh=p["bias_hh"].astype(dtype),
                        c0=hx[1].astype(dtype) if cell == "lstm" else None)
        return (r[1], r[2]) if cell == "lstm" else (r[1],)
    for got, oracle, same in zip(out, step(np.float64), step(np.float32)):
        assert got.dtype == dtype16
        check("state", got, oracle, rounded(same, dtype16))
    with pytest.raises(TypeError, match="input must be a numpy.ndarray of the cell's dtype"):
        c(x.astype(np.float32), hx if cell == "lstm" else hx[0])


def test_bfloat16_cell_step_binding_refuses_other_arrays():
    """Weights packed for bfloat16 take bfloat16 arrays only (the error names the argument);
    bfloat16 packing takes the weights' values in float32 only."""
    rng = np.random.default_rng(2)
    w_ih, w_hh = (rng.standard_normal((36, n)).astype(BF16).astype(np.float32) for n in (5, 9))
    packed = _cpu.pack_cell("lstm", w_ih, w_hh, None, None, bfloat16=True)
    x, h, c = (np.zeros((2, n), BF16) for n in (5, 9, 9))
    h_out, c_out = np.empty((2, 9), BF16), np.empty((2, 9), BF16)
    assert _cpu.cell_step(packed, x, h, c, h_out, c_out)
    with pytest.raises(TypeError, match="input has dtype float32, expected bfloat16"):
        _cpu.cell_step(packed, x.astype(np.float32), h, c, h_out, c_out)
    with pytest.raises(TypeError, match="out\\[1\\] has dtype float32, expected bfloat16"):
        _cpu.cell_step(packed, x, h, c, h_out, c_out.astype(np.float32))
    with pytest.raises(TypeError, match="bfloat16 cell's weights must be given in float32"):
        _cpu.pack_cell("lstm", w_ih.astype(np.float64), w_hh.astype(np.float64), None, None,
                       bfloat16=True)


# ------------------------------------------------------------------ float32, "medium" and "high"

def tf32(a):
    """a rounded to TF32 (float32's exponent, 10 mantissa bits; to nearest even), as float32."""
    mantissa, exponent = np.frexp(np.asarray(a, np.float64))  # mantissa in [0.5, 1)
    return (np.round(mantissa * 2.0 ** 11) * 2.0 ** (exponent - 11)).astype(np.float32)


# What each float32 precision rounds the matmuls' operands to, per backend (None: nothing).
FLOAT32_ROUNDING = {("cpu", "medium"): rounded, ("cpu", "high"): None,
                    (EMULATED, "medium"): tf32, (EMULATED, "high"): tf32}


@pytest.mark.parametrize("precision", ["medium", "high"])
def test_float32_matmul_precision_rounds_matmul_operands(target, precision):
    """float32 in and out, the matmuls' operands rounded: on the CPU under "medium" to bfloat16
    (every matmul, the recurrence's included), on CUDA under "medium" and "high" to TF32 (the
    large GEMMs: the emulator rounds their operands, on CuPy TF32 is CUPY_TF32's; and the
    recurrence's, on the tensor cores). By the rule of this file against the reference on the
    rounded operands (results float32, not rounded). "high" on the CPU is "highest"."""
    cell = "gru"
    inputs, douts = make_problem(cell, 4, 3, 40, 16, np.float32, seed=9)
    assert rnnfast.get_float32_matmul_precision() == "highest"
    highest = run(cell, inputs, douts, {})
    rnnfast.set_float32_matmul_precision(precision)
    try:
        got = run(cell, inputs, douts, {})
    finally:
        rnnfast.set_float32_matmul_precision("highest")
    operand = FLOAT32_ROUNDING[EMULATED if target == EMULATED else "cpu", precision]
    if operand is None:
        for name, value in got.items():
            np.testing.assert_array_equal(value, highest[name], err_msg=name)
        return
    matmul_in = {k: operand(v) if k in ("x", "w_ih", "w_hh") else v for k, v in inputs.items()}
    oracle = reference(cell, matmul_in, douts, {}, np.float64)
    same = reference(cell, matmul_in, douts, {}, np.float32, operand=operand,
                     recurrent=operand if operand is tf32 else recurrent_rounding(BF16))
    for name, value in got.items():
        if value is None:
            continue
        assert value.dtype == np.float32, name
        check(name, value, oracle[name], same[name])
    assert rel_err(got["y"], highest["y"]) > 1e-5  # not the float32 products
    with pytest.raises(ValueError, match="precision must be one of"):
        rnnfast.set_float32_matmul_precision("low")


def test_tf32_rounding_matches_the_tests():
    """rnnfast._dtypes' TF32 rounding (bits, in NumPy or CuPy) against tf32 above, with ties,
    carries into the exponent, the largest finite values, inf and NaN."""
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.standard_normal(10000).astype(np.float32),
                        np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2 - 2.0 ** -12, -1e-30,
                                  0.0, np.finfo(np.float32).max, np.inf, -np.inf], np.float32)])
    got = _dtypes.round_operand(a, _dtypes.TF32)
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, tf32(a))
    assert np.isnan(_dtypes.round_operand(np.array([np.nan], np.float32), _dtypes.TF32)).all()


class _OtherLibrary(np.ndarray):
    """An array of a library other than NumPy (as CuPy's arrays are), over NumPy's memory."""


def test_bfloat16_rounding_by_bits_matches_ml_dtypes():
    """bfloat16 on arrays of a library without that dtype (CuPy) is rounded by its bits: the
    same values as ml_dtypes' cast, with ties, carries into the exponent, the largest finite
    value (to inf), subnormals, inf and NaN."""
    rng = np.random.default_rng(0)
    tie, odd_tie = 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8  # halfway to 1 and to 1 + 2**-6
    a = np.concatenate([
        (rng.standard_normal(20000) * 2.0 ** rng.integers(-140, 120, 20000)).astype(np.float32),
        np.array([tie, odd_tie, -tie, 2 - 2.0 ** -9, 1e-40, -3e-45, 0.0, -0.0,
                  np.finfo(np.float32).max, np.inf, -np.inf], np.float32)])
    got = _dtypes.round_operand(a.view(_OtherLibrary), BF16)
    assert type(got) is _OtherLibrary and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.ndarray), rounded(a))
    assert np.isnan(_dtypes.round_operand(np.array([np.nan], np.float32).view(_OtherLibrary),
                                          BF16)).all()


# The float32 -> 16-bit roundings of the layers' results (_dtypes.to_storage): _cpu.round_to,
# to out's dtype.
ROUNDING_CASES = [  # float32 values where the roundings are delicate, by type
    [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8), 2 - 2.0 ** -9, 1e-40, -3e-45,
     np.finfo(np.float32).max],  # bfloat16: ties, a carry, subnormals, overflow
    [1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2 - 2.0 ** -12, 65504, 65519.996, 65520, 65536, 1e6,
     2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -26, 5.96e-8, 6.1e-5,
     -(2.0 ** -24 + 2.0 ** -25), 1e-40]]  # float16: ties, overflow, subnormal ties, underflow


@pytest.mark.parametrize("size", [0, 1, 40, 300_000, 1_200_000])  # past 2**18: 2 threads
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_rounding_to_16_bits_is_astype_bit_for_bit(bf16_isa, dtype, size):
    """_cpu.round_to to bfloat16 and float16 (the layers' 16-bit results, to_storage) gives
    astype's bits on every instruction set and for any split between the threads: ties, carries
    into the exponent, overflow to inf, subnormal results and their ties, underflow to zero,
    zeros of both signs, infinities, and NaNs with payloads of both signs (ml_dtypes makes each
    the quiet NaN of its sign, NumPy's float16 keeps the payload's top bits)."""
    rng = np.random.default_rng(size)
    special = np.array([*ROUNDING_CASES[dtype == F16], 0.0, -0.0, np.inf, -np.inf], np.float32)
    nans = np.array([0x7F800001, 0xFF812345, 0x7FC00000, 0xFFFFFFFF, 0x7FBFE000],
                    np.uint32).view(np.float32)
    magnitudes = 2.0 ** rng.integers(-140, 120 if dtype == BF16 else 18, size)
    a = (rng.standard_normal(size) * magnitudes).astype(np.float32)
    a[:len(special) + len(nans)] = np.concatenate([special, nans])[:size]
    out = np.full(a.shape, 7, dtype)
    _cpu.round_to(a, out)
    with np.errstate(invalid="ignore", over="ignore"):  # NumPy warns of NaNs and overflow cast
        expected = a.astype(dtype)
    assert out.view(np.uint16).tobytes() == expected.view(np.uint16).tobytes()
    if size >= 30:  # any shape, through the layers' route (to_storage)
        stored = _dtypes.to_storage(a[:30].reshape(2, 3, 5), dtype)
        assert stored.shape == (2, 3, 5) and stored.dtype == dtype
        assert stored.view(np.uint16).tobytes() == expected[:30].view(np.uint16).tobytes()


def f32(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
@pytest.mark.parametrize("call, error, message", [
    (lambda r, t: r(np.zeros(3), np.zeros(3, t)), TypeError,
     "x has dtype float64, expected float32"),
    (lambda r, t: r(f32(3), f32(3)), TypeError,
     "out has dtype float32, expected bfloat16 or float16"),
    (lambda r, t: r(f32(3), [0.0] * 3), TypeError, "out must be a numpy.ndarray"),
    (lambda r, t: r(f32(3, 2), np.zeros((2, 3), t)), ValueError,
     "out has shape (2, 3), expected (3, 2)"),
    (lambda r, t: r(f32(3, 2).T, np.zeros((2, 3), t)), ValueError, "x must be C-contiguous"),
    (lambda r, t: r([1.0], np.zeros(1, t)), TypeError, "x must be a numpy.ndarray"),
])
def test_rounding_to_16_bits_argument_errors(dtype, call, error, message):
    with pytest.raises(error) as info:
        call(_cpu.round_to, dtype)
    assert message in str(info.value)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_rounding_to_16_bits_refuses_an_out_over_x(dtype):
    a = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of x"):
        _cpu.round_to(a, a.view(dtype)[:8])
    assert not a.any()  # the caller's array untouched


# Dropout whose scale 1 / (1 - p), 1 + 2**-8 + 2**-30, float32 would round onto a tie of
# bfloat16 (1 + 2**-8, then to 1 by the tie's rule): a bfloat16 layer's masks hold 1 + 2**-7.
TIE_DROPOUT = 1 - 1 / (1 + 2.0 ** -8 + 2.0 ** -30)


@pytest.mark.parametrize("library", ["numpy", "stand-in cupy"])
@pytest.mark.parametrize("dropout", [0.0, 0.3, TIE_DROPOUT], ids=["no-dropout", "dropout",
                                                                  "dropout-tie"])
@pytest.mark.parametrize("cell, proj", [("lstm", 5), ("gru", 0)])
def test_bfloat16_values_in_float32_compute_as_bfloat16_arrays(library, dropout, cell, proj,
                                                               monkeypatch):
    """What rnnfast.torch hands the CUDA backend for bfloat16 CUDA tensors (CuPy has no
    bfloat16): float32 copies, inside _dtypes.bfloat16_in_float32. On the CUDA kernels (NumPy on
    the emulator, or the stand-in for CuPy), a stack of two bidirectional layers with lengths
    (and dropout) returns the bfloat16 arrays' results bit for bit, as float32: the outputs and
    final states, the gradients of the input, the states and every weight; and by the rule of
    this file against the reference (without dropout, which the reference lacks)."""
    kind = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell]
    layer = kind(6, 12, dtype="bfloat16", seed=4, num_layers=2, bidirectional=True,
                 **({"proj_size": proj} if proj else {}))
    params = layer.state_dict()
    rng = np.random.default_rng(3)
    T, B, out = 5, 3, proj or 12
    x = rng.standard_normal((T, B, 6)).astype(BF16)
    dy = rng.standard_normal((T, B, 2 * out)).astype(BF16)
    lengths = np.array([5, 2, 4])

    def run(convert):
        output, h_n, c_n, ctx = F.forward_layers(
            cell, convert(x), {k: convert(v) for k, v in params.items()}, num_layers=2,
            bidirectional=True, lengths=lengths, dropout=dropout,
            generator=np.random.default_rng(0), training=True)
        dx, dh0, dc0, grads = F.backward_layers(ctx, convert(dy))
        found = {"output": output, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0,
                 **grads}
        return {k: None if v is None else np.asarray(_fake_host(v)) for k, v in found.items()}

    with backends.emulate_cuda():
        native = run(lambda a: a)
        if library == "numpy":
            to_device = np.float32
        else:
            import _fake_cupy

            to_device = _fake_cupy.install(monkeypatch).asarray
        with _dtypes.bfloat16_in_float32():
            held = run(lambda a: to_device(a.astype(np.float32)))
        recurrent = recurrent_rounding(BF16)
    for name, value in held.items():
        if value is None:
            assert native[name] is None, name
            continue
        assert value.dtype == np.float32, name
        np.testing.assert_array_equal(value, native[name].astype(np.float32), err_msg=name)
    if dropout == 0:
        args = (cell, params, 2, True, x, dy, lengths)
        results = {}
        for name, dtype, store, operand in (("oracle", np.float64, lambda a: a, None),
                                            ("same", np.float32, rounded, recurrent)):
            y, grad, grads = reference_stack(*args, dtype, store, operand)
            results[name] = {"output": y, "dx": grad, **grads}
        for key in results["oracle"]:
            check(key, held[key], results["oracle"][key], results["same"][key])


def _fake_host(a):
    """A stand-in CuPy array's values as a NumPy array (others as they are)."""
    return a.get() if hasattr(a, "get") else a


def test_cuda_gemm_leaves_tf32_to_cublas_on_the_gpu():
    """The CUDA backend's GEMM over an array library other than NumPy (CuPy on a GPU; here
    NumPy under another name, as no GPU is needed) rounds 16-bit operands itself but leaves
    TF32 to cuBLAS (CuPy's process-wide switch): exact float32 products; the emulator (NumPy)
    rounds to TF32."""
    import types

    gpu_like = types.SimpleNamespace(ndarray=np.ndarray)
    backend = backends.CudaBackend("gpu-like", gpu_like, None, "numpy.ndarray", lambda: 0)
    emulated = backends.CudaBackend(EMULATED, np, None, "numpy.ndarray", lambda: 0)
    rng = np.random.default_rng(6)
    a, b = (rng.standard_normal((9, 20)).astype(np.float32) for _ in range(2))
    for be, rounding, operand in ((backend, _dtypes.TF32, lambda v: v),
                                  (emulated, _dtypes.TF32, tf32),
                                  (backend, _dtypes.FLOAT16, functools.partial(rounded,
                                                                               dtype=F16))):
        out = np.empty((9, 9), np.float32)
        be.gemm(a, b, out, trans_b=True, rounding=rounding)
        np.testing.assert_allclose(out, operand(a) @ operand(b).T, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ scripts

@pytest.mark.parametrize("script, args", [("bf16_cell_state.py", []),
                                          ("bf16_torch_accuracy.py", ["1"])])
def test_bfloat16_scripts_run(script, args):
    """The bfloat16 measurements of benchmarks/ (not part of the package) still run."""
    if script == "bf16_torch_accuracy.py":
        pytest.importorskip("torch", reason="the script compares with PyTorch")
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / script
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rnnfast" in done.stdout or "c float32" in done.stdout


# ------------------------------------------------------------------ training

@functools.cache  # the float32 run once for both 16-bit types
def train(dtype, steps=300):
    """SGD on an LSTM (2 layers) regressing a fixed random target; returns the losses. The
    parameters are kept and updated in float32 (master weights, as mixed-precision training
    does) and loaded into the layer in its dtype before each step."""
    layer = rnnfast.LSTM(8, 32, num_layers=2, dtype=dtype, seed=0)
    master = {k: v.astype(np.float32) for k, v in layer.state_dict().items()}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 16, 8)).astype(dtype)
    target = np.tanh(np.cumsum(rng.standard_normal((12, 16, 32)), axis=0) / 4)
    losses = []
    for _ in range(steps):
        out, _ = layer(x)
        diff = out.astype(np.float64) - target
        losses.append(float(np.mean(diff ** 2)))
        layer.backward((2 * diff / diff.size * 100).astype(dtype))
        master = {k: v - 0.5 * layer.grads[k] for k, v in master.items()}
        layer.load_state_dict(master)
    return losses


def test_training_loss_falls_as_in_float32(dtype16):
    """On the CPU (the emulated CUDA backend takes minutes for the 600 steps; the layer tests
    above check its gradients)."""
    low, f32 = train(dtype16), train(np.dtype(np.float32))
    assert low[-1] < 0.5 * low[0] and f32[-1] < 0.5 * f32[0]
    # The same descent up to the 16-bit rounding of the parameters at every update.
    assert low[-1] <= 1.1 * f32[-1] + 0.01 * f32[0], (low[-1], f32[-1])
