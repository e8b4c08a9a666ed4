"""Helpers shared by the test files: problem generation, the oracle, and the tolerance rule.

The tolerance rule (ARCHITECTURE.md, Tests) is written once, here:

- ``rel_err(a, oracle)`` = max|a - oracle| / max(max|oracle|, tiny): the error relative to the
  largest magnitude in the oracle array. Gates and gradients mix large and tiny elements, so a
  per-element relative error would be dominated by values that are zero up to rounding.
- float64: ``rel_err(kernel) <= FLOAT64_TOL``. Both are float64 computations of the same math;
  only the order of the sums differs, which costs a few ulps (1 ulp = 2.2e-16) times the depth of
  the recurrence. 1e-10 leaves five orders of magnitude of room and still catches any real
  mistake (a wrong index, a missing term).
- float32: ``rel_err(kernel) <= 2 * rel_err(reference in float32) + FLOAT32_FLOOR``. The NumPy
  reference run in float32 shows how much error float32 arithmetic itself makes on this very
  problem; a kernel may make up to twice that. See FLOAT32_FLOOR for the floor.

The oracle is always the reference run in float64 on exactly the same (already rounded) inputs
as the kernel gets, so rounding the inputs to float32 is not counted as error.
"""

import numpy as np

from rnnfast import reference as ref
from rnnfast.cell_registry import CELLS, SPECS  # noqa: F401 (CELLS: for the test files)

GATES = {cell: spec.gate_count for cell, spec in SPECS.items()}
DTYPES = (np.float32, np.float64)

FLOAT64_TOL = 1e-10
# Floor of the float32 rule, in units of the largest oracle magnitude. float32 eps is 1.19e-7,
# so 2e-6 is about 16 ulps. It is needed because the float32 reference can be lucky on a given
# array (tiny problems such as I = H = 1 round almost exactly), while a kernel legitimately
# rounds differently: other summation order and blocking in the GEMMs, FMA contraction, and
# vector tanh/sigmoid/exp approximations whose error bound is a few ulps. 16 ulps covers those
# and is still three orders of magnitude below what any real bug produces.
FLOAT32_FLOOR = 2e-6
# Relative to what the result is compared with, not to the oracle: the same float32 computation
# split differently (a sequence vs T single steps) rounds the input-projection GEMM differently
# (other row counts, other blocking), and that difference is carried through the recurrence.
STEP_TOL = {np.float32: 4e-6, np.float64: 1e-12}

_TINY = np.finfo(np.float64).tiny

# Names of everything compared: forward outputs and the gradients returned by backward.
OUT_NAMES = ("y", "h_n", "c_n")
GRAD_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")


def rel_err(a, oracle):
    """max|a - oracle| / max(max|oracle|, tiny), in float64. NaN in ``a`` gives NaN (fails)."""
    a = np.asarray(a, np.float64)
    oracle = np.asarray(oracle, np.float64)
    assert a.shape == oracle.shape, f"shape {a.shape} != oracle shape {oracle.shape}"
    if oracle.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(oracle))), _TINY)
    return float(np.max(np.abs(a - oracle))) / scale


def _draw(rng, cell, T, B, I, H, bias):
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)  # PyTorch's initialization range
    inputs = {
        "x": rng.standard_normal((T, B, I)),
        "h0": 0.5 * rng.standard_normal((B, H)),
        "c0": 0.5 * rng.standard_normal((B, H)) if cell == "lstm" else None,
        "w_ih": rng.uniform(-k, k, (G * H, I)),
        "w_hh": rng.uniform(-k, k, (G * H, H)),
        "b_ih": rng.uniform(-k, k, G * H) if bias else None,
        "b_hh": rng.uniform(-k, k, G * H) if bias else None,
    }
    douts = {
        "dy": rng.standard_normal((T, B, H)),
        "dh_n": rng.standard_normal((B, H)),
        "dc_n": rng.standard_normal((B, H)) if cell == "lstm" else None,
    }
    return inputs, douts


def rnn_preactivations(cell, inputs):
    """The pre-activations z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh [T, B, H] of a
    vanilla RNN, computed in float64 (used to keep relu's kink away from the data)."""
    assert cell in ("rnn_tanh", "rnn_relu")
    f = {k: (None if v is None else np.asarray(v, np.float64)) for k, v in inputs.items()}
    y, _, _, _ = ref.forward(cell, f["x"], f["h0"], f["w_ih"], f["w_hh"], b_ih=f["b_ih"],
                             b_hh=f["b_hh"])
    h_prev = np.concatenate([f["h0"][None], y[:-1]], axis=0)
    z = f["x"] @ f["w_ih"].T + h_prev @ f["w_hh"].T
    if f["b_ih"] is not None:
        z = z + f["b_ih"] + f["b_hh"]
    return z


