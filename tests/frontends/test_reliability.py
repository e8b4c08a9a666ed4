"""No silent wrong answers (issue 21): non-finite values in padding and in every argument,
arrays the caller modifies before backward, cells given states of any layout, sizes and
environment values refused up front, the thread split read back from the kernels, fork and
Python threads, the reference's stacks checked by finite differences, long sequences."""

import copy
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from _stack import accuracy_failures, make_layer, run_both

import rnnfast
from rnnfast import _cpu, backends, functional as F, reference as ref

from _util import (
    CELLS,
    DTYPES,
    FLOAT64_TOL,
    make_problem,
    reference_results,
    rel_err,
    seed_of,
)

DTYPE_IDS = ["f32", "f64"]
NONFINITE = [np.nan, np.inf, -np.inf]
NONFINITE_IDS = ["nan", "inf", "-inf"]


def stack_options(cell):
    """Options of a layer that exercise every path: two layers, both directions, and the
    LSTM's projection."""
    return {"num_layers": 2, "bidirectional": True, **({"proj_size": 3} if cell == "lstm" else {})}


# ------------------------------------------------------------------ padding


@pytest.mark.parametrize("value", NONFINITE, ids=NONFINITE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_nonfinite_padding_reaches_no_result(cell, dtype, value):
    """x and grad_output past each sequence's length (padding) are never read: NaN or inf there
    gives every result (outputs, states, all gradients) bitwise equal to zeros there, all
    finite, in the layers (kernels) and in the reference stack."""
    T, B, I, H = 6, 4, 5, 7
    lengths = np.array([6, 3, 0, 5])
    padding = np.arange(T)[:, None] >= lengths  # [T, B]
    rng = np.random.default_rng(seed_of("padding", cell))
    x = rng.standard_normal((T, B, I)).astype(dtype)
    layer = make_layer(cell, I, H, np.dtype(dtype).name, seed=1, **stack_options(cell))
    out_features = 2 * (layer.proj_size or H)
    dy = rng.standard_normal((T, B, out_features)).astype(dtype)
    x[padding], dy[padding] = 0, 0
    dirty_x, dirty_dy = x.copy(), dy.copy()
    dirty_x[padding], dirty_dy[padding] = value, value

    results = [run_both(layer, a, lengths=lengths, dy=g)
               for a, g in ((x, dy), (dirty_x, dirty_dy))]
    for (clean, clean_ref, _), (dirty, dirty_ref, _) in [results]:
        for name in clean:
            for what, a, b in (("layer", clean[name], dirty[name]),
                               ("reference", clean_ref[name], dirty_ref[name])):
                if a is None:
                    continue
                assert np.isfinite(b).all(), f"{what} {name}: non-finite values from padding"
                assert np.array_equal(a, b), f"{what} {name}: padding changed the result"


# ------------------------------------------------------------------ non-finite arguments

ARGUMENTS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "dy", "dh_n", "dc_n")


def _same_nonfinite_and_close(got, oracle):
    """'' if got has non-finite values exactly where the oracle has, and the finite values
    within FLOAT64_TOL of the oracle's largest finite magnitude; else what differs."""
    if not np.array_equal(np.isfinite(got), np.isfinite(oracle)):
        return (f"non-finite at {int((~np.isfinite(got)).sum())} places, the reference at "
                f"{int((~np.isfinite(oracle)).sum())}")
    finite = np.isfinite(oracle)
    if finite.any() and not rel_err(got[finite], oracle[finite]) <= FLOAT64_TOL:
        return f"finite values off by {rel_err(got[finite], oracle[finite]):.2e}"
    return ""


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("value", NONFINITE, ids=NONFINITE_IDS)
@pytest.mark.parametrize("cell, argument", [
    (cell, argument) for cell in CELLS for argument in ARGUMENTS
    if cell == "lstm" or argument not in ("c0", "dc_n", "w_hr")])  # those: the LSTM's only
