"""rnnfast's own GEMM (_cpu.gemm), which rnnfast.functional uses for the input projection and
the input and weight gradients: against float64 on every instruction set, bitwise the same for
any thread count, and its argument errors. And _cpu.column_sums (the bias gradients): bit for
bit NumPy's float64 sum of the columns.

Tolerance, two checks. Elementwise: each element of C is a sum of k products (plus the bias,
plus C itself when accumulating); whatever the order of the sums, its rounding error is at most
about (k + 2) * u times the sum of the magnitudes (u = eps / 2, the unit roundoff), so the test
allows (k + 2) * eps * (|A| |B| + |bias| + |C|), twice the worst case. That bound grows with k,
so the whole array is also held to the suite's rule (tests/_util.py): in float32 at most twice
the error of NumPy's own float32 product plus the floor, in float64 FLOAT64_TOL; a single
missing product fails it.
"""

import numpy as np
import pytest

import rnnfast
from rnnfast import _cpu

from _util import FLOAT32_FLOOR, FLOAT64_TOL, rel_err

pytestmark = pytest.mark.usefixtures("isa")

# (m, n, k): single elements; below one vector; one past the 64-wide panel; more rows than a
# chunk of row tiles (48 under AVX-512) and deeper than a depth block (128); deeper than one
# pass (512: three passes); empty products.
SHAPES = [(1, 1, 1), (3, 5, 7), (7, 65, 130), (53, 200, 300), (100, 70, 1500), (5, 3, 0),
          (0, 4, 3), (4, 0, 3)]


def operands(m, n, k, trans_a, trans_b, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, rng.standard_normal(n).astype(dtype), rng.standard_normal((m, n)).astype(dtype)


def product(a, b, bias, c0, trans_a, trans_b, accumulate, dtype):
    """op(a) op(b) (+ bias) (+ c0) by NumPy in dtype, and the sum of the terms' magnitudes."""
    a, b = (a.T if trans_a else a).astype(dtype), (b.T if trans_b else b).astype(dtype)
    result, magnitude = a @ b, np.abs(a) @ np.abs(b)
    for term, used in ((bias, bias is not None), (c0, accumulate)):
        if used:
            result, magnitude = result + term.astype(dtype), magnitude + np.abs(term)
    return result, magnitude


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["b", "bT"])
def test_matches_float64(shape, trans_a, trans_b, dtype):
    m, n, k = shape
    for seed, (with_bias, accumulate) in enumerate([(False, False), (True, False), (True, True),
                                                    (False, True)]):
        a, b, bias, c0 = operands(m, n, k, trans_a, trans_b, dtype, seed)
        bias = bias if with_bias else None
        c = c0.copy()
        _cpu.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b, bias=bias, accumulate=accumulate)
        case = f"bias={with_bias} accumulate={accumulate}"
        exact, magnitude = product(a, b, bias, c0, trans_a, trans_b, accumulate, np.float64)
        err = np.abs(c.astype(np.float64) - exact)
        bound = (k + 2) * np.finfo(dtype).eps * magnitude
        assert np.all(err <= bound), f"{case}: {(err / np.maximum(bound, 1e-300)).max():.2f}x"
        if dtype == np.float32:
            numpy_f32 = product(a, b, bias, c0, trans_a, trans_b, accumulate, np.float32)[0]
            limit = 2 * rel_err(numpy_f32, exact) + FLOAT32_FLOOR
        else:
            limit = FLOAT64_TOL
        assert rel_err(c, exact) <= limit, case


def test_inputs_unchanged():
    a, b, bias, c0 = operands(20, 30, 40, True, True, np.float32, 0)
    before = [v.copy() for v in (a, b, bias)]
    _cpu.gemm(a, b, c0, trans_a=True, trans_b=True, bias=bias)
    for was, now in zip(before, (a, b, bias)):
        assert np.array_equal(was, now)


