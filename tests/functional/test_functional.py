"""rnnfast.functional (the C++ kernels) against the NumPy reference, and its invariants.

Accuracy: see the tolerance rule in _util.py (float64: 1e-10 relative to the oracle's largest
magnitude; float32: at most twice the float32 reference's own error plus a 16-ulp floor).
"""

import threading

import numpy as np
import pytest

from rnnfast import backends, functional as F

from _util import (
    CELLS,
    DTYPES,
    GATES,
    GRAD_NAMES,
    STEP_TOL,
    assert_matches_oracle,
    assert_unchanged,
    copies,
    make_problem,
    rel_err,
    seed_of,
    shape_id,
)

# Every numerical test here runs once per compiled instruction set (the `isa` fixture).
pytestmark = pytest.mark.usefixtures("isa")


# (T, B, I, H): I and H from {1, 7, 33, 130} (1: degenerate, 7: below one SIMD vector,
# 33: one past a multiple of 8/16/32, 130: two past 128 and several tiles), B of 1 and 3,
# T of 1 and 5, one longer sequence, and one batch past a chunk of row tiles (microkernel.h).
# A selection, not the cross product, to keep it fast.
SHAPES = [
    (1, 1, 1, 1),
    (5, 3, 1, 7),
    (5, 1, 7, 1),
    (1, 3, 7, 33),
    (5, 3, 33, 7),
    (5, 1, 33, 130),
    (5, 3, 130, 33),
    (1, 1, 130, 130),
    (5, 3, 7, 130),
    (20, 3, 33, 33),
    (4, 9, 13, 70),  # B = 9: two full 4-row tiles and a 1-row tail
    (3, 53, 7, 130),  # B = 53: two chunks of row tiles; depth 130 (and 4 * 130): depth blocks
    (4, 12, 16, 64),  # H = 64: aligned rows, the workspace's non-temporal stores; B = 12: rows
]                     # split between threads under AVX-512 (two tiles, recurrence.cpp)
SHAPE_IDS = [shape_id(*s) for s in SHAPES]
DTYPE_IDS = ["f32", "f64"]


def run_functional(cell, inputs, douts, training=True, options=None):
    """Forward (and backward if training) through rnnfast.functional; same keys as
    _util.reference_results. options: lengths, resets, w_hr."""
    y, h_n, c_n, ctx = F.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"], training=training,
        **(options or {})
    )
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if training:
        grads = F.backward(ctx, douts["dy"], douts["dh_n"], douts["dc_n"])
        projected = (options or {}).get("w_hr") is not None
        assert set(grads) == set(GRAD_NAMES) | ({"w_hr"} if projected else set()), sorted(grads)
        out.update({"d" + k: grads[k] for k in grads})
    else:
        assert ctx is None
    return out