def test_nonfinite_argument_gives_the_references_nonfinite_results(isa, cell, argument, value):
    """NaN or inf in one element of any argument: every result is non-finite exactly where the
    float64 reference's is (NaN and inf not told apart: a gate that saturates to exactly 0 in
    one and to 1e-300 in the other turns inf * 0 into NaN or inf), and equal elsewhere.
    Nothing finite where the reference is not: no silent wrong number."""
    T, B, I, H, P = 4, 3, 5, 7, 4
    inputs, douts = make_problem(cell, T, B, I, H, np.float64, seed=seed_of("nonfinite", cell))
    options = {}
    if argument == "w_hr":  # the projection: h0, w_hh, dy, dh_n of size P
        rng = np.random.default_rng(1)
        options["w_hr"] = rng.uniform(-0.4, 0.4, (P, H))
        inputs.update(w_hh=rng.uniform(-0.4, 0.4, (4 * H, P)), h0=rng.standard_normal((B, P)))
        douts.update(dy=rng.standard_normal((T, B, P)), dh_n=rng.standard_normal((B, P)))
    target = {**inputs, **douts, **options}[argument]
    target.reshape(-1)[target.size // 2] = value
    y, h_n, c_n, ctx = F.forward(cell, inputs["x"], inputs["h0"], inputs["w_ih"],
                                 inputs["w_hh"], b_ih=inputs["b_ih"], b_hh=inputs["b_hh"],
                                 c0=inputs["c0"], training=True, **options)
    grads = F.backward(ctx, douts["dy"], douts["dh_n"], douts["dc_n"])
    got = {"y": y, "h_n": h_n, "c_n": c_n, **{"d" + k: v for k, v in grads.items()}}
    oracle = reference_results(cell, inputs, douts, np.float64, options)
    problems = [f"{name}: {why}" for name, value in got.items()
                if value is not None and (why := _same_nonfinite_and_close(value, oracle[name]))]
    assert not problems, "; ".join(problems)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", NONFINITE, ids=NONFINITE_IDS)
@pytest.mark.parametrize("cell, argument", [
    (cell, argument) for cell in CELLS
    for argument in ("input", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    if cell == "lstm" or argument != "c"])
def test_nonfinite_cell_argument_gives_the_references_nonfinite_results(cell, argument, value):
    """The same for one step of a cell (rnnfast.LSTMCell & co.), against the reference's
    one-step sequence."""
    I, H, B = 5, 7, 3
    inputs, _ = make_problem(cell, 1, B, I, H, np.float64, seed=seed_of("cell nonfinite", cell))
    names = {"input": "x", "h": "h0", "c": "c0", "weight_ih": "w_ih", "weight_hh": "w_hh",
             "bias_ih": "b_ih", "bias_hh": "b_hh"}
    target = inputs[names[argument]]
    target.reshape(-1)[target.size // 2] = value
    cell_obj = {"lstm": rnnfast.LSTMCell, "gru": rnnfast.GRUCell}.get(cell)
    cell_obj = (cell_obj(I, H, dtype="float64") if cell_obj else
                rnnfast.RNNCell(I, H, nonlinearity=cell[4:], dtype="float64"))
    cell_obj.load_state_dict({"weight_ih": inputs["w_ih"], "weight_hh": inputs["w_hh"],
                              "bias_ih": inputs["b_ih"], "bias_hh": inputs["b_hh"]})
    state = (inputs["h0"], inputs["c0"]) if cell == "lstm" else inputs["h0"]
    got = cell_obj(inputs["x"][0], state)
    oracle = reference_results(cell, inputs, None, np.float64)
    pairs = zip(got, (oracle["h_n"], oracle["c_n"])) if cell == "lstm" else [(got, oracle["h_n"])]
    problems = [why for a, b in pairs if (why := _same_nonfinite_and_close(a, b))]
    assert not problems, "; ".join(problems)


# ------------------------------------------------------------------ what backward reads

LAYOUTS = {"time_major": {}, "batch_first": {"batch_first": True}, "unbatched": {},
           "bidirectional": {"bidirectional": True}}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_ignores_caller_changes_to_input_states_and_output(cell, layout):
    """The caller modifies, in place, the input, hx and the output it got, between forward and
    backward: the gradients are those of the forward as it ran (the layer keeps private
    copies of what backward reads)."""
    T, B, I, H = 5, 3, 4, 6
    layer = make_layer(cell, I, H, "float64", seed=2, **LAYOUTS[layout])
    rng = np.random.default_rng(seed_of("modify", cell, layout))
    shape = (T, I) if layout == "unbatched" else (B, T, I) if layout == "batch_first" else (T, B, I)
    x = rng.standard_normal(shape)
    state_shape = (layer.num_directions,) + (() if layout == "unbatched" else (B,)) + (H,)
    hx = tuple(rng.standard_normal(state_shape) for _ in range(2 if cell == "lstm" else 1))
    hx = hx if cell == "lstm" else hx[0]
    results = []
    for modify in (False, True):
        inputs = [x.copy(), copy.deepcopy(hx)]
        output, _ = layer(*inputs)
        dy = np.linspace(-1, 1, output.size).reshape(output.shape)
        if modify:
            output *= 0.5
            inputs[0] *= 2
            for s in (inputs[1] if cell == "lstm" else (inputs[1],)):
                s += 3
        grad_input, grad_hx = layer.backward(dy)
        results.append([grad_input, *(grad_hx if cell == "lstm" else (grad_hx,)),
                        *layer.grads.values()])
    for before, after in zip(*results):
        assert np.array_equal(before, after)


# ------------------------------------------------------------------ cells: layouts and copies


def _unaligned(a):
    """A copy of ``a`` whose data does not start on its element size (C-contiguous, writable)."""
    raw = np.empty(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _strided(a):
    """A copy of ``a`` that is not C-contiguous (every other element of a wider array)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    out = wide[..., ::2]
    out[...] = a
    assert not out.flags.c_contiguous
    return out


CELL_CLASSES = {"lstm": rnnfast.LSTMCell, "gru": rnnfast.GRUCell,
                "rnn_tanh": rnnfast.RNNCell, "rnn_relu": rnnfast.RNNCell}


def new_cell(cell, I, H, dtype="float32", seed=0):
    extra = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    return CELL_CLASSES[cell](I, H, dtype=dtype, seed=seed, **extra)


@pytest.mark.parametrize("layout", ["strided", "unaligned", "transposed", "layer_output"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_takes_states_and_out_of_any_layout(cell, dtype, layout):
    """States and out of any strides and alignment, as the layers take them (e.g. h = out[:, -1]
    of a batch_first layer): the same bits as contiguous arrays; the caller's arrays unchanged,
    out written."""
    B, I, H = 3, 5, 6
    step = new_cell(cell, I, H, np.dtype(dtype).name, seed=3)
    rng = np.random.default_rng(seed_of("cell layout", cell, layout))
    x = rng.standard_normal((B, I)).astype(dtype)
    parts = 2 if cell == "lstm" else 1
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(parts)]
    expected = step(x, tuple(states) if parts == 2 else states[0])
    expected = expected if parts == 2 else (expected,)

    def relaid(a):
        if layout == "strided":
            return _strided(a)
        if layout == "unaligned":
            return _unaligned(a)
        if layout == "transposed":
            return a.T.copy().T
        wide = np.zeros((B, 4, a.shape[-1]), dtype)  # a batch_first layer's output [B, T, .]
        wide[:, -1] = a
        return wide[:, -1]

    given = [relaid(s) for s in states]
    before = [g.copy() for g in given]
    outs = [relaid(np.zeros((B, H), dtype)) for _ in range(parts)]
    got = step(relaid(x), tuple(given) if parts == 2 else given[0],
               out=tuple(outs) if parts == 2 else outs[0])
    got = got if parts == 2 else (got,)
    for g, o, e in zip(got, outs, expected):
        assert g is o
        assert np.array_equal(o, e)
    for g, b in zip(given, before):
        assert np.array_equal(g, b)


def test_cell_out_overlapping_a_strided_state_is_refused():
    """out may reach the kernel as a buffer (when the kernel cannot write it in place): its
    overlap with the state is still refused by name."""
    step = rnnfast.GRUCell(4, 6)
    wide = np.zeros((2, 12), np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of hx"):
        step(np.ones((2, 4), np.float32), wide[:, ::2], out=wide[:, ::2])


@pytest.mark.parametrize("layout", ["strided", "unaligned"])
def test_lengths_of_any_layout(layout):
    """lengths of any strides and alignment give the results of a plain array."""
    layer = rnnfast.GRU(3, 5, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    lengths = np.array([6, 2, 0, 4], np.int64)
    expected, _ = layer(x, lengths=lengths)
    given = _strided(lengths[None])[0] if layout == "strided" else _unaligned(lengths)
    got, _ = layer(x, lengths=given)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("cell", CELLS)
def test_used_cell_pickles_and_deep_copies(cell, how):
    """A cell that has run (its weights packed) pickles and deep-copies; the copy gives the same
    bits, keeps its parameters read-only and is independent of the original."""
    step = new_cell(cell, 4, 6, seed=5)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    expected = step(x)
    twin = pickle.loads(pickle.dumps(step)) if how == "pickle" else copy.deepcopy(step)
    got = twin(x)
    for a, b in zip(*(r if cell == "lstm" else (r,) for r in (got, expected))):
        assert np.array_equal(a, b)
    assert not twin.weight_hh.flags.writeable
    twin.weight_hh = np.zeros_like(twin.weight_hh)
    assert not np.array_equal(step.weight_hh, twin.weight_hh)


# ------------------------------------------------------------------ sizes and environment


@pytest.mark.parametrize("make", [
    lambda: rnnfast.LSTM(2**40, 8),
    lambda: rnnfast.GRU(8, 2**28, num_layers=2),
    lambda: rnnfast.RNN(4, 2**20, num_layers=3, bidirectional=True),
    lambda: rnnfast.LSTMCell(2**40, 8),
    lambda: rnnfast.GRUCell(8, 2**30, dtype="float64"),
], ids=["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell"])
def test_absurd_sizes_refused_before_allocating(make):
    """Parameters larger than the machine's memory raise MemoryError naming the layer or cell,
    at once (nothing allocated, no system allocation failure or swap storm)."""
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"(LSTM|GRU|RNN)(Cell)?\(.*more than this machine's"):
        make()
    assert time.perf_counter() - start < 1.0


def _import_with_env(name, value, code="import rnnfast; print(rnnfast.get_num_threads())"):
    env = {**os.environ, name: value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("value", ["abc", "0", "-2", "5000", "2x", "1.5"])
def test_invalid_num_threads_env_warns_and_keeps_the_default(value):
    """An invalid RNNFAST_NUM_THREADS warns at import, naming the value (as RNNFAST_ISA does),
    and the default thread count stays."""
    default = _import_with_env("RNNFAST_NUM_THREADS", "")
    result = _import_with_env("RNNFAST_NUM_THREADS", value)
    assert result.returncode == 0, result.stderr
    assert f"RNNFAST_NUM_THREADS={value!r} ignored" in result.stderr
    assert result.stdout == default.stdout


@pytest.mark.parametrize("value", ["3", " 2", "+1"])
def test_valid_num_threads_env_is_used_without_warning(value):
    result = _import_with_env("RNNFAST_NUM_THREADS", value)
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    assert int(result.stdout) == int(value)


# ------------------------------------------------------------------ threads: a real split


@pytest.fixture
def threads_restored():
    saved = rnnfast.get_num_threads()
    yield
    rnnfast.set_num_threads(saved)


def _split_hidden(gates, dtype):
    """H for the split test: 100, or the largest multiple of 4 below it whose W_hh, packed, fits
    under the row split's limit (cpu_info()'s row_split_panel_bytes, half the L2: 256 KB on a
    512 KB L2, where float64 LSTM panels at H = 100 take 320 KB). Panels pad each gate's units
    to a tile's width, at most 256 bytes (four AVX-512 vectors); the bound counts that."""
    limit = rnnfast.cpu_info()["tuning"]["row_split_panel_bytes"]
    size = np.dtype(dtype).itemsize
    pad = 256 // size
    for H in range(100, 0, -4):
        if gates * -(-H // pad) * pad * H * size <= limit:
            return H
    pytest.skip(f"row_split_panel_bytes = {limit}: no W_hh fits under the row split")


def _recurrence(cell, dtype, B, seed):
    """Arguments of _cpu.recurrent_forward/backward for T = 4, H = _split_hidden (W_hh small
    enough for the row split in float64 too), with lengths and resets."""
    from rnnfast.cell_registry import SPECS

    G, S = SPECS[cell].gate_count, _cpu.saved_per_unit(cell)
    T, H = 4, _split_hidden(G, dtype)
    rng = np.random.default_rng(seed)
    arrays = {"zx": rng.standard_normal((T, B, G * H)), "w_hh": rng.uniform(-0.1, 0.1, (G * H, H)),
              "b_hh": rng.standard_normal(G * H), "h0": rng.standard_normal((B, H)),
              "c0": rng.standard_normal((B, H)) if cell == "lstm" else None,
              "dy": rng.standard_normal((T, B, H))}
    arrays = {k: None if v is None else v.astype(dtype) for k, v in arrays.items()}
    lengths = rng.integers(0, T + 1, B).astype(np.int64)
    resets = rng.random((T, B)) < 0.3
    return T, H, G, S, arrays, lengths, resets


def _run_recurrence(cell, dtype, B, seed):
    """Forward and backward kernel calls; returns (results, split of the forward, of the
    backward)."""
    T, H, G, S, a, lengths, resets = _recurrence(cell, dtype, B, seed)
    y, h_n = np.empty((T, B, H), dtype), np.empty((B, H), dtype)
    c_n = np.empty((B, H), dtype) if cell == "lstm" else None
    saved = backends.CPU.empty((T, B, S * H), dtype, aligned=True) if S else None
    _cpu.recurrent_forward(cell, a["zx"], a["w_hh"], a["b_hh"], a["h0"], a["c0"], y, h_n, c_n,
                           saved, lengths, resets)
    forward_split = _cpu.last_split()
    dzx = np.empty((T, B, G * H), dtype)
    dzh = np.empty_like(dzx) if cell == "gru" else None
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype) if cell == "lstm" else None
    _cpu.recurrent_backward(cell, a["w_hh"], a["h0"], a["c0"], y, saved, a["dy"], None, None,
                            dzx, dzh, dh0, dc0, lengths, resets)
    backward_split = _cpu.last_split()
    results = [r for r in (y, h_n, c_n, saved, dzx, dzh, dh0, dc0) if r is not None]
    return results, forward_split, backward_split


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_recurrence_really_splits_and_results_do_not_depend_on_threads(isa, cell, dtype,
                                                                       threads_restored):
    """On every instruction set, float32 and float64: over batches from 1 to 40, the forward
    and the backward kernel each ran split by rows and by columns on 2 or 3 threads (read back
    from the kernel), and every result is bitwise that of one thread."""
    seen = set()
    for B in list(range(1, 14)) + [24, 40]:
        rnnfast.set_num_threads(1)
        expected, *splits = _run_recurrence(cell, dtype, B, seed_of("split", cell, B))
        assert all(s["threads"] == 1 for s in splits), splits
        for threads in (2, 3):
            rnnfast.set_num_threads(threads)
            got, *splits = _run_recurrence(cell, dtype, B, seed_of("split", cell, B))
            for e, g in zip(expected, got):
                assert np.array_equal(e, g), f"B={B}, {threads} threads: {splits}"
            for s in splits:
                assert 1 <= s["threads"] <= threads
                if s["threads"] > 1:
                    seen.add((s["kernel"], s["split"]))
    wanted = {(k, s) for k in ("recurrent_forward", "recurrent_backward")
              for s in ("rows", "columns")}
    assert wanted <= seen, f"never split: {sorted(wanted - seen)}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gemm_and_cell_step_really_split_and_results_do_not_depend_on_threads(
        isa, dtype, threads_restored):
    """The GEMMs (split by panels and by rows, A transposed or not) and a cell step, on 2 and 3
    threads as read back from the kernel: bitwise the results of one thread."""
    rng = np.random.default_rng(seed_of("gemm split", dtype))
    cases = [(200, 64, 300, False), (64, 1000, 80, False), (300, 97, 200, True)]  # m, n, k, ta
    seen = set()
    step = rnnfast.LSTMCell(60, 90, dtype=np.dtype(dtype).name, seed=0)
    x, h, c = (rng.standard_normal((5, n)).astype(dtype) for n in (60, 90, 90))
    for m, n, k, trans_a in cases:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        results = []
        for threads in (1, 2, 3):
            rnnfast.set_num_threads(threads)
            out = np.empty((m, n), dtype)
            _cpu.gemm(a, b, out, trans_a=trans_a)
            split = _cpu.last_split()
            assert split["kernel"] == "gemm" and split["threads"] <= threads
            seen.add((split["split"], split["threads"] > 1))
            h_out, c_out = step(x, (h, c))
            cell_split = _cpu.last_split()
            assert cell_split["kernel"] == "cell_step"
            seen.add(("cell units", cell_split["threads"] > 1))
            results.append([out, h_out, c_out])
        for other in results[1:]:
            for e, g in zip(results[0], other):
                assert np.array_equal(e, g)
    assert {("panels", True), ("rows", True), ("cell units", True)} <= seen, sorted(seen)


# ------------------------------------------------------------------ fork and Python threads

FORK_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    import numpy as np
    from rnnfast import functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 12, 64)).astype(np.float32)
    w_ih = rng.standard_normal((256, 64)).astype(np.float32) / 8
    w_hh = rng.standard_normal((256, 64)).astype(np.float32) / 8
    h0 = np.zeros((12, 64), np.float32)

    def run():
        return F.forward("gru", x, h0, w_ih[:192], w_hh[:192])[0]

    # The pool's workers are not started yet: this thread's first call starts them while the
    # main thread forks.
    worker = threading.Thread(target=lambda: [run() for _ in range(30)])
    worker.start()
    children = []
    for _ in range(12):
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a deadlocked child dies (SIGALRM) instead of hanging the test
            os._exit(0 if np.isfinite(run()).all() else 1)
        children.append(pid)
    worker.join()
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    print(statuses)
    sys.exit(0 if all(s == 0 for s in statuses) else 1)