# Threads split the panels (many columns) or the blocks of rows (few columns, many rows); both
# with a depth of several passes.
THREAD_SHAPES = [(60, 700, 1100), (3000, 40, 1100)]


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=["x".join(map(str, s)) for s in THREAD_SHAPES])
@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
def test_bitwise_same_for_any_thread_count(shape, trans_a):
    m, n, k = shape
    a, b, bias, _ = operands(m, n, k, trans_a, True, np.float32, 1)
    saved = rnnfast.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            rnnfast.set_num_threads(threads)
            c = np.empty((m, n), np.float32)
            _cpu.gemm(a, b, c, trans_a=trans_a, trans_b=True, bias=bias)
            results.append(c)
    finally:
        rnnfast.set_num_threads(saved)
    for other in results[1:]:
        assert np.array_equal(other, results[0])


def f32(*shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("call, error, message", [
    (lambda: _cpu.gemm([[1.0]], f32(1, 1), f32(1, 1)), TypeError, "a must be a numpy.ndarray"),
    (lambda: _cpu.gemm(np.ones((2, 3), np.int32), f32(3, 4), f32(2, 4)), TypeError,
     "a has dtype int32"),
    (lambda: _cpu.gemm(f32(2, 3), np.ones((3, 4)), f32(2, 4)), TypeError,
     "b has dtype float64"),
    (lambda: _cpu.gemm(f32(2, 3), f32(3, 4), np.ones((2, 4))), TypeError, "c has dtype float64"),
    (lambda: _cpu.gemm(f32(6), f32(3, 4), f32(2, 4)), ValueError, "a must be 2-D"),
    (lambda: _cpu.gemm(f32(2, 3), f32(5, 4), f32(2, 4)), ValueError, "b has shape (5, 4)"),
    (lambda: _cpu.gemm(f32(2, 3), f32(3, 4), f32(2, 4), trans_b=True), ValueError,
     "b has shape (3, 4), expected (3, 3)"),  # b.T must be (k, n) = (3, n)
    (lambda: _cpu.gemm(f32(2, 3), f32(3, 4), f32(4, 2)), ValueError, "c has shape (4, 2)"),
    (lambda: _cpu.gemm(f32(2, 3), f32(3, 4), f32(2, 4), bias=f32(3)), ValueError,
     "bias has shape (3,)"),
    (lambda: _cpu.gemm(f32(3, 2).T, f32(3, 4), f32(2, 4)), ValueError,
     "a must be C-contiguous"),
])
def test_argument_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_read_only_and_overlapping_outputs_are_refused():
    c = f32(2, 4)
    c.flags.writeable = False
    with pytest.raises(ValueError, match="c is read-only"):
        _cpu.gemm(f32(2, 3), f32(3, 4), c)
    square = f32(4, 4)
    with pytest.raises(ValueError, match="c overlaps the memory of a"):
        _cpu.gemm(square, f32(4, 4), square)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (800, 256), (5000, 3), (7, 1100),
                                        (0, 4), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_are_numpys_float64_sums(rows, cols, dtype):
    rng = np.random.default_rng(rows * cols)
    # magnitudes over 60 decades (cancellations), and -0.0, inf and NaN columns
    a = (rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-30, 30, (rows, cols)))
    a = a.astype(dtype)
    if rows > 2 and cols > 2:
        a[:, 0], a[1, 1], a[2, 2] = -0.0, np.inf, np.nan
    out = np.full(cols, 7, dtype)
    _cpu.column_sums(a, out)
    assert out.tobytes() == a.sum(axis=0, dtype=np.float64).astype(dtype).tobytes()


@pytest.mark.parametrize("call, error, message", [
    (lambda: _cpu.column_sums(f32(3, 2).T, f32(3)), ValueError, "a must be C-contiguous"),
    (lambda: _cpu.column_sums(f32(2, 3, 1), f32(3)), ValueError, "a must be 2-D"),
    (lambda: _cpu.column_sums(f32(2, 3), f32(2)), ValueError, "out has shape (2,)"),
    (lambda: _cpu.column_sums(f32(2, 3), np.ones(3)), TypeError, "out has dtype float64"),
    (lambda: _cpu.column_sums(np.ones((2, 3), np.int32), f32(3)), TypeError,
     "a has dtype int32"),
])
def test_column_sums_argument_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
