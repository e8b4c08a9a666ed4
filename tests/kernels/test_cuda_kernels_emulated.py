"""The CUDA kernels (cuda/recurrence.cu) run by the emulator (rnnfast._cuda_emulated), against
the CPU kernels, and the emulator's own tests.

rnnfast._cuda_emulated is the CUDA source compiled by the host compiler, with CUDA threads as
host threads (cuda/emulator/emulator.h). This checks what the kernels compute: indexing, tiles
and their tails, the step structure of forward and backward, lengths, resets, the projection,
the training workspace's layout, optional arguments. It cannot check the CUDA compiler's code,
the GPU's memory model or speed: tests/test_cuda.py does, on a GPU. Outputs and the workspace
are poisoned with NaN first, so an element left unwritten (or read before it is written) fails.
"""

import concurrent.futures
import itertools
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnfast import _cpu, _cuda_emulated as emu, _dtypes, reference as ref

from _util import CELLS, DTYPES, FLOAT32_FLOOR, GATES, rel_err

# (T, B, H): tails of every tile (32 units, 16 batch rows, depth 32), several row and unit
# tiles (B = 37, H = 70), H = 1, and the 130 of the CPU tests.
SHAPES = [(1, 1, 1), (5, 3, 7), (2, 1, 33), (3, 17, 33), (2, 37, 70), (3, 3, 130), (4, 37, 1)]
# Shapes for the sequence options: each has rows of length 0 and T (B > 1), and several steps.
OPTION_SHAPES = [(5, 3, 7), (4, 17, 33), (3, 37, 70), (2, 3, 130)]
# Both are the same math at the same precision, summed in other orders, over a few steps.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _nan(shape, dtype, present=True):
    return np.full(shape, np.nan, dtype) if present else None


def _identity(a):
    return a


def _run(module, cell, dtype, x, d, options, to_device=_identity, to_host=_identity,
         path="standard", rounding=None):
    """Forward then backward through the CPU kernels or CUDA ones (module: rnnfast._cpu,
    _cuda_emulated or _cuda; path and rounding: the CUDA module's options), all outputs
    poisoned first. x: inputs of the
    forward; d: dy, dh_n, dc_n; options: lengths, resets, w_hr (or None each); all NumPy arrays.
    to_device makes the module's arrays of NumPy ones, to_host the reverse. Returns the outputs
    as NumPy arrays."""
    return _run_directions(module, cell, dtype, [(x, d, options)], to_device, to_host, path,
                           rounding)[0]


def _run_directions(module, cell, dtype, problems, to_device=_identity, to_host=_identity,
                    path="standard", rounding=None):
    """_run of each problem (x, d, options) in `problems`: one, or two, both directions of a
    layer, their forward in one persistent launch (the CUDA module's recurrent_forward_pair),
    then each one's backward on the persistent path. Returns the outputs of each."""
    dev = lambda a: None if a is None else to_device(a)  # noqa: E731
    forward, backward, outputs, workspaces = [], [], [], {"forward": [], "backward": []}
    for x, d, options in problems:
        T_, B, GH = x["zx"].shape
        H = GH // GATES[cell]
        w_hr = options["w_hr"]
        P = 0 if w_hr is None else w_hr.shape[0]
        R = P or H
        lstm, per_unit = cell == "lstm", _cpu.saved_per_unit(cell)
        out = {"y": _nan((T_, B, R), dtype), "h_n": _nan((B, R), dtype),
               "c_n": _nan((B, H), dtype, lstm),
               "saved": _nan((T_, B, per_unit * H), dtype, per_unit > 0),
               "dzx": _nan((T_, B, GH), dtype), "dzh": _nan((T_, B, GH), dtype, cell == "gru"),
               "dh0": _nan((B, R), dtype), "dc0": _nan((B, H), dtype, lstm),
               "dh_proj": _nan((T_, B, R), dtype, P > 0)}
        out = {k: dev(v) for k, v in out.items()}
        x, d = {k: dev(v) for k, v in x.items()}, {k: dev(v) for k, v in d.items()}
        seq = [dev(options[k]) for k in ("lengths", "resets", "w_hr")]
        forward.append((cell, x["zx"], x["w_hh"], x["b_hh"], x["h0"], x["c0"], out["y"],
                        out["h_n"], out["c_n"], out["saved"], *seq))
        backward.append((cell, x["w_hh"], x["h0"], x["c0"], out["y"], out["saved"], d["dy"],
                         d["dh_n"], d["dc_n"], out["dzx"], out["dzh"], out["dh0"], out["dc0"],
                         *seq, out["dh_proj"]))
        outputs.append(out)
        if module is not _cpu:  # the CUDA modules' scratch memory, poisoned too
            for direction in workspaces:
                size = module.workspace_size(direction, cell, B, H, P)
                workspaces[direction].append(dev(_nan(size, dtype)))
    if len(problems) == 2:
        module.recurrent_forward_pair(*forward, workspaces=tuple(workspaces["forward"]),
                                      rounding=rounding)
        for args, workspace in zip(backward, workspaces["backward"]):
            module.recurrent_backward(*args, workspace=workspace, path="persistent",
                                      rounding=rounding)
    else:
        def options(direction):
            if module is _cpu:
                return {}
            return {"path": path, "rounding": rounding, "workspace": workspaces[direction][0]}
        module.recurrent_forward(*forward[0], **options("forward"))
        module.recurrent_backward(*backward[0], **options("backward"))
    return [{k: None if v is None else to_host(v) for k, v in out.items()} for out in outputs]


