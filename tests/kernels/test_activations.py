"""The cells' vector activations (cpp/include/rnnfast/cells/activations.h) against float64,
on every compiled instruction set: the error bounds stated in that header hold."""

import numpy as np
import pytest

from rnnfast import _cpu

pytestmark = pytest.mark.usefixtures("isa")

ULP32 = np.finfo(np.float32).eps  # 1.19e-7
ULP64 = np.finfo(np.float64).eps  # 2.22e-16


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-z))


# name -> (float64 function, input range where the relative bound applies)
FUNCTIONS = {
    "exp": (np.exp, (-80.0, 80.0)),
    "tanh": (np.tanh, (-30.0, 30.0)),
    "sigmoid": (sigmoid64, (-80.0, 30.0)),
}
# Stated bounds (relative to |f(x)|), as in activations.h.
BOUNDS = {
    (np.float32, "exp"): 2 * ULP32, (np.float32, "sigmoid"): 3e-7, (np.float32, "tanh"): 3e-7,
    (np.float64, "exp"): 2 * ULP64, (np.float64, "sigmoid"): 3 * ULP64,
    (np.float64, "tanh"): 3 * ULP64,
}


def evaluate(name, x):
    out = np.empty_like(x)
    _cpu.activation(name, x, out)
    return out


def grid(lo, hi, dtype):
    # A dense grid, the region around 0 (where tanh needs care) and random points.
    rng = np.random.default_rng(0)
    parts = [np.linspace(lo, hi, 400_001), np.linspace(-1e-3, 1e-3, 20_001),
             np.geomspace(1e-30, 1, 2_001), -np.geomspace(1e-30, 1, 2_001),
             rng.uniform(lo, hi, 100_000)]
    return np.concatenate(parts).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_relative_error_bound(name, dtype):
    f64, (lo, hi) = FUNCTIONS[name]
    x = grid(lo, hi, dtype)
    want = f64(x.astype(np.float64))
    got = evaluate(name, x).astype(np.float64)
    nonzero = want != 0
    rel = np.abs(got - want)[nonzero] / np.abs(want[nonzero])
    assert rel.max() <= BOUNDS[(dtype, name)], f"max relative error {rel.max():.3g}"
    assert np.all(got[~nonzero] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_saturation_and_nan(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 1000, -1000], dtype)
    tanh = evaluate("tanh", x)
    sig = evaluate("sigmoid", x)
    assert np.isnan(tanh[0]) and np.isnan(sig[0])
    np.testing.assert_array_equal(tanh[1:], [1, -1, 1, -1, 1, -1])
    assert np.all(sig[[1, 3, 5]] == 1)
    assert np.all((sig[[2, 4, 6]] >= 0) & (sig[[2, 4, 6]] < 1e-37))
    assert np.isnan(evaluate("exp", x[:1])[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        _cpu.activation("gelu", np.zeros(3), np.zeros(3))
    with pytest.raises(TypeError, match="out"):
        _cpu.activation("exp", np.zeros(3), np.zeros(3, np.float32))
