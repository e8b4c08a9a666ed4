"""The CUDA backend: rnnfast._cuda, and rnnfast.functional on CuPy arrays.

Two parts:

- Without a GPU (these run wherever the CUDA module was built, CI's GPU-less machine too): the
  module imports and names its architectures; the binding refuses malformed arguments before it
  touches the device (driven by a fake array that exposes __cuda_array_interface__ with made-up
  pointers); a CuPy array without the CUDA module says what is missing.
- On a GPU (skipped elsewhere, with the reason): rnnfast.functional on CuPy arrays against the
  float64 NumPy reference (the tolerance rule of _util.py) and against the CPU kernels on the
  same inputs, outputs, states and every gradient, every cell, float32 and float64, odd sizes;
  invariants and errors with real CuPy arrays.
"""

import subprocess
import sys

import numpy as np
import pytest

from _util import (
    CELLS,
    DTYPES,
    FLOAT32_FLOOR,
    FLOAT64_TOL,
    GATES,
    GRAD_NAMES,
    OUT_NAMES,
    assert_matches_oracle,
    assert_unchanged,
    copies,
    make_problem,
    reference_results,
    rel_err,
    seed_of,
    shape_id,
)

try:
    from rnnfast import _cuda
except ImportError:
    _cuda = None

try:
    import cupy
except ImportError:
    cupy = None


def _gpu_skip_reason():
    if _cuda is None:
        return "CUDA module not built (rnnfast._cuda missing: no nvcc at build time)"
    if cupy is None:
        return "CuPy not installed"
    info = _cuda.device_info()
    if not info["devices"]:
        return f"no CUDA device ({info['error']})"
    return None


GPU_SKIP = _gpu_skip_reason()
needs_module = pytest.mark.skipif(_cuda is None, reason="CUDA module not built")


def needs_gpu(test):
    """Marks a test `gpu` and skips it, with the reason, where no GPU is usable."""
    return pytest.mark.gpu(pytest.mark.skipif(GPU_SKIP is not None, reason=GPU_SKIP or "")(test))


# The fake pointers below must never reach a real device.
needs_no_device = pytest.mark.skipif(
    _cuda is None or bool(_cuda.device_info()["devices"]),
    reason="CUDA module not built" if _cuda is None else "a CUDA device is present",
)


# ================================================================== without a GPU


@needs_module
def test_module_reports_architectures():
    archs = _cuda.compiled_architectures.split(",")
    assert archs and all(a.split("-")[0].isdigit() for a in archs), archs
    info = _cuda.device_info()
    assert set(info) == {"runtime_version", "driver_version", "devices", "error"}
    assert info["runtime_version"] > 0
    assert (info["error"] is None) == bool(info["devices"])


def test_import_without_cupy():
    """import rnnfast (its functional API and backends included) never needs CuPy."""
    code = ("import sys; sys.modules['cupy'] = None; "
            "import rnnfast, rnnfast.functional, rnnfast.backends; "
            "print(rnnfast.cuda_info()['built'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cupy_arrays_without_the_module(monkeypatch):
    if cupy is None:
        pytest.skip("CuPy not installed: no CuPy array to give")
    import rnnfast
    from rnnfast import backends

    monkeypatch.setitem(sys.modules, "rnnfast._cuda", None)
    monkeypatch.delattr(rnnfast, "_cuda", raising=False)
    monkeypatch.setattr(backends, "_loaded", {})
    with pytest.raises(ImportError, match="without its CUDA module"):
        backends.for_array(cupy.zeros(1))


class FakeDeviceArray:
    """Exposes __cuda_array_interface__ (version 3) for a made-up device pointer."""

    _next = 1 << 40  # fake addresses, each array in its own 1 MiB slot

    def __init__(self, shape, dtype=np.float32, ptr=None, readonly=False, strides=None):
        if ptr is None:
            ptr, FakeDeviceArray._next = FakeDeviceArray._next, FakeDeviceArray._next + (1 << 20)
        self.ptr = ptr
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (ptr, readonly),
            "strides": strides, "version": 3,
        }


T, B, H = 3, 2, 5


