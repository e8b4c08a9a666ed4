"""The method: per row, every implementation gets the same problem; rnnfast's outputs are
checked against each peer's; then each implementation in turn gets a pause, warm-up and its
timed repeats. Not interleaved call by call: the peers' thread pools (OpenMP's in PyTorch, ONNX
Runtime's, OpenBLAS's under NumPy) keep spinning for a while after each call, and would take
the cores from whichever implementation runs next; the pause lets them go to sleep first.
"""

import statistics
import sys
import time

import numpy as np

from .peers import Unsupported, make_problem

# Largest relative difference (see rel_err) tolerated between rnnfast and a peer. Both compute
# the same math; they differ in summation order and activation approximations, whose effect
# through a recurrence stays orders of magnitude below these, while a real mistake (a wrong gate,
# a missing term) shows as an error of order one.
TOLERANCE = {"float32": 1e-3, "float64": 1e-9,
             # bfloat16 keeps 8 significant bits: each rounding of a stored value costs up to
             # 2^-9 (2e-3) of it, and the implementations round different values (PyTorch's
             # oneDNN stores h in bfloat16 every step, rnnfast keeps the recurrence in float32)
             # so their results differ by several such roundings carried through the steps.
             "bfloat16": 5e-2}
# Each implementation gets as many repeats as fit in the time budget (settings["budget_s"]),
# judged by its last warm-up call, between MIN_REPEATS and settings["repeats"].
MIN_REPEATS = 2
# Warm-up lasts at least settings["warmup"] calls and WARMUP_S seconds (within the budget):
# after the pause, the first milliseconds of calls run up to twice slower (cores waking from
# idle), which a single short warm-up call does not cover.
WARMUP_S = 0.1