""")


def test_fork_while_the_thread_pool_starts():
    """Another thread's first kernel call starts the pool's workers while the main thread
    forks: every child runs a kernel on several threads and exits (no deadlock on
    a lock or an initialisation guard held by a thread that does not exist in the child)."""
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True,
                                text=True, timeout=120,
                                env={**os.environ, "RNNFAST_NUM_THREADS": "3"})
        assert result.returncode == 0, result.stdout + result.stderr


def test_two_python_threads_on_one_layer_and_one_cell(threads_restored):
    """Two Python threads share one layer (training forwards and backwards through the private
    _forward/_backward, as the torch adapter does, and eval forwards) and one cell: every
    result is bitwise the one computed alone."""
    rnnfast.set_num_threads(2)
    layer = rnnfast.LSTM(16, 32, num_layers=2, bidirectional=True, seed=0)
    step = rnnfast.GRUCell(16, 32, seed=1)
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((12, 5, 16)).astype(np.float32) for _ in range(2)]
    dys = [rng.standard_normal((12, 5, 64)).astype(np.float32) for _ in range(2)]

    def compute(i):
        out, _, saved = layer._forward(layer._params, True, None, xs[i], None, None, None)
        grad_x, _, grads = layer._backward(saved, dys[i], None)
        inference, _, _ = layer._forward(layer._params, False, None, xs[i], None, None, None)
        h = step(xs[i][0])
        return [out, grad_x, grads["weight_hh_l0"], inference, h]

    expected = [compute(i) for i in range(2)]
    failures = []

    def worker(i):
        for _ in range(15):
            for e, g in zip(expected[i], compute(i)):
                if not np.array_equal(e, g):
                    failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _allowed_cpus_of_every_thread():
    """{thread id: the CPUs it may run on} for every thread of this process."""
    allowed = {}
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            allowed[int(task.name)] = os.sched_getaffinity(int(task.name))
        except (FileNotFoundError, ProcessLookupError):  # a thread that has just ended
            pass
    return allowed


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux thread affinities and at least 2 CPUs")
@pytest.mark.parametrize("caller_cpus", ["all", "one"])
def test_runs_that_wake_sleeping_workers_give_every_thread_its_cpus_back(caller_cpus,
                                                                         threads_restored):
    """A long run that wakes workers asleep for a while holds the caller on its CPU, and a
    worker that Linux woke on that CPU moves off it (thread_pool.cpp; the move happens only
    where Linux put it there, so not in every run). After each such run (a GEMM and a layer on
    2 threads, each after 30 ms idle) the caller and every worker may again run on exactly the
    CPUs they had, also where the caller had only one, and the results are bitwise those of
    one thread."""
    rng = np.random.default_rng(seed_of("affinity"))
    # Both long enough to move workers (thread_pool.h's kMovesWorkers, 32 M multiply-adds):
    # 57 M in the GEMM, 84 M in the layer's recurrence.
    a, b = (rng.standard_normal((384, 384)).astype(np.float32) for _ in range(2))
    layer = rnnfast.LSTM(64, 256, seed=0)
    x = rng.standard_normal((20, 16, 64)).astype(np.float32)
    rnnfast.set_num_threads(1)
    expected_product, expected_y = np.empty_like(a), layer(x)[0]
    _cpu.gemm(a, b, expected_product)
    original = os.sched_getaffinity(0)
    if caller_cpus == "one":
        os.sched_setaffinity(0, {min(original)})
    try:
        caller = os.sched_getaffinity(0)
        rnnfast.set_num_threads(2)
        product = np.empty_like(a)
        _cpu.gemm(a, b, product)  # starts the workers
        before = _allowed_cpus_of_every_thread()
        for _ in range(5):
            time.sleep(0.03)  # longer than the workers' idle spin and kLongSleep (10 ms)
            _cpu.gemm(a, b, product)
            assert _cpu.last_split()["threads"] == 2
            assert np.array_equal(product, expected_product)
            assert os.sched_getaffinity(0) == caller
            time.sleep(0.03)
            assert np.array_equal(layer(x)[0], expected_y)
            assert os.sched_getaffinity(0) == caller
        # A worker gives its CPUs back right after it reports its part done: wait for that.
        deadline = time.monotonic() + 2
        while _allowed_cpus_of_every_thread() != before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _allowed_cpus_of_every_thread() == before
    finally:
        os.sched_setaffinity(0, original)


PYTEST_THREAD_EXCEPTION = textwrap.dedent("""
    import threading

    def test_worker_raises():
        def fail():
            raise RuntimeError("raised in a worker thread")
        t = threading.Thread(target=fail)
        t.start()
        t.join()