def fake_forward_args(cell="lstm", dtype=np.float32, training=True, batch=B):
    g, lstm = GATES[cell], cell == "lstm"
    s = {"lstm": 5, "gru": 4}.get(cell, 0)
    a = lambda *shape: FakeDeviceArray(shape, dtype)  # noqa: E731
    return {
        "cell": cell, "zx": a(T, batch, g * H), "w_hh": a(g * H, H), "b_hh": a(g * H),
        "h0": a(batch, H), "c0": a(batch, H) if lstm else None, "y": a(T, batch, H),
        "h_n": a(batch, H), "c_n": a(batch, H) if lstm else None,
        "saved": a(T, batch, s * H) if training and s else None, "stream": 0,
    }


def fake_backward_args(cell="lstm", dtype=np.float32, batch=B):
    g, lstm = GATES[cell], cell == "lstm"
    s = {"lstm": 5, "gru": 4}.get(cell, 0)
    a = lambda *shape: FakeDeviceArray(shape, dtype)  # noqa: E731
    return {
        "cell": cell, "w_hh": a(g * H, H), "h0": a(batch, H), "c0": a(batch, H) if lstm else None,
        "y": a(T, batch, H), "saved": a(T, batch, s * H) if s else None, "dy": a(T, batch, H),
        "dh_n": a(batch, H), "dc_n": a(batch, H) if lstm else None, "dzx": a(T, batch, g * H),
        "dzh": a(T, batch, g * H) if cell == "gru" else None, "dh0": a(batch, H),
        "dc0": a(batch, H) if lstm else None,
        "workspace": a(_cuda.workspace_size("backward", cell, batch, H, 0)), "stream": 0,
    }


FORWARD_ARRAYS = ["zx", "w_hh", "b_hh", "h0", "c0", "y", "h_n", "c_n", "saved"]
BACKWARD_ARRAYS = ["w_hh", "h0", "c0", "y", "saved", "dy", "dh_n", "dc_n", "dzx", "dh0", "dc0"]
FORWARD_OUTPUTS = ["y", "h_n", "c_n", "saved"]
BACKWARD_OUTPUTS = ["dzx", "dzh", "dh0", "dc0"]


def _with(args, name, **changes):
    """args with args[name] replaced by a fake array like it, with some properties changed."""
    old = args[name].__cuda_array_interface__
    props = {"shape": old["shape"], "dtype": np.dtype(old["typestr"]), "ptr": old["data"][0],
             "readonly": old["data"][1], "strides": old["strides"], **changes}
    return {**args, name: FakeDeviceArray(**props)}


def _call(kind, args):
    return (_cuda.recurrent_forward if kind == "forward" else _cuda.recurrent_backward)(**args)


def _args(kind, cell="lstm", **kw):
    return (fake_forward_args if kind == "forward" else fake_backward_args)(cell, **kw)


@needs_module
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_unknown_cell(kind):
    with pytest.raises(ValueError, match="cell"):
        _call(kind, {**_args(kind), "cell": "lstmx"})


@needs_module
@pytest.mark.parametrize("name", FORWARD_ARRAYS)
def test_forward_not_a_cuda_array(name):
    with pytest.raises(TypeError, match=f"{name} must be a CUDA array.*ndarray"):
        _call("forward", {**fake_forward_args(), name: np.zeros(3, np.float32)})


@needs_module
@pytest.mark.parametrize("name", BACKWARD_ARRAYS)
def test_backward_not_a_cuda_array(name):
    with pytest.raises(TypeError, match=f"{name} must be a CUDA array"):
        _call("backward", {**fake_backward_args(), name: [1.0, 2.0]})


@needs_module
@pytest.mark.parametrize("kind, names", [("forward", FORWARD_ARRAYS),
                                         ("backward", BACKWARD_ARRAYS + ["dzh"])])
def test_wrong_dtype_names_argument(kind, names):
    for cell in ("lstm", "gru"):
        args = _args(kind, cell)
        for name in names:
            if args[name] is None:
                continue
            lead = {"forward": "zx", "backward": "dzx"}[kind]
            # the lead array's dtype picks the kernel: then the others are the wrong ones
            message = (f"w_hh has dtype float32, expected float64 \\(the dtype of {lead}\\)"
                       if name == lead else f"{name} has dtype float64, expected float32")
            with pytest.raises(TypeError, match=message):
                _call(kind, _with(args, name, dtype=np.float64))