def _problem(cell, dtype, shape, optional, lengths=False, resets=False, proj=False, seed=""):
    """A random problem for _run, (x, d, options). optional: b_hh, dh_n and dc_n given (else
    None); lengths: every length from 0 to T, the first row T and the last 0; resets: about 30%
    of the steps; proj: the LSTM projection, P = 2H/3; seed: what else the seed depends on."""
    T_, B, H = shape
    G, lstm = GATES[cell], cell == "lstm"
    rng = np.random.default_rng(sum(map(
        ord, f"{cell}{np.dtype(dtype)}{shape}{optional}{lengths}{resets}{proj}{seed}")))
    draw = lambda *s: (0.5 * rng.standard_normal(s)).astype(dtype)  # noqa: E731
    P = max(1, 2 * H // 3) if proj else 0
    R = P or H
    x = {"zx": draw(T_, B, G * H), "w_hh": draw(G * H, R),
         "b_hh": draw(G * H) if optional else None, "h0": draw(B, R),
         "c0": draw(B, H) if lstm else None}
    d = {"dy": draw(T_, B, R), "dh_n": draw(B, R) if optional else None,
         "dc_n": draw(B, H) if lstm and optional else None}
    options = {"lengths": None, "resets": None, "w_hr": draw(P, H) if proj else None}
    if lengths:
        n = rng.integers(0, T_ + 1, B)
        n[0], n[-1] = T_, 0
        options["lengths"] = n.astype(np.int64)
    if resets:
        options["resets"] = rng.random((T_, B)) < 0.3
    return x, d, options


def _check_against(got, expected_outputs, dtype):
    """got (outputs of _run) against the CPU kernels' (expected_outputs) within TOL."""
    failures = []
    for name, expected in expected_outputs.items():
        if expected is None:
            continue
        if np.isnan(got[name]).any():
            failures.append(f"{name}: {np.isnan(got[name]).sum()} elements not written")
            continue
        err = np.max(np.abs(got[name] - expected)) / max(np.max(np.abs(expected)), 1e-30)
        if not err <= TOL[dtype]:
            failures.append(f"{name}: rel err {err:.2e} > {TOL[dtype]:.0e}")
    assert not failures, "; ".join(failures)


def compare_with_cpu(module, cell, dtype, shape, optional, lengths=False, resets=False,
                     proj=False, to_device=_identity, to_host=_identity, path="standard"):
    """A CUDA module's kernels (on `path`) against the CPU's on one random problem (_problem,
    whose arguments these are). Returns the CUDA module's outputs."""
    x, d, options = _problem(cell, dtype, shape, optional, lengths, resets, proj)
    got = _run(module, cell, dtype, x, d, options, to_device, to_host, path)
    _check_against(got, _run(_cpu, cell, dtype, x, d, options), dtype)
    return got


def _ids(shapes):
    return [f"T{t}-B{b}-H{h}" for t, b, h in shapes]


def _rotated(names, cases, choices):
    """pytest parameters: each of ``cases`` (tuples of values) with the next of ``choices`` in
    turn, for the emulated tensor cores' tests (a second or more a case): every choice meets
    every value of each parameter, in len(cases) cases instead of len(cases) * len(choices).
    ``names``: the parameters' names, the choice's last."""
    def show(value):  # a shape, a dtype or a name
        return _ids([value])[0] if isinstance(value, tuple) else getattr(value, "__name__", value)

    params = [pytest.param(*case, choices[i % len(choices)],
                           id="-".join(map(show, (*case, choices[i % len(choices)]))))
              for i, case in enumerate(cases)]
    return pytest.mark.parametrize(names, params)


@pytest.mark.parametrize("optional", [True, False], ids=["given", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_emulated_kernels_match_cpu(cell, dtype, shape, optional):
    compare_with_cpu(emu, cell, dtype, shape, optional)


@pytest.mark.parametrize("lengths, resets", [(True, False), (False, True), (True, True)],
                         ids=["lengths", "resets", "both"])
@pytest.mark.parametrize("shape", OPTION_SHAPES, ids=_ids(OPTION_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_emulated_sequence_options_match_cpu(cell, dtype, shape, lengths, resets):
    compare_with_cpu(emu, cell, dtype, shape, True, lengths, resets)


PROJ_SHAPES = [(1, 1, 1), (5, 3, 7), (3, 17, 33), (2, 37, 70), (2, 3, 130)]


@pytest.mark.parametrize("options", ["plain", "none", "lengths-resets"])
@pytest.mark.parametrize("shape", PROJ_SHAPES, ids=_ids(PROJ_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_emulated_projection_matches_cpu(dtype, shape, options):
    sequence = options == "lengths-resets" and shape[1] > 1
    compare_with_cpu(emu, "lstm", dtype, shape, options != "none", sequence, sequence, proj=True)


# The persistent path (one cooperative launch, W_hh on chip; the emulated device has 8 SMs): tails
# of its units per block (H = 33: 5 units, the last block 3; H = 130: 17 and 11), B = 1 and 3,
# and B = 9 with 17 units a block, more rows than 128 threads cover at once (7 rows of 17 items:
# the last 9 threads idle); every sequence option; against the CPU kernels, and equal to the
# standard path, whose sums run in the same order.
PERSISTENT_SHAPES = [(1, 1, 1), (4, 3, 7), (3, 1, 33), (5, 3, 33), (2, 3, 130), (2, 9, 130)]


# Each case one option in turn (_rotated): each cell meets every option with B > 1 (on one
# dtype or the other), and each shape every option.
@_rotated("cell, dtype, shape, options", list(itertools.product(CELLS, DTYPES, PERSISTENT_SHAPES)),
          ["none", "given", "lengths", "resets", "both"])
def test_persistent_path_matches_cpu_and_standard(cell, dtype, shape, options):
    sequence = dict(lengths=options in ("lengths", "both") and shape[1] > 1,
                    resets=options in ("resets", "both"))
    args = (emu, cell, dtype, shape, options != "none")
    persistent = compare_with_cpu(*args, **sequence, path="persistent")
    standard = compare_with_cpu(*args, **sequence)
    for name, value in standard.items():
        if value is not None:
            np.testing.assert_array_equal(persistent[name], value, err_msg=name)


def test_persistent_path_refuses_what_it_cannot_run():
    assert emu.persistent_refusal("lstm", 130) == ""
    assert "projection" in emu.persistent_refusal("lstm", 130, proj=20)
    # 8 SMs of 227 KiB: an LSTM of H = 256 in float32 needs 32 units x 4 gates x 256 x 4 bytes
    # = 128 KiB a block; H = 384, 48 units: 288 KiB.
    assert emu.persistent_refusal("lstm", 256) == ""
    assert "shared memory" in emu.persistent_refusal("lstm", 384)
    assert "shared memory" in emu.persistent_refusal("lstm", 256, dtype="float64")
    with pytest.raises(ValueError, match="projection"):
        compare_with_cpu(emu, "lstm", np.float32, (2, 3, 7), True, proj=True, path="persistent")
    with pytest.raises(ValueError, match="path must be"):
        compare_with_cpu(emu, "gru", np.float32, (2, 3, 7), True, path="fast")


# Both directions of a bidirectional layer's forward in one persistent launch
# (recurrent_forward_pair; 4 of the emulated device's 8 SMs a direction): each direction its own
# problem (the reverse one, as rnnfast.functional gives it, with the same lengths and resets of
# its own), equal bit for bit to its own persistent launch (each item's sums are the same
# whatever a block's units), so to the standard path (test_persistent_path_matches_cpu_and_-
# standard), and within TOL of the CPU kernels; forward, and the backward from its results, the
# tails of
# PERSISTENT_SHAPES (with 4 SMs a direction: H = 33, 9 units a block, the last 6; H = 130, 33
# and 31, more than 128 / 33 = 3 rows for B = 9).
def _both_directions(cell, dtype, shape, sequence, rounding=None):
    """(the pair's outputs, each direction's own persistent launch's, the problems)."""
    problems = [_problem(cell, dtype, shape, True, sequence, sequence, seed=direction)
                for direction in ("forward", "reverse")]
    problems[1][2]["lengths"] = problems[0][2]["lengths"]  # one layer's sequences
    pair = _run_directions(emu, cell, dtype, problems, rounding=rounding)
    single = [_run(emu, cell, dtype, *problem, path="persistent", rounding=rounding)
              for problem in problems]
    for got, expected in zip(pair, single):
        for name, value in expected.items():
            if value is not None:
                np.testing.assert_array_equal(got[name], value, err_msg=name)
    return pair, problems


@pytest.mark.parametrize("options", ["given", "lengths-resets"])
@pytest.mark.parametrize("shape", PERSISTENT_SHAPES, ids=_ids(PERSISTENT_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_both_directions_in_one_launch(cell, dtype, shape, options):
    pair, problems = _both_directions(cell, dtype, shape,
                                      options == "lengths-resets" and shape[1] > 1)
    for got, problem in zip(pair, problems):
        _check_against(got, _run(_cpu, cell, dtype, *problem), dtype)


@_rotated("cell, name, shape", list(itertools.product(CELLS, ["bf16", "f16", "tf32"])),
          [(4, 3, 7), (2, 17, 130)])
def test_both_directions_in_one_launch_on_tensor_cores(cell, name, shape):
    _both_directions(cell, np.float32, shape, shape[1] > 1, rounding=ROUNDINGS[name][0])


def test_both_directions_refused_where_they_do_not_fit():
    """With 4 SMs a direction, an LSTM of H = 256 in float32 needs 64 units x 4 gates x 256 x 4
    bytes = 256 KiB a block (one direction: 128 KiB): refused, and so are two directions of
    different sizes."""
    assert emu.persistent_refusal("lstm", 256) == ""
    assert "both directions" in emu.persistent_refusal("lstm", 256, directions=2)
    assert emu.persistent_refusal("lstm", 130, directions=2) == ""
    problems = [_problem("lstm", np.float32, (2, 3, 256), False)] * 2
    with pytest.raises(ValueError, match="both directions at once"):
        _run_directions(emu, "lstm", np.float32, problems)
    problems = [_problem("gru", np.float32, (2, 3, h), False) for h in (7, 8)]
    with pytest.raises(ValueError, match="same cell and sizes"):
        _run_directions(emu, "gru", np.float32, problems)
    with pytest.raises(ValueError, match="directions 1 or 2"):
        emu.persistent_refusal("gru", 7, directions=3)


@pytest.mark.parametrize("cell", CELLS)
def test_inference_forward_equals_training(cell):
    """saved None (inference) writes the same y, h_n, c_n as the training forward, bit for bit,
    with lengths, resets and (LSTM) the projection."""
    T_, B, H, P = 4, 17, 33, (20 if cell == "lstm" else 0)
    G, R = GATES[cell], P or H
    rng = np.random.default_rng(7)
    draw = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    args = {"zx": draw(T_, B, G * H), "w_hh": draw(G * H, R), "b_hh": draw(G * H),
            "h0": draw(B, R), "c0": draw(B, H) if cell == "lstm" else None,
            "lengths": rng.integers(0, T_ + 1, B), "resets": rng.random((T_, B)) < 0.3,
            "w_hr": draw(P, H) if P else None}
    results = []
    for saved in (_nan((T_, B, emu.saved_per_unit(cell) * H), np.float32,
                       emu.saved_per_unit(cell) > 0), None):
        out = {"y": _nan((T_, B, R), np.float32), "h_n": _nan((B, R), np.float32),
               "c_n": _nan((B, H), np.float32, cell == "lstm")}
        emu.recurrent_forward(cell, **args, **out, saved=saved,
                              workspace=_nan(emu.workspace_size("forward", cell, B, H, P),
                                             np.float32))
        results.append(out)
    for name, value in results[0].items():
        if value is not None:
            assert not np.isnan(value).any(), f"{name} not fully written"
            np.testing.assert_array_equal(results[1][name], value, err_msg=name)


# ------------------------------------------------------------------ the binding


def _small_forward(cell="lstm", dtype=np.float32, **changes):
    T_, B, H = 3, 2, 4
    G = GATES[cell]
    lstm, S = cell == "lstm", _cpu.saved_per_unit(cell)
    z = lambda *s: np.zeros(s, dtype)  # noqa: E731
    args = {"cell": cell, "zx": z(T_, B, G * H), "w_hh": z(G * H, H), "b_hh": None,
            "h0": z(B, H), "c0": z(B, H) if lstm else None, "y": z(T_, B, H), "h_n": z(B, H),
            "c_n": z(B, H) if lstm else None, "saved": z(T_, B, S * H) if S else None}
    return {**args, **changes}


def test_module_interface():
    assert emu.emulated is True
    assert emu.compiled_architectures == "host"
    info = emu.device_info()
    assert set(info) == {"runtime_version", "driver_version", "devices", "error"}
    assert info["error"] is None and len(info["devices"]) == 1
    for cell in CELLS:
        assert emu.gate_count(cell) == GATES[cell]
        assert emu.saved_per_unit(cell) == _cpu.saved_per_unit(cell)
    assert emu.workspace_size("forward", "lstm", 3, 5, 0) == 0
    assert emu.workspace_size("forward", "lstm", 3, 5, 2) == 15
    assert emu.workspace_size("backward", "gru", 3, 5, 0) == 15
    assert emu.workspace_size("backward", "lstm", 3, 5, 0) == 30
    assert emu.workspace_size("backward", "lstm", 3, 5, 2) == 15
    with pytest.raises(ValueError, match="direction"):
        emu.workspace_size("sideways", "lstm", 3, 5, 0)


@pytest.mark.parametrize("name, value, error, message", [
    ("lengths", np.zeros(2, np.int32), TypeError, "lengths has dtype int32, expected int64$"),
    ("lengths", np.zeros(3, np.int64), ValueError, r"lengths has shape \(3,\), expected \(2,\)"),
    ("lengths", [3, 3], TypeError, "lengths must be a numpy.ndarray"),
    ("resets", np.zeros((3, 2), np.int64), TypeError,
     "resets has dtype int64, expected bool or uint8"),
    ("resets", np.zeros((2, 3), bool), ValueError, r"resets has shape \(2, 3\), expected \(3, 2\)"),
    ("resets", np.zeros((2, 3), bool).T, ValueError, "resets must be C-contiguous"),
    ("w_hr", np.zeros((2, 4), np.float64), ValueError,
     r"w_hh has shape \(16, 4\), expected \(16, 2\)"),
])
def test_options_checked_like_every_array(name, value, error, message):
    with pytest.raises(error, match=message):
        emu.recurrent_forward(**_small_forward(**{name: value}))


def test_workspace_checked():
    P = 2
    args = _small_forward(w_hh=np.zeros((16, P), np.float32), h0=np.zeros((2, P), np.float32),
                          y=np.zeros((3, 2, P), np.float32), h_n=np.zeros((2, P), np.float32),
                          w_hr=np.zeros((P, 4), np.float32))
    with pytest.raises(ValueError, match="workspace must be a 1-D array of at least 8 elements"):
        emu.recurrent_forward(**args)
    with pytest.raises(ValueError, match=r"workspace has shape \(7,\), expected a 1-D array of "
                                         "at least 8"):
        emu.recurrent_forward(**args, workspace=np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="workspace has dtype float64, expected float32"):
        emu.recurrent_forward(**args, workspace=np.zeros(8, np.float64))
    with pytest.raises(ValueError, match="y overlaps the memory of workspace"):
        emu.recurrent_forward(**args, workspace=args["y"].reshape(-1))
    emu.recurrent_forward(**args, workspace=np.zeros(9, np.float32))
    # workspace and stream are keyword-only: a 14th positional argument is refused
    with pytest.raises(TypeError):
        emu.recurrent_forward(*_small_forward().values(), None, None, None, None)


# ------------------------------------------------------------------ the emulator itself


def test_divergent_barrier_fails_at_once():
    """A barrier that some threads never reach fails the launch as soon as no thread can run
    (the fibers' deadlock), not at the timeout, naming the barrier and who arrived; every
    waiting thread unwinds, and the next launch runs clean."""
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"divergent_barrier_kernel.*__syncthreads with 5 of 32 "
                                           r"threads arrived \(block \(0, 0, 0\), thread "
                                           r"\(0, 0, 0\) waiting\), the others finished"):
        emu.self_test_divergent_barrier(32, 5)
    assert time.monotonic() - start < 0.1 * emu.timeout()
    emu.self_test_divergent_barrier(32, 32)  # every thread arrives: no error, and no leftovers


def test_concurrent_launches_from_several_threads():
    """Launches from several Python threads at once (the binding releases the GIL) each keep
    their own blocks, shared memory and coordinates: the results equal those of one at a
    time."""
    cell, T_, B, H = "gru", 3, 20, 40
    rng = np.random.default_rng(11)
    draw = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float64)  # noqa: E731
    problems = [{"zx": draw(T_, B, 3 * H), "w_hh": draw(3 * H, H), "b_hh": draw(3 * H),
                 "h0": draw(B, H)} for _ in range(4)]

    def forward(p):
        y = _nan((T_, B, H), np.float64)
        emu.recurrent_forward(cell, p["zx"], p["w_hh"], p["b_hh"], p["h0"], None, y,
                              _nan((B, H), np.float64), None, None)
        return y

    alone = [forward(p) for p in problems]
    with concurrent.futures.ThreadPoolExecutor(len(problems)) as pool:
        together = list(pool.map(forward, problems))
    for a, b in zip(alone, together):
        assert not np.isnan(a).any()
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("value, expected", [("0.25", 0.25), ("soon", 60.0), ("-1", 60.0)])
def test_timeout_from_environment(value, expected):
    """RNNFAST_EMULATOR_TIMEOUT sets the default; what is not a positive number is refused with
    a message, and 60 s holds."""
    code = "from rnnfast import _cuda_emulated as e; print(e.timeout())"
    env = {**os.environ, "RNNFAST_EMULATOR_TIMEOUT": value}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == expected
    assert ("RNNFAST_EMULATOR_TIMEOUT" in done.stderr) == (expected == 60.0)


def test_set_timeout_refuses_nonsense():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            emu.set_timeout(bad)


@pytest.mark.parametrize("blocks, threads", [(1, 1), (2, 32), (7, 33), (16, 128)])
def test_grid_sync_shows_every_block_the_others_writes(blocks, threads):
    seen = np.array(emu.self_test_grid_sync(blocks, threads)).reshape(blocks, threads)
    b = np.arange(blocks)[:, None]
    t = np.arange(threads)[None, :]
    np.testing.assert_array_equal(seen, (b + 1) % blocks * threads + t)


def test_cooperative_launch_too_large():
    with pytest.raises(RuntimeError, match="cooperative launch of 8256 threads"):
        emu.self_test_grid_sync(129, 64)


# ------------------------------------------------------------------ the tensor cores (mma.cuh)

# The roundings of the recurrent matmul that both paths multiply on the tensor cores: (name for
# the binding, rnnfast._dtypes' value, K of one mma).
ROUNDINGS = {"bf16": ("bfloat16", "bfloat16", 16), "f16": ("float16", "float16", 16),
             "tf32": ("tf32", "tf32", 8)}


def _rounding(name):
    value = ROUNDINGS[name][1]
    return _dtypes.TF32 if value == "tf32" else _dtypes.resolve(value)


def _ptx_layout(name):
    """The fragment layout of mma.m16n8k16 (16-bit) and mma.m16n8k8 (TF32), as the PTX ISA's
    "Matrix Fragments" section states it: for lane = 4 * groupID + threadID_in_group, each
    element's (row, column). Written from that text, not from mma.cuh."""
    a, b, c = [], [], []
    for lane in range(32):
        group, thread = lane // 4, lane % 4
        if name == "tf32":  # a0..a3; b0, b1
            a.append([(group if i in (0, 2) else group + 8, thread if i < 2 else thread + 4)
                      for i in range(4)])
            b.append([(thread if i == 0 else thread + 4, group) for i in range(2)])
        else:  # a0..a7; b0..b3
            a.append([(group if i in (0, 1, 4, 5) else group + 8,
                       thread * 2 + (i & 1) + (8 if i >= 4 else 0)) for i in range(8)])
            b.append([(thread * 2 + (i & 1) + (8 if i >= 2 else 0), group) for i in range(4)])
        c.append([(group if i < 2 else group + 8, thread * 2 + (i & 1)) for i in range(4)])
    return a, b, c


@pytest.mark.parametrize("name", ROUNDINGS)
def test_mma_fragment_layout_is_ptx(name):
    for got, expected in zip(emu.mma_positions(ROUNDINGS[name][0]), _ptx_layout(name)):
        np.testing.assert_array_equal(got, np.array(expected))


@pytest.mark.parametrize("name", ROUNDINGS)
def test_host_mma_matches_numpy(name):
    """One emulated warp's load_a, load_b, mma and accumulator layout against NumPy on random
    tiles: c + a b with a and b rounded to the operand type, to nearest even (the tiles hold
    values that round and, for the 16-bit types, exact ties), summed exactly and rounded once to
    float32, as the host mma does."""
    binding, _, K = ROUNDINGS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    for _ in range(5):
        a = rng.standard_normal((16, K)).astype(np.float32)
        b = rng.standard_normal((K, 8)).astype(np.float32)
        c = rng.standard_normal((16, 8)).astype(np.float32)
        a[0, :4] = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11]
        ra, rb = (_dtypes.round_operand(m, _rounding(name)).astype(np.float64) for m in (a, b))
        expected = (c + ra @ rb).astype(np.float32)
        np.testing.assert_array_equal(emu.self_test_mma(binding, a, b, c), expected)


def _round_to(name, a):
    return _dtypes.round_operand(a.astype(np.float32), _rounding(name)).astype(a.dtype)


def _reference_run(cell, dtype, x, d, options, operand, rounds_dzh=True):
    """The float64 or float32 reference (dtype) on the inputs of _run, with x = zx and W_ih = I
    (its input projection is zx itself), operand as in reference.forward (h_{t-1} and dzh
    where they enter the recurrent products, not the projection's; with rounds_dzh False,
    h_{t-1} only): what _run returns, but saved and dh_proj. dzx is the gradient of x; dzh
    [T, B, G*H], which reference.backward sums into the weights' gradients, is recorded from
    the cell's step backward (the kernels write it for the GRU only: the other cells' is
    dzx)."""
    c = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    y, h_n, c_n, cache = ref.forward(
        cell, c(x["zx"]), c(x["h0"]), np.eye(x["w_hh"].shape[0], dtype=dtype), c(x["w_hh"]),
        b_hh=c(x["b_hh"]), c0=c(x["c0"]), w_hr=c(options["w_hr"]), lengths=options["lengths"],
        resets=options["resets"], operand=operand)
    if not rounds_dzh:
        cache = {**cache, "operand": None}
    step, step_backward = ref.STEPS[cell]
    dzh = []

    def recording(*args):
        out = step_backward(*args)  # (dzx, dzh, dh_direct, dc_prev), from t = T-1 down
        dzh.insert(0, out[1])
        return out

    ref.STEPS[cell] = (step, recording)
    try:
        grads = ref.backward(cache, c(d["dy"]), c(d["dh_n"]), c(d["dc_n"]))
    finally:
        ref.STEPS[cell] = (step, step_backward)
    return {"y": y, "h_n": h_n, "c_n": c_n, "dzx": grads["x"], "dzh": np.stack(dzh),
            "dh0": grads["h0"], "dc0": grads["c0"]}


def _mma_problem(cell, name, shape, optional, sequence, proj=False):
    """A random problem for _run, (x, d, options), with W_hh rounded to the operand type of the
    rounding `name` (as the layers give it). optional: b_hh, dh_n and dc_n given; sequence:
    lengths (the first row's T, the last's 0 where B > 1) and resets; proj: the LSTM
    projection, P = 2H/3 (its W_hr not rounded: its product is float32)."""
    T_, B, H = shape
    G, lstm = GATES[cell], cell == "lstm"
    seed = f"{cell}{name}{shape}{optional}{sequence}" + ("proj" if proj else "")
    rng = np.random.default_rng(sum(map(ord, seed)))
    draw = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    R = max(1, 2 * H // 3) if proj else H
    x = {"zx": draw(T_, B, G * H), "w_hh": _round_to(name, draw(G * H, R)),
         "b_hh": draw(G * H) if optional else None, "h0": draw(B, R),
         "c0": draw(B, H) if lstm else None}
    d = {"dy": draw(T_, B, R), "dh_n": draw(B, R) if optional else None,
         "dc_n": draw(B, H) if lstm and optional else None}
    options = {"lengths": None, "resets": None, "w_hr": draw(R, H) if proj else None}
    if sequence:
        n = rng.integers(0, T_ + 1, B)
        n[0], n[-1] = T_, 0 if B > 1 else T_
        options.update(lengths=n.astype(np.int64), resets=rng.random((T_, B)) < 0.3)
    return x, d, options


def compare_mma_with_reference(module, cell, name, shape, optional, sequence,
                               to_device=_identity, to_host=_identity, path="persistent",
                               proj=False):
    """The CUDA `path` with the rounding `name` (the tensor cores, forward and backward) on one
    random problem (_mma_problem, proj: with the LSTM projection, standard path only), outputs
    poisoned first: the forward's y, h_n, c_n and the
    backward's dzx, dzh, dh0, dc0 against the float64 reference on the same inputs with the
    recurrent products' left operands rounded (h_{t-1} forward, dzh backward: the kernel rounds
    them, W_hh is already rounded as the layers give it), by the rule of tests/_util.py (twice
    the error of that reference run in float32, plus the floor) plus one ulp of the operand type
    (the kernel's h_{t-1} or dzh, a few float32 ulps off the reference's, may round to the
    neighbouring 16-bit value: a jump that the float32 reference, rounding as the float64 one
    does, need not show on a small problem); and against the standard path without the
    rounding, which multiplies in float32 (SIMT), within that bound plus twice what the
    rounding changes in the float32 reference. Not bit for bit: the tensor cores sum in their
    own order. (That ulp is about what the rounding itself changes: check_rounded_operands
    shows which operands are rounded.) Returns the outputs."""
    x, d, options = _mma_problem(cell, name, shape, optional, sequence, proj)

    def run(path, rounding):
        return _run(module, cell, np.float32, x, d, options, to_device, to_host, path, rounding)

    got, standard = run(path, ROUNDINGS[name][0]), run("standard", None)
    rounded = lambda a: _round_to(name, a)  # noqa: E731
    oracle = _reference_run(cell, np.float64, x, d, options, rounded)
    at_precision = _reference_run(cell, np.float32, x, d, options, rounded)
    unrounded = _reference_run(cell, np.float32, x, d, options, None)  # the standard path's
    ulp = {"bf16": 2.0 ** -7, "f16": 2.0 ** -10, "tf32": 2.0 ** -10}[name]  # at 1
    failures = []
    for key, expected in oracle.items():
        value = got[key]
        if value is None:  # c_n, dc0 but the LSTM's; dzh but the GRU's
            continue
        if np.isnan(value).any():
            failures.append(f"{key}: {np.isnan(value).sum()} elements not written")
            continue
        bound = 2 * rel_err(at_precision[key], expected) + FLOAT32_FLOOR + ulp
        if not rel_err(value, expected) <= bound:
            failures.append(f"{key}: rel err {rel_err(value, expected):.2e} > {bound:.2e}")
        # Off the standard path by what the rounding of the operands changes in the reference.
        bound += 2 * rel_err(at_precision[key], unrounded[key])
        if not rel_err(value, standard[key]) <= bound:
            failures.append(f"{key}: {rel_err(value, standard[key]):.2e} off the standard path "
                            f"> {bound:.2e}")
    assert not failures, "; ".join(failures)
    return got


# Tails of the 16 x 8 x K tiles: units per block (persistent, 8 SMs: H = 7: 1; 33: 5, the last
# block 3; 130: 17 and 11, so G * owned columns from 3 to 68; standard: 32 units a block, so
# H = 7, 33 and 130 end in blocks of 7, 1 and 2 units), B = 1 and 3, and two row tiles (B = 17:
# two blocks along y on the standard path; with H = 130, more rows of a tile than the persistent
# path's 128 threads cover at once, see PERSISTENT_SHAPES).
MMA_SHAPES = [(4, 3, 7), (3, 1, 33), (2, 3, 130), (3, 17, 33), (2, 17, 130)]
PATHS = ["standard", "persistent"]


# Options: zero initial states, or given ones with lengths and resets; in turn (_rotated), so
# that each shape meets both with each path and cell (five shapes: the turn shifts from one
# rounding to the next).
MMA_OPTIONS = ["none", "lengths-resets"]


@_rotated("path, cell, name, shape, options",
          list(itertools.product(PATHS, CELLS, ROUNDINGS, MMA_SHAPES)), MMA_OPTIONS)
def test_tensor_cores(path, cell, name, shape, options):
    sequence = options == "lengths-resets"
    compare_mma_with_reference(emu, cell, name, shape, sequence, sequence, path=path)


@_rotated("name, shape, options", list(itertools.product(ROUNDINGS, MMA_SHAPES)), MMA_OPTIONS)
def test_standard_tensor_cores_with_projection(name, shape, options):
    """The LSTM projection (standard path only): the recurrent products (depth P forward, P
    columns backward) on the tensor cores, the projection's in float32."""
    sequence = options == "lengths-resets"
    compare_mma_with_reference(emu, "lstm", name, shape, sequence, sequence, path="standard",
                               proj=True)


@pytest.mark.parametrize("name", ["bf16", "f16"])
def test_sixteen_bit_roundings_keep_w_hh_in_half_the_shared_memory(name):
    """For bfloat16 and float16 the persistent path keeps W_hh's slice in the 16-bit type (two
    values a 32-bit word), so an LSTM of H = 384 fits the emulated device's 8 SMs of 227 KiB:
    48 units x 4 gates x 384 x 2 bytes = 144 KiB a block, plus the product tile (16 rows x 192
    columns x 4 bytes), where TF32 or no rounding needs 288 KiB; and it computes as the smaller
    layers do (compare_mma_with_reference, forward and backward)."""
    binding = ROUNDINGS[name][0]
    assert emu.persistent_refusal("lstm", 384, rounding=binding) == ""
    for other in ("tf32", None):
        assert "shared memory" in emu.persistent_refusal("lstm", 384, rounding=other)
    compare_mma_with_reference(emu, "lstm", name, (2, 1, 384), True, False)


def check_rounded_operands(module, cell, name, shape, to_device=_identity, to_host=_identity,
                           path="persistent"):
    """Which operands `path` rounds (the rounding `name`), where no rounding can
    flip: one step (shape's T = 1), whose h_{t-1} is h0 (an input, which kernel and reference
    round alike) and whose dzh the kernel writes (dzx but the GRU's). y, and dh0 as each
    reference gives it with the kernel's dzh rounded in its product (a correction where kernel
    and reference round dzh to neighbouring 16-bit values), are held to the rule of
    tests/_util.py without compare_mma_with_reference's ulp; the reference without the rounding
    of h0 (y) or of dzh (dh0) fails that bound, and so would a kernel that multiplied in
    float32 (SIMT) under the rounding."""
    x, d, options = _mma_problem(cell, name, shape, True, False)
    got = _run(module, cell, np.float32, x, d, options, to_device, to_host, path,
               ROUNDINGS[name][0])
    rounded = lambda a: _round_to(name, a)  # noqa: E731
    dzh = rounded(got["dzh"] if cell == "gru" else got["dzx"])[0].astype(np.float64)
    w = x["w_hh"].astype(np.float64)

    def outputs(run):  # y, and dh0 with the kernel's rounded dzh in its product
        return {"y": run["y"], "dh0": run["dh0"] + (dzh - rounded(run["dzh"][0])) @ w}

    oracle = outputs(_reference_run(cell, np.float64, x, d, options, rounded))
    at_precision = outputs(_reference_run(cell, np.float32, x, d, options, rounded))
    without = {"y": _reference_run(cell, np.float64, x, d, options, None)["y"],
               "dh0": _reference_run(cell, np.float64, x, d, options, rounded,
                                     rounds_dzh=False)["dh0"]}
    for key, expected in oracle.items():
        bound = 2 * rel_err(at_precision[key], expected) + FLOAT32_FLOOR
        assert rel_err(got[key], expected) <= bound, key
        assert rel_err(without[key], expected) > bound, key


STEP_SHAPES = [(1, 3, 7), (1, 17, 33), (1, 3, 130)]


@pytest.mark.parametrize("shape", STEP_SHAPES, ids=_ids(STEP_SHAPES))
@pytest.mark.parametrize("name", ROUNDINGS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", PATHS)
def test_tensor_cores_round_the_left_operands(path, cell, name, shape):
    check_rounded_operands(emu, cell, name, shape, path=path)


def test_rounding_checked():
    with pytest.raises(ValueError, match="rounding must be None, 'bfloat16', 'float16' or"):
        emu.recurrent_forward(**_small_forward(), rounding="int8")
    assert "float32" in emu.persistent_refusal("gru", 7, dtype="float64", rounding="tf32")
    for path in PATHS:
        with pytest.raises(ValueError, match="rounding of the matmul's operands needs float32"):
            emu.recurrent_forward(**_small_forward(dtype=np.float64), path=path,
                                  rounding="bfloat16")
