"""The CUDA recurrence kernels (cuda/recurrence.cu) run on the host, against the CPU kernels.

No GPU needed: the kernels' source is compiled by the host C++ compiler with the emulation in
tests/cuda_emulation/cuda_runtime.h (each block's threads as std::threads meeting at a barrier
in __syncthreads, blocks one after another), its launches rewritten to calls. This checks what
the kernels compute: indexing, tiles and their tails, the step structure of forward and
backward, the training workspace's layout, optional arguments. It cannot check the CUDA
compiler's code, the GPU's memory model, races between blocks or speed: tests/test_cuda.py
does, on a GPU. Outputs are poisoned with NaN first, so an element left unwritten fails.
"""

import ctypes
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from rnnfast import _cpu

from _util import CELLS, DTYPES, GATES

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMULATION = ROOT / "tests" / "kernels" / "cuda_emulation"
CELL_IDS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}  # rnnfast::Cell
LAUNCH = re.compile(r"(\w+<[^;<>]*>)<<<([^;]*?)>>>\(([^;]*?)\);")


def _compile(compiler, source, out, extra=()):
    return subprocess.run(
        [compiler, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", *extra, str(source),
         "-o", str(out)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    build = tmp_path_factory.mktemp("cuda_emulation")
    probe = build / "probe.cpp"
    probe.write_text("#include <barrier>\nint probe() { std::barrier<> b(1); return 0; }\n")
    if _compile(compiler, probe, build / "probe.so").returncode != 0:
        pytest.skip(f"{compiler} lacks C++20's <barrier>")
    source = (ROOT / "cuda" / "recurrence.cu").read_text()
    rewritten, launches = LAUNCH.subn(r"emulate_launch(\1, \2, \3);", source)
    assert launches == 2, "expected the forward and the backward launch in cuda/recurrence.cu"
    (build / "recurrence_emulated.cpp").write_text(rewritten)
    shutil.copy(EMULATION / "harness.cpp", build / "harness.cpp")
    library = build / "libemulated.so"
    done = _compile(compiler, build / "harness.cpp", library,
                    [f"-I{EMULATION}", f"-I{ROOT / 'cuda'}", f"-I{ROOT / 'cpp' / 'include'}"])
    assert done.returncode == 0, done.stderr[-4000:]
    return ctypes.CDLL(str(library))


def _ptr(array):
    return None if array is None else array.ctypes.data_as(ctypes.c_void_p)


def _poisoned(shape, dtype, present=True):
    return np.full(shape, np.nan, dtype) if present else None


def _run(impl, lib, cell, inputs, grads_out, dtype):
    """Forward then backward through the CPU kernels or the emulated CUDA ones."""
    x = inputs
    T_, B, GH = x["zx"].shape
    H = GH // GATES[cell]
    lstm, per_unit = cell == "lstm", _cpu.saved_per_unit(cell)
    out = {"y": _poisoned((T_, B, H), dtype), "h_n": _poisoned((B, H), dtype),
           "c_n": _poisoned((B, H), dtype, lstm),
           "saved": _poisoned((T_, B, per_unit * H), dtype, per_unit > 0)}
    fwd = [x["zx"], x["w_hh"], x["b_hh"], x["h0"], x["c0"], out["y"], out["h_n"], out["c_n"],
           out["saved"]]
    suffix = "f32" if dtype == np.float32 else "f64"
    sizes = [ctypes.c_int(CELL_IDS[cell]), ctypes.c_int64(T_), ctypes.c_int64(B),
             ctypes.c_int64(H)]
    if impl == "cpu":
        _cpu.recurrent_forward(cell, *fwd)
    else:
        assert getattr(lib, f"forward_{suffix}")(*sizes, *map(_ptr, fwd)) == 0
    out.update({"dzx": _poisoned((T_, B, GH), dtype), "dzh": _poisoned((T_, B, GH), dtype,
                                                                          cell == "gru"),
                "dh0": _poisoned((B, H), dtype), "dc0": _poisoned((B, H), dtype, lstm)})
    bwd = [x["w_hh"], x["h0"], x["c0"], out["y"], out["saved"], grads_out["dy"],
           grads_out["dh_n"], grads_out["dc_n"], out["dzx"], out["dzh"], out["dh0"], out["dc0"]]
    if impl == "cpu":
        _cpu.recurrent_backward(cell, *bwd)
    else:
        bwd[9] = out["dzx"] if out["dzh"] is None else out["dzh"]  # the kernels' convention
        assert getattr(lib, f"backward_{suffix}")(*sizes, *map(_ptr, bwd)) == 0
    return out


# (T, B, H): tails of every tile (32 units, 16 batch rows, depth 32), several row and unit
# tiles (B = 37, H = 70), H = 1, and the 130 of the CPU tests.
SHAPES = [(1, 1, 1), (5, 3, 7), (2, 1, 33), (3, 17, 33), (2, 37, 70), (3, 3, 130), (4, 33, 1)]
# Both are the same math at the same precision, summed in other orders, over a few steps.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("optional", [True, False], ids=["given", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{t}-B{b}-H{h}" for t, b, h in SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_emulated_kernels_match_cpu(emulated, cell, dtype, shape, optional):
    """`optional` given: b_hh, dh_n, dc_n are arrays; none: they are None (zero)."""
    T_, B, H = shape
    G, lstm = GATES[cell], cell == "lstm"
    rng = np.random.default_rng(sum(map(ord, f"{cell}{dtype}{shape}{optional}")))
    draw = lambda *s: (0.5 * rng.standard_normal(s)).astype(dtype)  # noqa: E731
    inputs = {"zx": draw(T_, B, G * H), "w_hh": draw(G * H, H),
              "b_hh": draw(G * H) if optional else None, "h0": draw(B, H),
              "c0": draw(B, H) if lstm else None}
    grads_out = {"dy": draw(T_, B, H), "dh_n": draw(B, H) if optional else None,
                 "dc_n": draw(B, H) if lstm and optional else None}
    cpu = _run("cpu", None, cell, inputs, grads_out, dtype)
    emu = _run("emulated", emulated, cell, inputs, grads_out, dtype)
    failures = []
    for name, expected in cpu.items():
        if expected is None:
            continue
        got = emu[name]
        if np.isnan(got).any():
            failures.append(f"{name}: {np.isnan(got).sum()} elements not written")
            continue
        err = np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30)
        if not err <= TOL[dtype]:
            failures.append(f"{name}: rel err {err:.2e} > {TOL[dtype]:.0e}")
    assert not failures, "; ".join(failures)