@needs_module
@pytest.mark.parametrize("kind, lead", [("forward", "zx"), ("backward", "dzx")])
def test_unsupported_dtype(kind, lead):
    with pytest.raises(TypeError, match=f"{lead} has dtype float16, expected float32 or float64"):
        _call(kind, _with(_args(kind), lead, dtype=np.float16))
    with pytest.raises(TypeError, match=f"{lead} has dtype '<i4'"):
        _call(kind, _with(_args(kind), lead, dtype=np.int32))


@needs_module
@pytest.mark.parametrize("kind, names", [("forward", FORWARD_ARRAYS),
                                         ("backward", BACKWARD_ARRAYS + ["dzh"])])
def test_wrong_shape_names_argument(kind, names):
    for cell in ("lstm", "gru"):
        args = _args(kind, cell)
        for name in names:
            if args[name] is None:
                continue
            shape = args[name].__cuda_array_interface__["shape"]
            bad = shape[:-1] + (shape[-1] + 1,)
            with pytest.raises(ValueError, match=name):
                _call(kind, _with(args, name, shape=bad))


@needs_module
def test_sizes_read_from_w_hh_and_zx():
    with pytest.raises(ValueError, match=r"w_hh has shape \(21, 5\), expected \(4\*H, H\)"):
        _call("forward", _with(fake_forward_args(), "w_hh", shape=(21, 5)))
    with pytest.raises(ValueError, match=r"zx must have shape \(T, B, G\*H\) with T >= 1"):
        _call("forward", _with(fake_forward_args(), "zx", shape=(0, B, 4 * H)))


@needs_module
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_non_contiguous_refused(kind):
    args = _args(kind)
    name = "h0"
    itemsize = 4
    # (B, H) viewed with a row stride of 2*H elements: every other row of a larger array
    with pytest.raises(ValueError, match=f"{name} must be C-contiguous"):
        _call(kind, _with(args, name, strides=(2 * H * itemsize, itemsize)))
    # explicit C strides are accepted like None: the call gets past validation (to the device)
    ok = _with(args, name, strides=(H * itemsize, itemsize))
    with pytest.raises(Exception) as info:
        _call(kind, ok)
    assert "C-contiguous" not in str(info.value)


@needs_module
@pytest.mark.parametrize("kind, outputs", [("forward", FORWARD_OUTPUTS),
                                           ("backward", BACKWARD_OUTPUTS)])
def test_read_only_output_refused(kind, outputs):
    for cell in ("lstm", "gru"):
        args = _args(kind, cell)
        for name in outputs:
            if args[name] is None:
                continue
            with pytest.raises(ValueError, match=f"{name} is read-only"):
                _call(kind, _with(args, name, readonly=True))


@needs_module
def test_unaligned_refused():
    args = fake_forward_args()
    with pytest.raises(ValueError, match="h0 must be aligned"):
        _call("forward", _with(args, "h0", ptr=args["h0"].ptr + 2))


@needs_module
@pytest.mark.parametrize("kind, output, other", [
    ("forward", "y", "zx"), ("forward", "h_n", "h0"), ("forward", "saved", "y"),
    ("forward", "c_n", "c0"), ("backward", "dzx", "saved"), ("backward", "dh0", "dh_n"),
    ("backward", "dc0", "dh0"), ("backward", "dzx", "w_hh"),
])
def test_overlap_refused(kind, output, other):
    args = _args(kind)
    inside = args[other].ptr + 4  # an element inside `other`
    with pytest.raises(ValueError, match="overlaps the memory of"):
        _call(kind, _with(args, output, ptr=inside))


@needs_module
def test_gru_dzh_may_not_alias_dzx():
    args = fake_backward_args("gru")
    with pytest.raises(ValueError, match="overlaps"):
        _call("backward", _with(args, "dzh", ptr=args["dzx"].ptr))