""")


def test_exception_in_a_worker_thread_fails_the_test(tmp_path):
    """With this project's pytest configuration an exception in a thread a test starts fails
    that test (pytest only warns by default)."""
    root = pathlib.Path(__file__).resolve().parents[2]  # the repository
    (tmp_path / "test_thread.py").write_text(PYTEST_THREAD_EXCEPTION)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-c", os.path.join(root, "pyproject.toml"), "--rootdir",
                             str(tmp_path), str(tmp_path / "test_thread.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "raised in a worker thread" in result.stdout


# ------------------------------------------------------------------ the reference's stacks

STACK_CASES = {
    "stacked": {"num_layers": 3},
    "bidirectional": {"bidirectional": True},
    "dropout": {"num_layers": 2, "dropout": 0.5},
    "everything": {"num_layers": 2, "bidirectional": True, "dropout": 0.3, "lengths": True,
                   "resets": True, "proj": True},
}


def _stack_problem(cell, case, seed):
    """Random float64 arguments of reference.forward_layers for a case of STACK_CASES, and
    random gradients of the loss with respect to its results."""
    opts = STACK_CASES[case]
    T, B, I, H = 5, 3, 3, 4
    L, D = opts.get("num_layers", 1), 2 if opts.get("bidirectional") else 1
    P = 2 if opts.get("proj") and cell == "lstm" else 0
    R, G = P or H, {"lstm": 4, "gru": 3}.get(cell, 1)
    rng = np.random.default_rng(seed)
    params = {}
    for k in range(L):
        for sfx in ("", "_reverse")[:D]:
            inputs = I if k == 0 else D * R
            params.update({f"weight_ih_l{k}{sfx}": rng.uniform(-0.6, 0.6, (G * H, inputs)),
                           f"weight_hh_l{k}{sfx}": rng.uniform(-0.6, 0.6, (G * H, R)),
                           f"bias_ih_l{k}{sfx}": rng.uniform(-0.5, 0.5, G * H),
                           f"bias_hh_l{k}{sfx}": rng.uniform(-0.5, 0.5, G * H)})
            if P:
                params[f"weight_hr_l{k}{sfx}"] = rng.uniform(-0.6, 0.6, (P, H))
    args = {"x": rng.standard_normal((T, B, I)), "h0": rng.standard_normal((L * D, B, R)),
            "c0": rng.standard_normal((L * D, B, H)) if cell == "lstm" else None}
    fixed = {"lengths": np.array([5, 2, 4]) if opts.get("lengths") else None,
             "resets": (rng.random((T, B)) < 0.3) if opts.get("resets") else None,
             "masks": None}
    if opts.get("dropout"):
        p = opts["dropout"]
        fixed["masks"] = [(rng.random((T, B, D * R)) >= p) / (1 - p) for _ in range(L - 1)]
    seeds = {"dy": rng.standard_normal((T, B, D * R)), "dh_n": rng.standard_normal((L * D, B, R)),
             "dc_n": rng.standard_normal((L * D, B, H)) if cell == "lstm" else None}
    return params, args, fixed, seeds, (L, D > 1)


@pytest.mark.parametrize("case", STACK_CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_reference_stack_gradients_match_finite_differences(cell, case):
    """reference.backward_layers (the oracle of every layer test) against central finite
    differences of reference.forward_layers, in float64, for every argument and parameter: the
    directional derivative along two random directions each, loss = <dy, y> + <dh_n, h_n> +
    <dc_n, c_n>. Central differences with step 1e-6 are exact to about 1e-9 here; a wrong term
    is off by order one."""
    params, args, fixed, seeds, (layers, bidirectional) = _stack_problem(
        cell, case, seed_of("fd", cell, case))

    def run(params, args):
        return ref.forward_layers(cell, args["x"], params, layers, bidirectional, args["h0"],
                                  args["c0"], **fixed)

    def loss(params, args):
        y, h_n, c_n, _ = run(params, args)
        total = np.sum(seeds["dy"] * y) + np.sum(seeds["dh_n"] * h_n)
        return total + (np.sum(seeds["dc_n"] * c_n) if c_n is not None else 0.0)

    _, _, _, cache = run(params, args)
    dx, dh0, dc0, grads = ref.backward_layers(cache, seeds["dy"], seeds["dh_n"], seeds["dc_n"])
    analytic = {"x": dx, "h0": dh0, "c0": dc0, **grads}
    assert set(grads) == set(params)
    rng = np.random.default_rng(0)
    eps = 1e-6
    failures = []
    for name, gradient in analytic.items():
        if gradient is None:
            continue
        in_params = name in params
        for _ in range(2):
            direction = rng.standard_normal(gradient.shape)
            shifted = []
            for sign in (1, -1):
                p, a = dict(params), dict(args)
                target = p if in_params else a
                target[name] = target[name] + sign * eps * direction
                shifted.append(loss(p, a))
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            exact = float(np.sum(gradient * direction))
            if not abs(numeric - exact) <= 1e-7 * max(1.0, abs(exact)):
                failures.append(f"{name}: finite differences {numeric:.9g}, backward {exact:.9g}")
    assert not failures, "; ".join(failures)


# ------------------------------------------------------------------ long sequences


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_float32_accuracy(cell):
    """T = 1000 steps of a two-layer bidirectional layer in float32, with lengths (one sequence
    cut at 600): outputs, states and every gradient within the tolerance rule (twice the
    float32 reference's own error plus the floor) of the float64 reference. The assertion
    message reports every error."""
    T, B, I, H = 1000, 2, 4, 8
    layer = make_layer(cell, I, H, "float32", seed=4, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(seed_of("long", cell))
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    got, oracle, ref32 = run_both(layer, x, lengths=np.array([T, 600]), dy=dy)
    failures, errors = accuracy_failures(got, oracle, ref32)
    report = ", ".join(f"{name} {err:.2e}" for name, err in errors.items())
    assert not failures, f"{'; '.join(failures)} (all errors: {report})"
    assert max(errors.values()) < 1e-4, report  # float32 over 1000 steps, not a lucky pass


# ------------------------------------------------------------------ the benchmark's check


def _scale(name, factor):
    def alter(out):
        out[name] = out[name] * factor
    return alter


def _nan(name):
    def alter(out):
        out[name] = out[name].copy()
        out[name].reshape(-1)[0] = np.nan
    return alter


@pytest.mark.parametrize("alter, message", [
    (_scale("y", 1 + 1e-4), "MISMATCH max rel err 1.0e-04 >"),  # passed the former 1e-3
    (_nan("grad_weight_hh_l0"), "MISMATCH NaN in grad_weight_hh_l0"),
    (lambda out: out.pop("grad_input"), "MISMATCH missing output grad_input"),
], ids=["off-by-1e-4", "nan", "missing"])
def test_benchmark_check_flags_small_errors_nan_and_missing_outputs(alter, message):
    """The benchmark checks every implementation against the float64 reference with the tests'
    rule: rnnfast's outputs (float32, training) pass; the same outputs with one off by 1e-4
    (which the former fixed 1e-3 let pass), with NaN in one element, or with one missing,
    fail with a message that says so."""
    from rnnfast.bench.grids import Row
    from rnnfast.bench.peers import RnnfastPeer, make_problem
    from rnnfast.bench.runner import check_outputs, reference_outputs, tolerances

    problem = make_problem(Row("lstm", "train", 20, 3, 5, 4), np.dtype(np.float32))
    oracle = reference_outputs(problem, np.float64)
    tolerance = tolerances(problem, "float32", oracle)
    ours = RnnfastPeer().build(problem)(True)
    assert check_outputs(ours, oracle, tolerance)[:2] == (True, "ok")
    alter(ours)
    ok, check, _ = check_outputs(ours, oracle, tolerance)
    assert not ok and check.startswith(message), check


# float64, float32 and float16 two-layer LSTMs forward and backward, their results saved to
# argv[1]; with argv[2] == "without", in a process where `import ml_dtypes` fails.
LAYERS_WITH_OR_WITHOUT_ML_DTYPES = textwrap.dedent("""
    import sys
    if sys.argv[2] == "without":
        sys.modules["ml_dtypes"] = None  # import ml_dtypes fails: bfloat16 is not installed
    import numpy as np
    import rnnfast
    assert (rnnfast._dtypes.BFLOAT16 is None) == (sys.argv[2] == "without")
    rng = np.random.default_rng(0)
    results = []
    for dtype in ("float64", "float32", "float16"):
        layer = rnnfast.LSTM(3, 5, num_layers=2, dtype=dtype, seed=0)
        out, (h, c) = layer(rng.standard_normal((4, 2, 3)).astype(dtype))
        grad_x, _ = layer.backward(np.ones_like(out))
        results += [out, h, c, grad_x, layer.grads["weight_hh_l0"]]
    np.savez(sys.argv[1], *results)
""")


def test_float64_stays_float64_without_ml_dtypes(tmp_path):
    """Without ml_dtypes (an optional dependency), float64, float32 and float16 layers compute
    exactly as with it: bitwise the same results. (NumPy takes a dtype compared with None for
    float64: a test for bfloat16 written as ``dtype == BFLOAT16`` would take float64 for
    bfloat16 when BFLOAT16 is None.)"""
    results = {}
    for case in ("with", "without"):
        subprocess.run([sys.executable, "-c", LAYERS_WITH_OR_WITHOUT_ML_DTYPES,
                        str(tmp_path / f"{case}.npz"), case], check=True, timeout=120)
        results[case] = np.load(tmp_path / f"{case}.npz")
    assert len(results["with"].files) == 15
    for name in results["with"].files:
        g, w = results["without"][name], results["with"][name]
        assert g.dtype == w.dtype and np.array_equal(g, w), name


def test_import_leaves_ml_dtypes_until_bfloat16_is_asked_for():
    """``import rnnfast`` does not import ml_dtypes (about a second of ufunc registration with
    NumPy); a bfloat16 layer made from the name "bfloat16" imports it and computes."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import rnnfast
        assert "ml_dtypes" not in sys.modules
        rnnfast.LSTM(3, 5, seed=0)(np.ones((4, 2, 3), np.float32))
        assert "ml_dtypes" not in sys.modules
        layer = rnnfast.LSTM(3, 5, dtype="bfloat16", seed=0)
        assert "ml_dtypes" in sys.modules and layer.dtype == rnnfast._dtypes.BFLOAT16
        out, _ = layer(np.ones((4, 2, 3), layer.dtype))
        assert out.dtype == layer.dtype
    """)
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