def make_problem(cell, T, B, I, H, dtype, bias=True, seed=0, relu_margin=2e-5):
    """Random inputs and output gradients for one layer, in ``dtype``.

    Returns (inputs, douts): inputs has keys x, h0, c0, w_ih, w_hh, b_ih, b_hh (c0 None unless
    LSTM, biases None when ``bias`` is False); douts has dy, dh_n, dc_n (dc_n None unless LSTM).

    For rnn_relu the derivative jumps at a pre-activation of 0: if some |z| were within rounding
    of 0, float32 and float64 (or two kernels) could take different sides and disagree by a whole
    gradient term. So the data are redrawn (from the same generator: still deterministic) until
    every |z| >= relu_margin, far above any rounding error of z.
    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        inputs, douts = _draw(rng, cell, T, B, I, H, bias)
        inputs = {k: (None if v is None else v.astype(dtype)) for k, v in inputs.items()}
        douts = {k: (None if v is None else v.astype(dtype)) for k, v in douts.items()}
        if cell != "rnn_relu":
            return inputs, douts
        z = rnn_preactivations(cell, inputs)
        if z.size == 0 or np.min(np.abs(z)) >= relu_margin:
            return inputs, douts
    raise AssertionError("could not draw relu data away from the kink; lower relu_margin")


def reference_results(cell, inputs, douts, dtype, options=None):
    """Run the reference forward and backward in ``dtype`` on ``inputs`` (cast to ``dtype``);
    ``options``: more keyword arguments of the forward (lengths, resets, w_hr).

    Returns a dict with keys y, h_n, c_n and (unless ``douts`` is None: forward only) dx, dh0,
    dc0, dw_ih, dw_hh, db_ih, db_hh.
    """
    both = {**inputs, **(douts or {})}
    c = {k: (None if v is None else np.asarray(v, dtype)) for k, v in both.items()}
    y, h_n, c_n, cache = ref.forward(
        cell, c["x"], c["h0"], c["w_ih"], c["w_hh"], b_ih=c["b_ih"], b_hh=c["b_hh"], c0=c["c0"],
        **(options or {})
    )
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if douts is not None:
        grads = ref.backward(cache, c["dy"], c["dh_n"], c["dc_n"])
        out.update({"d" + k: grads[k] for k in GRAD_NAMES})
        if "w_hr" in grads:  # with the LSTM projection
            out["dw_hr"] = grads["w_hr"]
    return out


def assert_matches_oracle(cell, inputs, douts, got, dtype, options=None):
    """Check every array in ``got`` (keys as in reference_results) with the tolerance rule.

    ``got`` values of None must match None in the reference (c_n, dc0 for non-LSTM cells).
    ``douts`` None: forward only (``got`` then holds only y, h_n, c_n).
    """
    dtype = np.dtype(dtype)
    oracle = reference_results(cell, inputs, douts, np.float64, options)
    ref32 = (reference_results(cell, inputs, douts, np.float32, options)
             if dtype == np.float32 else None)
    failures = []
    for name, value in got.items():
        if oracle[name] is None:
            assert value is None, f"{name}: expected None for cell {cell}, got {type(value)}"
            continue
        assert value is not None, f"{name}: got None"
        value = np.asarray(value)
        assert value.dtype == dtype, f"{name}: dtype {value.dtype}, expected {dtype}"
        assert value.shape == oracle[name].shape, (
            f"{name}: shape {value.shape}, expected {oracle[name].shape}"
        )
        err = rel_err(value, oracle[name])
        if dtype == np.float64:
            bound = FLOAT64_TOL
            what = f"float64 bound {FLOAT64_TOL:.1e}"
        else:
            err32 = rel_err(ref32[name], oracle[name])
            bound = 2 * err32 + FLOAT32_FLOOR
            what = f"2 * ref32 err {err32:.2e} + floor {FLOAT32_FLOOR:.0e}"
        if not err <= bound:  # also catches NaN
            failures.append(f"{name}: rel err {err:.3e} > {bound:.3e} ({what})")
    assert not failures, f"{cell} {dtype}: " + "; ".join(failures)


def copies(d):
    """Deep copies of the arrays in a dict (None kept) to check later that nothing changed."""
    return {k: (None if v is None else np.array(v, copy=True)) for k, v in d.items()}


def assert_unchanged(before, after):
    for k, v in before.items():
        if v is None:
            assert after[k] is None, f"{k} changed from None"
        else:
            np.testing.assert_array_equal(after[k], v, err_msg=f"caller array {k!r} was modified")
            assert after[k].dtype == v.dtype and after[k].shape == v.shape, k


def shape_id(T, B, I, H):
    return f"T{T}-B{B}-I{I}-H{H}"


def seed_of(*parts):
    """A stable seed per test case, from its parameters (hash() of str is salted per process,
    so not that)."""
    return sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))