@needs_module
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
def test_cell_state_only_for_lstm(cell):
    args = fake_forward_args(cell)
    with pytest.raises(ValueError, match="c0 must be None"):
        _call("forward", {**args, "c0": FakeDeviceArray((B, H))})
    args = fake_backward_args(cell)
    with pytest.raises(ValueError, match="dc0 must be None"):
        _call("backward", {**args, "dc0": FakeDeviceArray((B, H))})


@needs_module
def test_rnn_saves_nothing_and_dzh_only_for_gru():
    with pytest.raises(ValueError, match="saved must be None"):
        _call("forward", {**fake_forward_args("rnn_tanh"), "saved": FakeDeviceArray((T, B, H))})
    with pytest.raises(ValueError, match="dzh must be None"):
        _call("backward", {**fake_backward_args("lstm"), "dzh": FakeDeviceArray((T, B, 4 * H))})


@needs_module
@pytest.mark.parametrize("stream, error", [("0", TypeError), (1.5, TypeError), (None, TypeError),
                                           (True, TypeError), (-1, ValueError)])
def test_bad_stream(stream, error):
    with pytest.raises(error, match="stream"):
        _call("forward", {**fake_forward_args(), "stream": stream})


@needs_module
@pytest.mark.parametrize("interface", [
    None, {"shape": (B, H), "typestr": "<f4"}, {"shape": (B, H), "typestr": "<f4", "data": 5},
    {"shape": "x", "typestr": "<f4", "data": (1 << 40, False)},
])
def test_malformed_interface(interface):
    class Bad:
        __cuda_array_interface__ = interface

    with pytest.raises(TypeError, match="h0 has a malformed __cuda_array_interface__"):
        _call("forward", {**fake_forward_args(), "h0": Bad()})


@needs_module
def test_masked_refused():
    args = fake_forward_args()
    args["h0"].__cuda_array_interface__["mask"] = FakeDeviceArray((B, H), np.bool_)
    with pytest.raises(ValueError, match="h0: masked arrays are not supported"):
        _call("forward", args)


@needs_module
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_lengths_resets_and_workspace_checked(kind):
    """lengths, resets and the workspace are device arrays, checked like the others (their
    values are not: lengths in [0, T] is the caller's to ensure)."""
    args = _args(kind)
    with pytest.raises(TypeError, match="lengths has dtype '<i4', expected int64$"):
        _call(kind, {**args, "lengths": FakeDeviceArray((B,), np.int32)})
    with pytest.raises(ValueError, match=r"lengths has shape \(3,\), expected \(2,\)"):
        _call(kind, {**args, "lengths": FakeDeviceArray((3,), np.int64)})
    with pytest.raises(TypeError, match="resets must be a CUDA array"):
        _call(kind, {**args, "resets": np.zeros((T, B), bool)})
    with pytest.raises(TypeError, match="resets has dtype float32, expected bool or uint8"):
        _call(kind, {**args, "resets": FakeDeviceArray((T, B), np.float32)})
    with pytest.raises(ValueError, match="resets overlaps|overlaps the memory of resets"):
        out = "y" if kind == "forward" else "dzx"
        _call(kind, {**args, "resets": FakeDeviceArray((T, B), np.uint8, ptr=args[out].ptr)})
    if kind == "backward":  # the LSTM's backward needs running gradients
        with pytest.raises(ValueError, match="workspace must be a 1-D array of at least 20"):
            _call(kind, {**args, "workspace": None})


@needs_no_device
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_valid_options_reach_the_device(kind):
    args = {**_args(kind), "lengths": FakeDeviceArray((B,), np.int64),
            "resets": FakeDeviceArray((T, B), np.bool_)}
    with pytest.raises(RuntimeError, match="cudaGetDevice|cudaPointerGetAttributes"):
        _call(kind, args)


@needs_module
@pytest.mark.parametrize("kind", ["forward", "backward"])
@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_touches_nothing(kind, cell):
    """B = 0 passes validation and returns without a device call (none is needed here)."""
    assert _call(kind, _args(kind, cell, batch=0)) is None