# ------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference(cell, dtype, shape, bias):
    inputs, douts = make_problem(cell, *shape, dtype, bias=bias, seed=seed_of(cell, shape, bias))
    got = run_functional(cell, inputs, douts)
    if cell != "lstm":
        assert got["c_n"] is None and got["dc0"] is None
    # b_ih/b_hh gradients are returned even without biases: the gradient of a zero bias
    assert got["db_ih"] is not None and got["db_hh"] is not None
    assert_matches_oracle(cell, inputs, douts, got, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_state_gradients(cell, dtype):
    """dh_n and dc_n default to None, meaning zero."""
    inputs, douts = make_problem(cell, 5, 3, 7, 33, dtype, seed=seed_of("nograd", cell))
    douts = {"dy": douts["dy"], "dh_n": None, "dc_n": None}
    got = run_functional(cell, inputs, douts)
    assert_matches_oracle(cell, inputs, douts, got, dtype)


# ------------------------------------------------------------------ invariants


@pytest.mark.parametrize("shape", [(5, 3, 7, 33), (6, 1, 33, 130)], ids=lambda s: shape_id(*s))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_sequence_equals_single_steps(cell, dtype, shape):
    inputs, _ = make_problem(cell, *shape, dtype, seed=seed_of("steps", cell, shape))
    full = run_functional(cell, inputs, None, training=False)
    h, c = inputs["h0"], inputs["c0"]
    ys = []
    for t in range(shape[0]):
        y_t, h, c, _ = F.forward(
            cell, inputs["x"][t:t + 1], h, inputs["w_ih"], inputs["w_hh"],
            b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=c,
        )
        assert y_t.shape == (1,) + h.shape
        ys.append(y_t[0])
    tol = STEP_TOL[dtype]
    assert rel_err(np.stack(ys), full["y"]) <= tol
    assert rel_err(h, full["h_n"]) <= tol
    if cell == "lstm":
        assert rel_err(c, full["c_n"]) <= tol
    else:
        assert c is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_training_forward_equals_inference_forward(cell, dtype):
    inputs, douts = make_problem(cell, 7, 3, 33, 130, dtype, seed=seed_of("train", cell))
    train = run_functional(cell, inputs, douts, training=True)
    infer = run_functional(cell, inputs, douts, training=False)
    for name in ("y", "h_n", "c_n"):
        if cell != "lstm" and name == "c_n":
            assert infer[name] is None
            continue
        assert np.array_equal(train[name], infer[name]), name


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_repeated_call_is_bitwise_identical(cell, dtype):
    inputs, douts = make_problem(cell, 6, 3, 33, 130, dtype, seed=seed_of("again", cell))
    first = run_functional(cell, inputs, douts)
    second = run_functional(cell, inputs, douts)
    for name, value in first.items():
        if value is None:
            assert second[name] is None, name
        else:
            assert np.array_equal(value, second[name]), name


def test_scratch_buffers_reused_across_shapes_dtypes_and_threads():
    """functional keeps per-thread scratch buffers (zx, dzx, dzh) between calls: results must
    not depend on what ran before (a larger problem, a smaller one, another dtype) nor on
    another thread running at the same time."""
    cases = [("gru", 5, 3, 7, 33, np.float32), ("gru", 9, 4, 7, 70, np.float32),
             ("lstm", 2, 2, 7, 9, np.float64), ("rnn_tanh", 4, 3, 5, 20, np.float32),
             ("gru", 5, 3, 7, 33, np.float32)]
    problems = [make_problem(cell, T, B, I, H, dtype, seed=seed_of("scratch", i))
                for i, (cell, T, B, I, H, dtype) in enumerate(cases)]

    def run_all():
        return [run_functional(case[0], *problem) for case, problem in zip(cases, problems)]

    alone = []
    for case, problem in zip(cases, problems):
        F.free_scratch()
        alone.append(run_functional(case[0], *problem))
    results = {"main": run_all()}

    def worker(name):
        results[name] = [run_all() for _ in range(3)][-1]

    threads = [threading.Thread(target=worker, args=(f"thread {i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, got in results.items():
        for expected, result in zip(alone, got):
            for key, value in expected.items():
                assert (value is None and result[key] is None) or \
                    np.array_equal(value, result[key]), (name, key)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_caller_arrays_not_modified(cell, dtype, training):
    inputs, douts = make_problem(cell, 5, 3, 7, 33, dtype, seed=seed_of("const", cell))
    before_in, before_d = copies(inputs), copies(douts)
    first = run_functional(cell, inputs, douts, training=training)
    kept = copies(first)
    # a second call must not overwrite the arrays the first one returned (no shared buffers)
    inputs2, douts2 = make_problem(cell, 5, 3, 7, 33, dtype, seed=seed_of("const2", cell))
    run_functional(cell, inputs2, douts2, training=training)
    assert_unchanged(before_in, inputs)
    assert_unchanged(before_d, douts)
    assert_unchanged(kept, first)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_outputs_have_input_dtype_and_shapes(cell, dtype):
    T, B, I, H = 4, 3, 7, 33
    inputs, douts = make_problem(cell, T, B, I, H, dtype, seed=seed_of("shapes", cell))
    got = run_functional(cell, inputs, douts)
    assert got["y"].shape == (T, B, H) and got["y"].dtype == dtype
    assert got["h_n"].shape == (B, H) and got["h_n"].dtype == dtype
    if cell == "lstm":
        assert got["c_n"].shape == (B, H) and got["c_n"].dtype == dtype
    for k in GRAD_NAMES:
        if got["d" + k] is not None:
            shape = inputs[k].shape if inputs[k] is not None else (inputs["w_hh"].shape[0],)
            assert got["d" + k].shape == shape, k
            assert got["d" + k].dtype == dtype, k


@pytest.mark.parametrize("cell", CELLS)
def test_noncontiguous_arguments(cell):
    """Strided and transposed views give the same result as their contiguous copies."""
    dtype = np.float32
    inputs, douts = make_problem(cell, 5, 3, 7, 33, dtype, seed=seed_of("strided", cell))
    expected = run_functional(cell, inputs, douts)

    def strided(a):
        # a view with every other element of a twice-as-wide buffer along the last axis
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        buf[..., ::2] = a
        v = buf[..., ::2]
        assert not v.flags.c_contiguous
        return v

    def transposed(a):
        # a Fortran-ordered copy: same values and shape, not C-contiguous
        v = np.asfortranarray(a)
        assert not v.flags.c_contiguous
        return v

    def reversed_view(a):
        # a view with a negative stride
        v = a[::-1].copy()[::-1]
        assert v.strides[0] < 0
        return v

    views = {
        "x": transposed(inputs["x"]),
        "h0": strided(inputs["h0"]),
        "c0": None if inputs["c0"] is None else transposed(inputs["c0"]),
        "w_ih": transposed(inputs["w_ih"]),
        "w_hh": strided(inputs["w_hh"]),
        "b_ih": strided(inputs["b_ih"]),
        "b_hh": reversed_view(inputs["b_hh"]),
    }
    dviews = {
        "dy": strided(douts["dy"]),
        "dh_n": transposed(douts["dh_n"]),
        "dc_n": None if douts["dc_n"] is None else strided(douts["dc_n"]),
    }
    got = run_functional(cell, views, dviews)
    for name, value in expected.items():
        if value is None:
            assert got[name] is None, name
        else:
            assert np.array_equal(got[name], value), name


@pytest.mark.parametrize("cell", CELLS)
def test_read_only_arguments(cell):
    inputs, douts = make_problem(cell, 4, 3, 7, 33, np.float32, seed=seed_of("ro", cell))
    expected = run_functional(cell, inputs, douts)
    for d in (inputs, douts):
        for v in d.values():
            if v is not None:
                v.setflags(write=False)
    got = run_functional(cell, inputs, douts)
    for name, value in expected.items():
        if value is not None:
            assert np.array_equal(got[name], value), name


@pytest.mark.parametrize("cell", CELLS)
def test_inference_ctx_is_none(cell):
    inputs, _ = make_problem(cell, 3, 2, 7, 7, np.float32, seed=seed_of("ctx", cell))
    *_, ctx = F.forward(
        cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
        b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"],
    )
    assert ctx is None


# ------------------------------------------------------------------ bad input


MIXED = [(cell, wrong) for cell in ("gru", "lstm")
         for wrong in ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
         if cell == "lstm" or wrong != "c0"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["x_f32", "x_f64"])
@pytest.mark.parametrize("cell,wrong", MIXED, ids=[f"{c}-{w}" for c, w in MIXED])
def test_mixed_dtypes_raise_type_error(cell, wrong, dtype):
    inputs, _ = make_problem(cell, 3, 2, 7, 7, dtype, seed=seed_of("mixed", cell))
    other = np.float64 if dtype == np.float32 else np.float32
    inputs[wrong] = inputs[wrong].astype(other)
    with pytest.raises(TypeError):
        F.forward(
            cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
            b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"],
        )


@pytest.mark.parametrize("dtype", [np.complex64, np.int32], ids=["c64", "i32"])
def test_unsupported_dtype_raises(dtype):
    inputs, _ = make_problem("gru", 3, 2, 7, 7, np.float64, seed=2)
    inputs = {k: v.astype(dtype) for k, v in inputs.items() if v is not None}
    with pytest.raises((TypeError, ValueError)):
        F.forward(
            "gru", inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
            b_ih=inputs["b_ih"], b_hh=inputs["b_hh"],
        )


def test_unknown_cell_raises():
    inputs, _ = make_problem("gru", 3, 2, 7, 7, np.float32, seed=1)
    with pytest.raises(ValueError, match="cell"):
        F.forward("lstmish", inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"])


# ------------------------------------------------------------------ lengths and resets


def lengths_resets(case, T, B, seed):
    """Options for a case: "lengths" (any order, with 0, 1 and T), "resets" (about a third of
    the steps), or "both"."""
    rng = np.random.default_rng(seed)
    options = {}
    if case in ("lengths", "both"):
        options["lengths"] = rng.permutation(np.resize([T, 0, 1, T // 2 + 1], B))
    if case in ("resets", "both"):
        options["resets"] = rng.random((T, B)) < 0.35
    return options


LR_SHAPES = [(7, 5, 13, 37), (6, 9, 7, 130), (1, 3, 7, 33), (9, 2, 1, 1)]


@pytest.mark.parametrize("case", ["lengths", "resets", "both"])
@pytest.mark.parametrize("shape", LR_SHAPES, ids=[shape_id(*s) for s in LR_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_and_resets_match_reference(cell, dtype, shape, case):
    T, B = shape[:2]
    inputs, douts = make_problem(cell, *shape, dtype, seed=seed_of(cell, shape, case))
    options = lengths_resets(case, T, B, seed_of(case, shape))
    got = run_functional(cell, inputs, douts, options=options)
    assert_matches_oracle(cell, inputs, douts, got, dtype, options)
    if "lengths" in options:  # padding is exactly zero, in the outputs and in dx
        pad = np.arange(T)[:, None] >= options["lengths"]
        assert not got["y"][pad].any() and not got["dx"][pad].any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_full_lengths_and_no_resets_change_nothing(cell, dtype):
    T, B = 6, 3
    inputs, douts = make_problem(cell, T, B, 7, 33, dtype, seed=seed_of("noop", cell))
    plain = run_functional(cell, inputs, douts)
    options = {"lengths": np.full(B, T), "resets": np.zeros((T, B), bool)}
    options["resets"][0] = True  # step 0 starts from h0 anyway
    same = run_functional(cell, inputs, douts, options=options)
    for name, value in plain.items():
        if value is not None:
            assert np.array_equal(same[name], value), name


BAD_OPTIONS = {
    "negative": ("lengths", lambda T, B: {"lengths": np.full(B, -1)}),
    "too_long": ("lengths", lambda T, B: {"lengths": np.full(B, T + 1)}),
    "wrong_shape": ("lengths", lambda T, B: {"lengths": np.full(B + 1, T)}),
    "float": ("lengths", lambda T, B: {"lengths": np.full(B, float(T))}),
    "resets_shape": ("resets", lambda T, B: {"resets": np.zeros((B, T), bool)}),
    "resets_int": ("resets", lambda T, B: {"resets": np.zeros((T, B), np.int32)}),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_lengths_and_resets_raise(case):
    T, B = 4, 3
    inputs, _ = make_problem("lstm", T, B, 5, 6, np.float32, seed=2)
    word, make = BAD_OPTIONS[case]
    with pytest.raises(ValueError, match=word):
        run_functional("lstm", inputs, None, training=False, options=make(T, B))


# ------------------------------------------------------------------ LSTM projection


def projection_problem(T, B, I, H, P, dtype, seed):
    """An LSTM problem with a projection W_hr [P, H]: h0, y, h_n of size P, w_hh [4H, P]."""
    inputs, douts = make_problem("lstm", T, B, I, H, dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    k = 1.0 / np.sqrt(H)
    new = {"w_hr": rng.uniform(-k, k, (P, H)), "w_hh": rng.uniform(-k, k, (4 * H, P)),
           "h0": 0.5 * rng.standard_normal((B, P)), "dy": rng.standard_normal((T, B, P)),
           "dh_n": rng.standard_normal((B, P))}
    new = {name: v.astype(dtype) for name, v in new.items()}
    inputs.update({name: new[name] for name in ("w_hh", "h0")})
    douts.update({name: new[name] for name in ("dy", "dh_n")})
    return inputs, douts, new["w_hr"]


# (T, B, I, H, P): P below, equal to and above H (PyTorch wants P < H; the kernels do not),
# P = 1, and H of several tiles
PROJ_SHAPES = [(7, 5, 13, 37, 11), (6, 9, 7, 130, 70), (3, 2, 3, 4, 1), (5, 3, 7, 33, 65),
               (4, 3, 5, 16, 16)]


@pytest.mark.parametrize("case", ["plain", "both"])
@pytest.mark.parametrize("shape", PROJ_SHAPES, ids=[f"P{s[4]}-" + shape_id(*s[:4])
                                                     for s in PROJ_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_projection_matches_reference(dtype, shape, case):
    T, B = shape[:2]
    inputs, douts, w_hr = projection_problem(*shape, dtype, seed=seed_of("proj", shape))
    options = {"w_hr": w_hr}
    if case == "both":
        options.update(lengths_resets("both", T, B, seed_of(case, shape)))
    got = run_functional("lstm", inputs, douts, options=options)
    assert_matches_oracle("lstm", inputs, douts, got, dtype, options)
    inference = run_functional("lstm", inputs, douts, training=False, options=options)
    for name in ("y", "h_n", "c_n"):
        assert np.array_equal(inference[name], got[name]), name


def test_projection_only_for_the_lstm():
    inputs, _ = make_problem("gru", 3, 2, 4, 5, np.float32, seed=3)
    with pytest.raises(ValueError, match="w_hr"):
        run_functional("gru", inputs, None, training=False,
                       options={"w_hr": np.zeros((2, 5), np.float32)})


# ------------------------------------------------------------------ threads


# Results for 1, 2 and 3 requested threads, bitwise. Whether a call really runs on several
# threads, and with which split, depends on its size (the kernels cap the threads by the work);
# tests/frontends/test_reliability.py::test_recurrence_really_splits_... reads the split back
# and asserts it. These shapes are small and may run on one thread.
THREAD_SHAPES = [(5, 3, 33, 130), (6, 9, 9, 40), (6, 5, 9, 40), (6, 4, 9, 40)]


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=[shape_id(*s) for s in THREAD_SHAPES])
@pytest.mark.parametrize("cell", CELLS)
def test_results_do_not_depend_on_requested_thread_count(cell, shape):
    import rnnfast

    T, B, I, H = shape
    inputs, douts = make_problem(cell, T, B, I, H, np.float32, seed=seed_of("threads", cell))
    projected = projection_problem(T, B, I, H, min(100, H - 10), np.float32,
                                   seed=seed_of("threads", cell))
    saved = rnnfast.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            rnnfast.set_num_threads(n)
            results.append(run_functional(cell, inputs, douts))
            results.append(run_functional(cell, inputs, douts,
                                          options=lengths_resets("both", T, B, 1)))
            results.append(run_functional("lstm", *projected[:2],
                                          options={"w_hr": projected[2]}))
    finally:
        rnnfast.set_num_threads(saved)
    for i, other in enumerate(results[3:]):
        for name, value in results[i % 3].items():
            if value is not None:
                assert np.array_equal(other[name], value), name



# ------------------------------------------------------------------ the training workspace


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])  # the cells that keep a workspace
def test_workspace_alignment_does_not_change_results(cell, dtype):
    """The training forward stores its workspace around the caches where its rows are
    vector-aligned (as functional allocates it) and with ordinary stores elsewhere: the same
    bits either way, and the backward reads the same gradients from both."""
    from rnnfast import _cpu
    T, B, H = 3, 5, 64  # H = 64: every row of the workspace aligned when its start is
    G, S = GATES[cell], _cpu.saved_per_unit(cell)
    rng = np.random.default_rng(seed_of("workspace", cell))
    zx = rng.standard_normal((T, B, G * H)).astype(dtype)
    w_hh = (rng.standard_normal((G * H, H)) / 8).astype(dtype)
    b_hh, h0 = rng.standard_normal(G * H).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype) if cell == "lstm" else None
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    aligned = backends.CPU.empty((T * B * S * H + 1,), dtype, aligned=True)
    results = []
    for saved in (aligned[:-1], aligned[1:]):  # vector-aligned, then one element past
        saved = saved.reshape(T, B, S * H)
        y, h_n = np.empty((T, B, H), dtype), np.empty((B, H), dtype)
        c_n = np.empty((B, H), dtype) if cell == "lstm" else None
        _cpu.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved)
        saved_copy = saved.copy()
        dzx = np.empty((T, B, G * H), dtype)
        dzh = np.empty_like(dzx) if cell == "gru" else None
        dh0 = np.empty((B, H), dtype)
        dc0 = np.empty((B, H), dtype) if cell == "lstm" else None
        _cpu.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh, dh0,
                                dc0)
        results.append([y, h_n, c_n, saved_copy, dzx, dzh, dh0, dc0])
    for first, second in zip(*results):
        if first is not None:
            assert np.array_equal(first, second)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cpu_gemm_runs_the_large_gemms(cell, dtype):
    # backends.cpu_gemm: a layer's forward and backward with NumPy's matmul as the GEMM (in
    # float64 and rounded, so its sums differ from rnnfast's own) match the reference, and the
    # GEMM saw every mode the orchestration asks for.
    modes = set()

    def numpy_gemm(a, b, out, trans_a, trans_b, bias, accumulate):
        modes.add((trans_a, trans_b, bias is not None, accumulate))
        product = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
        if bias is not None:
            product += bias
        out[...] = (out + product) if accumulate else product

    inputs, douts = make_problem(cell, 5, 3, 7, 33, dtype, seed=seed_of("gemm", cell))
    with backends.cpu_gemm(numpy_gemm):
        got = run_functional(cell, inputs, douts)
    assert_matches_oracle(cell, inputs, douts, got, dtype)
    # the input projection (with b_ih), dx, dW_ih, and dW_hh in two parts (the first step's
    # h0, then the other steps accumulated)
    assert modes == {(False, True, True, False), (False, False, False, False),
                     (True, False, False, False), (True, False, False, True)}, modes


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_backward_layers_without_the_input_gradient(cell, num_layers, bidirectional):
    """input_grad=False: grad_input is None (its GEMM skipped) and every other gradient is the
    same, bit for bit."""
    rng = np.random.default_rng(seed_of(cell, num_layers))
    steps, batch, inputs, hidden, gates = 6, 3, 5, 7, GATES[cell]
    dirs = 2 if bidirectional else 1
    params = {}
    for i, names in enumerate(F.param_names(num_layers, bidirectional)):
        size = inputs if i < dirs else dirs * hidden  # layer 0's, or the layer below's output
        for ours, shape in (("w_ih", (gates * hidden, size)), ("w_hh", (gates * hidden, hidden)),
                            ("b_ih", (gates * hidden,)), ("b_hh", (gates * hidden,))):
            params[names[ours]] = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((steps, batch, inputs)).astype(np.float32)
    dy = rng.standard_normal((steps, batch, dirs * hidden)).astype(np.float32)
    results = []
    for input_grad in (True, False):
        *_, ctx = F.forward_layers(cell, x, params, num_layers=num_layers,
                                   bidirectional=bidirectional, training=True)
        results.append(F.backward_layers(ctx, dy, input_grad=input_grad))
    (dx, dh0, dc0, grads), (no_dx, *others) = results
    assert dx is not None and no_dx is None
    for a, b in zip((dh0, dc0, *grads.values()), (others[0], others[1], *others[2].values())):
        assert (a is None and b is None) or a.tobytes() == b.tobytes()