def rel_err(a, ref):
    """max|a - ref| relative to the largest magnitude in ref (NaN compares as infinitely far)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return float("inf")
    err = np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30) if ref.size else 0.0
    return float("inf") if np.isnan(err) else float(err)


def compare_outputs(ours, theirs):
    """(largest rel_err over the outputs both produced, the output where it occurs)."""
    common = [k for k in ours if k in theirs]
    if not common:
        return float("inf"), "no common output"
    return max((rel_err(theirs[k], ours[k]), k) for k in common)


class CpuTimer:
    def __call__(self, fn, *args):
        """(seconds, result) of one call."""
        start = time.perf_counter()
        result = fn(*args)
        return time.perf_counter() - start, result


class CudaTimer:
    """CUDA events around the call, after synchronising the device (so that nothing queued
    before is counted); the end event is waited for, so asynchronous work is counted."""

    def __init__(self):
        import cupy

        self.cupy = cupy

    def __call__(self, fn, *args):
        cupy = self.cupy
        cupy.cuda.Device().synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        result = fn(*args)
        end.record()
        # Peers on other libraries (PyTorch) queue on their own streams: wait for the device.
        cupy.cuda.Device().synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3, result


def time_calls(fn, count, timer):
    """Seconds of each of count calls of fn()."""
    return [timer(fn)[0] for _ in range(count)]


def time_implementation(fn, first_s, settings, timer):
    """(repeats, warm-up calls, seconds of each timed call) of one implementation in one row,
    after a pause of settings["settle_s"]. The first, checked call (first_s seconds) already
    ran; warm-up as WARMUP_S says (none when the first call took longer than the budget: it is
    warm-up enough); the repeats are as many as fit in the time budget, judged by the last
    warm-up call, between MIN_REPEATS and settings["repeats"]."""
    time.sleep(settings["settle_s"])
    budget = settings["budget_s"]
    warmup, last, spent = 0, first_s, 0.0
    while first_s < budget and (warmup < settings["warmup"] or
                                spent < min(WARMUP_S, budget - last)):
        last = timer(fn)[0]
        warmup, spent = warmup + 1, spent + last
    repeats = min(settings["repeats"], max(MIN_REPEATS, int(budget / last)))
    return repeats, warmup, time_calls(fn, repeats, timer)


def peak_method(device, dtype, n=2048):
    """How measure_peak measures: the library, and the matrices."""
    if dtype == "bfloat16" and device == "cpu":
        lib = "PyTorch matmul" if _has_torch() else "rnnfast _cpu.gemm_bf16 (no PyTorch here)"
        return f"{lib} of {n}x{n} bfloat16 matrices, median of 5"
    return (f"{'NumPy' if device == 'cpu' else 'CuPy'} matmul of {n}x{n} float32 matrices, "
            "median of 5")


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure_peak(device, timer, n=2048, dtype="float32"):
    """The GEMM rate this machine reaches in GFLOP/s (see peak_method): NumPy's matmul (CPU) or
    CuPy's (GPU) of n x n float32 matrices; for bfloat16 on the CPU, PyTorch's bfloat16 matmul
    (oneDNN: AMX where the CPU has it). Median of 5 after 2 warm-up calls."""
    xp = np if device == "cpu" else __import__("cupy")
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = a.T.copy()
    if dtype == "bfloat16" and device == "cpu":
        if _has_torch():
            import torch
            a, b = (torch.from_numpy(m).to(torch.bfloat16) for m in (a, b))
        else:
            from .. import _cpu
            c = np.empty((n, n), np.float32)
            a, b = (m.astype(np.dtype("bfloat16")) for m in (a, b))
            product = (lambda: _cpu.gemm_bf16(a, b, c))
            time_calls(product, 2, timer)
            return 2 * n**3 / statistics.median(time_calls(product, 5, timer)) / 1e9
    time_calls(lambda: a @ b, 2, timer)
    seconds = time_calls(lambda: a @ b, 5, timer)
    return 2 * n**3 / statistics.median(seconds) / 1e9


def run_row(row, peers, settings, timer, peak):
    """The records (dicts, see benchmarks/README.md) of one row: rnnfast's first, then one per
    peer."""
    dtype = settings["dtype"]
    base = {"cell": row.cell, "mode": row.mode, "T": row.T, "B": row.B, "I": row.I, "H": row.H,
            "layers": row.layers, "directions": row.directions, "dtype": dtype,
            "device": settings["device"], "threads": settings["threads"]}
    problem = make_problem(row, np.dtype(dtype), settings["device"], settings["threads"],
                           settings["seed"])
    runs, records = {}, {}
    for peer in peers:
        try:
            if row.mode == "step" and (row.layers, row.directions) != (1, 1):
                raise Unsupported("mode step times one cell: layers 1, directions 1")
            runs[peer.name] = peer.build(problem)
        except Unsupported as why:
            records[peer.name] = {**base, "peer": peer.name, "status": "unsupported",
                                  "check": str(why)}
        if peer.name == "rnnfast" and "rnnfast" not in runs:  # nothing to compare with
            return [records["rnnfast"]]

    # The first call of each computes the outputs that are checked. It can be slow for one-off
    # reasons (allocation, a library's initialisation), so it is not timed.
    first, outputs = {}, {}
    for name, fn in runs.items():
        first[name], outputs[name] = timer(fn, True)
    tol = TOLERANCE[dtype]
    disagree = []
    for name in runs:
        if name == "rnnfast":
            continue
        err, where = compare_outputs(outputs["rnnfast"], outputs[name])
        ok = err <= tol
        records[name] = {**base, "peer": name, "status": "ok" if ok else "mismatch",
                         "check": "ok" if ok else f"MISMATCH max rel err {err:.1e} in {where}",
                         "max_rel_err": err}
        if not ok:
            disagree.append(name)
    records["rnnfast"] = {**base, "peer": "rnnfast", "status": "mismatch" if disagree else "ok",
                          "check": f"MISMATCH with {', '.join(disagree)}" if disagree else "ok",
                          "max_rel_err": None}

    counts, warmups, times = {}, {}, {}
    for name, fn in runs.items():
        counts[name], warmups[name], times[name] = time_implementation(fn, first[name], settings,
                                                                       timer)

    per_call = row.T if row.mode == "step" else 1  # step mode reports per step
    flops = row.flops()
    ours = statistics.median(times["rnnfast"]) / per_call
    for name, seconds in times.items():
        median = statistics.median(seconds) / per_call
        rec = records[name]
        rec.update({"repeats": counts[name], "warmup": warmups[name], "median_s": median,
                    "min_s": min(seconds) / per_call, "max_s": max(seconds) / per_call,
                    "flops": flops, "gflops": flops / median / 1e9,
                    "percent_of_peak": 100 * flops / median / 1e9 / peak,
                    # > 1: rnnfast is faster. No ratio for a result that disagrees.
                    "ratio": median / ours if name != "rnnfast" and rec["status"] == "ok"
                    else None})
    return [records["rnnfast"]] + [records[p.name] for p in peers
                                   if p.name != "rnnfast" and p.name in records]


class Progress:
    """A one-line progress bar on stderr; silent when stderr is not a terminal or when quiet."""

    def __init__(self, total, quiet=False, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = not quiet and stream.isatty()
        self.start = time.perf_counter()

    def update(self, label):
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                          f" {elapsed:4.0f}s {label:<40.40}")
        self.stream.flush()
        self.done += 1

    def close(self):
        if self.enabled:
            self.stream.write("\r" + " " * 90 + "\r")
            self.stream.flush()


def run_suite(rows, peers, settings, quiet=False):
    """Runs the rows with the given implementations (rnnfast first). Returns the peak GEMM rate
    and the records."""
    timer = CudaTimer() if settings["device"] == "cuda" else CpuTimer()
    peak = measure_peak(settings["device"], timer, dtype=settings["dtype"])
    progress = Progress(len(rows), quiet)
    records = []
    for row in rows:
        progress.update(f"{row.cell} {row.mode} T,B,I,H={row.T},{row.B},{row.I},{row.H}")
        records += run_row(row, peers, settings, timer, peak)
    progress.close()
    return peak, records