@needs_no_device
@pytest.mark.parametrize("kind", ["forward", "backward"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_valid_arguments_reach_the_device(kind, cell, dtype):
    """Arguments that pass validation reach the CUDA runtime, whose error (no device here) is a
    RuntimeError naming the call, not a crash."""
    with pytest.raises(RuntimeError, match="cudaGetDevice|cudaPointerGetAttributes"):
        _call(kind, _args(kind, cell, dtype=dtype))


# ================================================================== on a GPU


def to_gpu(d):
    return {k: (None if v is None else cupy.asarray(v)) for k, v in d.items()}


def run_cuda(cell, inputs, douts, training=True):
    """Forward (and backward if training) through rnnfast.functional on CuPy copies of the
    NumPy inputs (the CUDA backend); NumPy results keyed as _util.reference_results."""
    from rnnfast import functional as F

    g = to_gpu(inputs)
    y, h_n, c_n, ctx = F.forward(cell, g["x"], g["h0"], g["w_ih"], g["w_hh"], b_ih=g["b_ih"],
                                 b_hh=g["b_hh"], c0=g["c0"], training=training)
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if training:
        d = to_gpu(douts)
        grads = F.backward(ctx, d["dy"], d["dh_n"], d["dc_n"])
        assert set(grads) == set(GRAD_NAMES), sorted(grads)
        out.update({"d" + k: grads[k] for k in GRAD_NAMES})
    else:
        assert ctx is None
    for k, v in out.items():
        assert v is None or isinstance(v, cupy.ndarray), (k, type(v))
    return {k: (None if v is None else cupy.asnumpy(v)) for k, v in out.items()}


def run_cpu(cell, inputs, douts):
    from rnnfast import functional as F

    y, h_n, c_n, ctx = F.forward(cell, inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"],
                                 b_ih=inputs["b_ih"], b_hh=inputs["b_hh"], c0=inputs["c0"],
                                 training=True)
    grads = F.backward(ctx, douts["dy"], douts["dh_n"], douts["dc_n"])
    return {"y": y, "h_n": h_n, "c_n": c_n, **{"d" + k: grads[k] for k in GRAD_NAMES}}


def assert_matches_cpu(cell, inputs, douts, got, dtype):
    """CUDA and CPU kernels on the same inputs. Each is within the tolerance rule of the
    oracle, so they are within the sum of the two bounds of each other: float64 2 * 1e-10,
    float32 2 * (2 * ref32 error + floor)."""
    cpu = run_cpu(cell, inputs, douts)
    oracle = reference_results(cell, inputs, douts, np.float64)
    ref32 = reference_results(cell, inputs, douts, np.float32) if dtype == np.float32 else None
    failures = []
    for name, value in got.items():
        if cpu[name] is None:
            assert value is None, name
            continue
        if dtype == np.float64:
            bound = 2 * FLOAT64_TOL
        else:
            bound = 2 * (2 * rel_err(ref32[name], oracle[name]) + FLOAT32_FLOOR)
        err = rel_err(value, cpu[name])
        if not err <= bound:
            failures.append(f"{name}: CUDA vs CPU rel err {err:.3e} > {bound:.3e}")
    assert not failures, f"{cell} {np.dtype(dtype)}: " + "; ".join(failures)


# (T, B, I, H): those of tests/functional/test_functional.py (I, H in {1, 7, 33, 130};
# B of 1 and 3; T of 1 and 5),
# plus shapes that cross the CUDA tiles (32 units, 16 batch rows, depth 32 per block): B = 37
# (three row tiles, a 5-row tail), H = 70 (three unit tiles, depth tail), long sequences.
SHAPES = [
    (1, 1, 1, 1), (5, 3, 1, 7), (5, 1, 7, 1), (1, 3, 7, 33), (5, 3, 33, 7), (5, 1, 33, 130),
    (5, 3, 130, 33), (1, 1, 130, 130), (5, 3, 7, 130), (20, 3, 33, 33), (4, 9, 13, 70),
    (3, 37, 20, 70), (50, 16, 32, 32),
]
SHAPE_IDS = [shape_id(*s) for s in SHAPES]
DTYPE_IDS = ["f32", "f64"]


@needs_gpu
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference_and_cpu(cell, dtype, shape, bias):
    inputs, douts = make_problem(cell, *shape, dtype, bias=bias, seed=seed_of(cell, shape, bias))
    before = copies({**inputs, **douts})
    got = run_cuda(cell, inputs, douts)
    assert_unchanged(before, {**inputs, **douts})
    assert_matches_oracle(cell, inputs, douts, got, dtype)
    assert_matches_cpu(cell, inputs, douts, got, dtype)


@needs_gpu
@pytest.mark.parametrize("variant", ["plain", "none", "lengths", "resets", "both", "proj"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_match_cpu_with_every_option(cell, dtype, variant):
    """rnnfast._cuda's kernels directly against the CPU kernels, as the emulated tests do:
    lengths (0 to T), resets, the LSTM projection, without the optional b_hh, dh_n, dc_n
    ("none"); outputs and workspace poisoned with NaN first."""
    from test_cuda_kernels_emulated import compare_with_cpu

    if variant == "proj" and cell != "lstm":
        pytest.skip("the projection is the LSTM's")
    sequence = variant in ("both", "proj")
    for shape in [(5, 3, 7), (4, 37, 70), (3, 17, 130)]:
        compare_with_cpu(_cuda, cell, dtype, shape, variant != "none",
                         sequence or variant == "lengths", sequence or variant == "resets",
                         variant == "proj", cupy.asarray, cupy.asnumpy)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_output_gradients_optional(cell, dtype):
    """dh_n and dc_n None mean zero."""
    inputs, douts = make_problem(cell, 4, 3, 7, 33, dtype, seed=seed_of("opt", cell))
    zero = {**douts, "dh_n": np.zeros_like(douts["dh_n"]),
            "dc_n": None if douts["dc_n"] is None else np.zeros_like(douts["dc_n"])}
    expected = run_cuda(cell, inputs, zero)
    got = run_cuda(cell, inputs, {**douts, "dh_n": None, "dc_n": None})
    for name in got:
        if expected[name] is None:
            assert got[name] is None
        else:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_training_forward_equals_inference(cell, dtype):
    inputs, douts = make_problem(cell, 5, 3, 33, 70, dtype, seed=seed_of("inf", cell))
    train = run_cuda(cell, inputs, douts, training=True)
    infer = run_cuda(cell, inputs, douts, training=False)
    for name in OUT_NAMES:
        if infer[name] is not None:
            np.testing.assert_array_equal(train[name], infer[name], err_msg=name)


@needs_gpu
@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch(cell):
    inputs, douts = make_problem(cell, 3, 0, 7, 33, np.float32, seed=1)
    got = run_cuda(cell, inputs, douts)
    for name, value in reference_results(cell, inputs, douts, np.float64).items():
        assert (value is None) == (got[name] is None), name
        if value is not None:
            assert got[name].shape == value.shape, name


@needs_gpu
def test_non_default_stream_and_strided_input():
    """Results on a non-default stream, from non-contiguous inputs, equal the plain ones."""
    from rnnfast import functional as F

    cell = "lstm"
    inputs, douts = make_problem(cell, 6, 5, 33, 40, np.float32, seed=3)
    expected = run_cuda(cell, inputs, douts, training=False)
    g = to_gpu(inputs)
    x_batch_first = cupy.ascontiguousarray(g["x"].transpose(1, 0, 2))
    with cupy.cuda.Stream(non_blocking=True) as stream:
        y, h_n, c_n, _ = F.forward(cell, x_batch_first.transpose(1, 0, 2), g["h0"], g["w_ih"],
                                   g["w_hh"], b_ih=g["b_ih"], b_hh=g["b_hh"], c0=g["c0"])
        stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(y), expected["y"])
    np.testing.assert_array_equal(cupy.asnumpy(c_n), expected["c_n"])


@needs_gpu
def test_many_row_tiles():
    """More batch row tiles than a grid's y dimension holds (65535 blocks of 16 rows): the
    kernels loop over the rest."""
    cell, dtype = "gru", np.float32
    inputs, douts = make_problem(cell, 2, 65535 * 16 + 3, 1, 1, dtype, seed=4)
    got = run_cuda(cell, inputs, douts)
    assert_matches_oracle(cell, inputs, douts, got, dtype)


@needs_gpu
def test_functional_errors_on_the_gpu():
    from rnnfast import functional as F

    inputs, _ = make_problem("lstm", 2, 3, 4, 5, np.float32, seed=5)
    g = to_gpu(inputs)
    args = [g["x"], g["h0"], g["w_ih"], g["w_hh"]]
    biases = {"b_ih": g["b_ih"], "b_hh": g["b_hh"]}
    with pytest.raises(TypeError, match="h0 must be a numpy.ndarray"):
        F.forward("lstm", inputs["x"], *args[1:], **biases, c0=g["c0"])
    with pytest.raises(TypeError, match="h0 has dtype float64"):
        F.forward("lstm", args[0], args[1].astype(np.float64), *args[2:], **biases, c0=g["c0"])
    with pytest.raises(ValueError, match="w_ih has shape"):
        F.forward("lstm", args[0], args[1], args[2][:, :3], args[3], **biases, c0=g["c0"])
    with pytest.raises(ValueError, match="c0 must be None"):
        F.forward("gru", *args[:2], g["w_ih"][:15], g["w_hh"][:15], c0=g["c0"])
    with pytest.raises(ValueError, match="cell must be one of"):
        F.forward("lstmx", *args, **biases, c0=g["c0"])
    with pytest.raises(TypeError, match="ctx must be the Context"):
        F.backward(object(), g["h0"])
    _, _, _, cpu_ctx = F.forward("lstm", inputs["x"], inputs["h0"], inputs["w_ih"],
                                 inputs["w_hh"], c0=inputs["c0"], training=True)
    with pytest.raises(TypeError, match="dy must be a numpy.ndarray"):
        F.backward(cpu_ctx, g["x"])


@needs_gpu
def test_binding_refuses_host_and_overlapping_device_arrays():
    """With real device arrays: an output inside an input is refused, and so is a pointer that
    is not device memory (a fake one)."""
    args = fake_forward_args("gru")
    real = {k: (cupy.zeros(v.__cuda_array_interface__["shape"], np.float32)
                if isinstance(v, FakeDeviceArray) else v) for k, v in args.items()}
    big = cupy.zeros(T * B * H + 1, np.float32)
    with pytest.raises(ValueError, match="y overlaps the memory of h0"):
        _cuda.recurrent_forward(**{**real, "h0": big[:B * H].reshape(B, H),
                                   "y": big[1:].reshape(T, B, H)})
    host = np.zeros((B, H), np.float32)
    fake_host = FakeDeviceArray((B, H), ptr=host.ctypes.data)
    with pytest.raises(ValueError, match="h0 is not in device memory"):
        _cuda.recurrent_forward(**{**real, "h0": fake_host})
    _cuda.recurrent_forward(**real)  # the same arguments, all valid, run
    cupy.cuda.get_current_stream().synchronize()


@needs_gpu
@pytest.mark.parametrize("path", ["standard", "persistent"])
@pytest.mark.parametrize("name", ["bf16", "f16", "tf32"])
@pytest.mark.parametrize("cell", CELLS)
def test_tensor_cores(cell, name, path):
    """Each path's forward and backward on the tensor cores (mma.sync) as the emulated tests
    hold them: to the float64 reference with h_{t-1} and dzh rounded, and to the standard path
    without the rounding; every tail shape, lengths and resets (and the standard path's LSTM
    projection); and which operands are rounded, on one step. The emulator checks the kernels'
    logic through its host version of the instruction; only this runs the instruction itself,
    in the register layout mma.cuh loads."""
    from test_cuda_kernels_emulated import (
        MMA_SHAPES,
        STEP_SHAPES,
        check_rounded_operands,
        compare_mma_with_reference,
    )

    for shape in MMA_SHAPES:
        for proj in [False, True] if path == "standard" and cell == "lstm" else [False]:
            compare_mma_with_reference(_cuda, cell, name, shape, True, True, cupy.asarray,
                                       cupy.asnumpy, path=path, proj=proj)
    for shape in STEP_SHAPES:
        check_rounded_operands(_cuda, cell, name, shape, cupy.asarray, cupy.asnumpy, path=path)
