"""The method: per row, every implementation gets the same problem; rnnfast's outputs are
checked against each peer's; then, in each of a few rounds, each implementation in turn gets a
pause, warm-up and its share of the timed repeats. Each peer's ratio is the median over the
rounds of its round's median time over rnnfast's in the same round: on a shared machine whose
speed drifts from one second to the next, implementations timed in the same few seconds are
compared, not one implementation's quiet moment with another's busy one. Not interleaved call
by call: the peers' thread pools (OpenMP's in PyTorch, ONNX Runtime's, OpenBLAS's under NumPy)
keep spinning for a while after each call, and would take the cores from whichever
implementation runs next; the pause lets them go to sleep first.
"""

import statistics
import sys
import time

import numpy as np

import rnnfast

from .peers import Unsupported, make_problem
from .report import under_load

# The check, the tolerance rule of the tests (tests/_util.py): every implementation's outputs
# against the oracle, the NumPy reference run in float64 on the same (already rounded) inputs.
# In float32 an output may be off by at most twice the float32 reference's own error on that
# output plus FLOOR (16 ulps: other summation orders, FMA, the kernels' activation
# approximations); in float64 by FLOOR (a few ulps times the depth of the recurrence). A real
# mistake (a wrong gate, a missing term) shows as an error of order one; NaN, or an output
# missing or of the wrong shape, fails.
# In bfloat16 (8 significant bits) each rounding of a stored value costs up to 2^-9 (2e-3) of
# it, and an implementation rounds many values on the way (PyTorch's oneDNN stores h in
# bfloat16 every step; rnnfast keeps the recurrence in float32): 5e-2 of the largest output,
# a fixed bound. In float16 (11 significant bits, each rounding 2^-12 = 2.4e-4) 1e-2 likewise.
FLOOR = {"float32": 2e-6, "float64": 1e-10, "bfloat16": 5e-2, "float16": 1e-2}
# Peers (other libraries) get PEER_SLACK times that: they sum in orders of their own (PyTorch's
# float32 bias gradients at T*B = 6400 came out 2.9e-6 off, against the rule's 2.6e-6), and
# their check is there to show that each computes the same problem, which a setup mistake (an
# error of order one) would not. rnnfast is held to the rule itself.
PEER_SLACK = 10
RULE = {dtype: f"{rule}; peers {PEER_SLACK} x that" for dtype, rule in (
    ("float32", f"max rel err <= 2 x the float32 reference's + {FLOOR['float32']:.0e}"),
    ("float64", f"max rel err <= {FLOOR['float64']:.0e}"),
    *((name, f"max rel err <= {FLOOR[name]:.0e}") for name in ("bfloat16", "float16")))}
# Each implementation gets as many repeats as fit in the time budget (settings["budget_s"]),
# judged by its last warm-up call, between MIN_REPEATS and settings["repeats"], spread over
# the rounds (at most settings["rounds"], at least one repeat each).
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


def reference_outputs(problem, dtype):
    """The reference's outputs for a problem's row (any layers, directions and mode), named as
    the implementations name theirs, computed in ``dtype`` (on the host)."""
    from .. import reference

    r = problem.row

    def cast(a):
        return None if a is None else np.asarray(a, dtype)

    weights = {k: cast(v) for k, v in problem.weights.items()}
    y, h_n, c_n, cache = reference.forward_layers(
        r.cell, cast(problem.x), weights, r.layers, r.directions == 2, cast(problem.h0),
        cast(problem.c0))
    if r.mode == "step":  # the state after T single steps: the sequence's final state
        return {"h_T": h_n[0], **({"c_T": c_n[0]} if c_n is not None else {})}
    out = {"y": y, "h_n": h_n, **({"c_n": c_n} if c_n is not None else {})}
    if r.mode == "train":
        dx, _, _, grads = reference.backward_layers(cache, cast(problem.dy))
        out["grad_input"] = dx
        out.update({f"grad_{k}": v for k, v in grads.items()})
    return out


def tolerances(problem, dtype, oracle):
    """The largest error allowed on each output (see FLOOR)."""
    if dtype != "float32":
        return {k: FLOOR[dtype] for k in oracle}
    ref32 = reference_outputs(problem, np.float32)
    return {k: 2 * rel_err(ref32[k], oracle[k]) + FLOOR[dtype] for k in oracle}


def check_outputs(outputs, oracle, tolerance):
    """(ok, the check's text, the largest rel_err) of one implementation's outputs."""
    missing = [k for k in oracle if k not in outputs]
    if missing:
        return False, f"MISMATCH missing output {', '.join(missing)}", float("inf")
    nan = [k for k in oracle if np.isnan(np.asarray(outputs[k], np.float64)).any()]
    if nan:
        return False, f"MISMATCH NaN in {', '.join(nan)}", float("inf")
    errors = {k: rel_err(outputs[k], oracle[k]) for k in oracle}
    worst = max(errors, key=lambda k: errors[k] / tolerance[k])
    if errors[worst] <= tolerance[worst]:
        return True, "ok", max(errors.values())
    return (False, f"MISMATCH max rel err {errors[worst]:.1e} > {tolerance[worst]:.1e} in "
            f"{worst}", errors[worst])


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


def rounds_of(settings):
    """How many rounds a row's timing takes: settings["rounds"], at most one per repeat."""
    return max(1, min(settings["rounds"], settings["repeats"]))


def time_round(fn, last_s, index, settings, timer):
    """(warm-up calls, seconds of each timed call) of one implementation in round `index` of
    a row, after a pause of settings["settle_s"]; last_s: the seconds of its latest call (the
    first, checked call in round 0). Warm-up as WARMUP_S says (none when the latest call took
    longer than the round's budget: it is warm-up enough); the round's repeats are its share
    of as many as fit in the time budget, judged by the last warm-up call, between MIN_REPEATS
    and settings["repeats"]."""
    time.sleep(settings["settle_s"])
    rounds = rounds_of(settings)
    budget = settings["budget_s"] / rounds
    warmup, last, spent = 0, last_s, 0.0
    while last_s < budget and (warmup < settings["warmup"] or
                               spent < min(WARMUP_S, budget - last)):
        last = timer(fn)[0]
        warmup, spent = warmup + 1, spent + last
    total = min(settings["repeats"], max(MIN_REPEATS, int(settings["budget_s"] / last)))
    share = max(1, total * (index + 1) // rounds - total * index // rounds)
    return warmup, time_calls(fn, share, timer)


# The size on which measure_peak compares the CPU's bfloat16 GEMMs.
PROBE_N = 256


def _bf16_products(n):
    """{library: product()} of the CPU's bfloat16 GEMMs on n x n matrices (float32 results):
    rnnfast's _cpu.gemm_bf16 (AMX or AVX512-BF16 where the CPU has them, else operands widened
    to float32), and PyTorch's matmul where installed (oneDNN's bfloat16 kernels where the CPU
    has them; without AVX512-BF16 or AMX PyTorch's own loop, about 1 GFLOP/s on an AVX2 CPU)."""
    from .. import _cpu

    m = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a, b = (x.astype(rnnfast._dtypes.bfloat16()) for x in (m, m.T.copy()))
    c = np.empty((n, n), np.float32)
    products = {"rnnfast _cpu.gemm_bf16": lambda: _cpu.gemm_bf16(a, b, c)}
    if _has_torch():
        import torch
        ta, tb = (torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16) for x in (a, b))
        products["PyTorch matmul"] = lambda: ta @ tb
    return products


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _rate(product, n, timer, calls, warmup):
    """GFLOP/s of product() on n x n matrices: median of `calls` after `warmup` calls."""
    time_calls(product, warmup, timer)
    return 2 * n**3 / statistics.median(time_calls(product, calls, timer)) / 1e9


def _float32_matmul(device, n):
    """product() of two n x n float32 matrices: NumPy's matmul (CPU) or CuPy's (GPU)."""
    xp = np if device == "cpu" else __import__("cupy")
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = a.T.copy()
    return lambda: a @ b


# The load probe: a float32 matmul of this size, timed before every row and after the last
# (median of 5 calls after one). Its rate falls while other work takes the machine's cores or
# memory bandwidth (another guest of a virtual machine's host, say): the rows timed then read
# slow. About 0.04 s a probe on a 2-core CPU.
LOAD_PROBE_N = 768


def measure_peak(device, timer, n=2048, dtype="float32"):
    """(GFLOP/s, how) of the GEMM rate this machine reaches: NumPy's matmul (CPU) or CuPy's
    (GPU) of n x n float32 matrices, median of 5 after 2 warm-up calls. For bfloat16 on the CPU,
    the faster of its bfloat16 GEMMs (_bf16_products): each is timed first on PROBE_N x PROBE_N
    matrices, and the faster one alone measured at n (PyTorch's loop, where it is the slower,
    would take about a minute a call at n = 2048)."""
    if dtype == "bfloat16" and device == "cpu":
        probes = {lib: _rate(f, PROBE_N, timer, 3, 1) for lib, f in _bf16_products(PROBE_N).items()}
        lib = max(probes, key=probes.get)
        compared = ", ".join(f"{name} {rate:.0f}" for name, rate in probes.items())
        return (_rate(_bf16_products(n)[lib], n, timer, 5, 2),
                f"{lib} of {n}x{n} bfloat16 matrices, median of 5; the faster at "
                f"{PROBE_N}x{PROBE_N}: {compared} GFLOP/s")
    return (_rate(_float32_matmul(device, n), n, timer, 5, 2),
            f"{'NumPy' if device == 'cpu' else 'CuPy'} matmul of {n}x{n} float32 matrices, "
            "median of 5")


def run_row(row, peers, settings, timer):
    """The records (dicts, see benchmarks/README.md) of one row: for each of rnnfast's
    implementations (one per CUDA path on the GPU, its "path"; one on the CPU, path None) its
    record, then one per peer, whose ratio is against it (a peer with a path, the baseline on
    the GPU: against rnnfast on the same path). Their percent_of_peak is run_suite's, once the
    run's peak is known."""
    dtype = settings["dtype"]
    base = {"cell": row.cell, "mode": row.mode, "T": row.T, "B": row.B, "I": row.I, "H": row.H,
            "layers": row.layers, "directions": row.directions, "dtype": dtype,
            "device": settings["device"], "threads": settings["threads"]}
    problem = make_problem(row, dtype, settings["device"], settings["threads"],
                           settings["seed"])
    keys = [(peer.name, peer.path) for peer in peers]  # rnnfast's first
    ours = [key for key in keys if key[0] == "rnnfast"]
    runs, first, outputs, unsupported = {}, {}, {}, {}
    for peer, key in zip(peers, keys):
        if key not in ours and not runs:  # no rnnfast implementation ran: nothing to compare
            break
        try:
            if row.mode == "step" and (row.layers, row.directions) != (1, 1):
                raise Unsupported("mode step times one cell: layers 1, directions 1")
            fn = peer.build(problem)
            # The first call computes the outputs that are checked. It can be slow for one-off
            # reasons (allocation, a library's initialisation), so it is not timed.
            first[key], outputs[key] = timer(fn, True)
            runs[key] = fn
        except Unsupported as why:
            unsupported[key] = str(why)

    checks = {}
    if runs:
        oracle = reference_outputs(problem, np.float64)
        tolerance = tolerances(problem, dtype, oracle)
    for key in runs:
        slack = 1 if key in ours else PEER_SLACK
        ok, check, err = check_outputs(outputs[key], oracle,
                                       {k: slack * v for k, v in tolerance.items()})
        checks[key] = {"status": "ok" if ok else "mismatch", "check": check,
                       "max_rel_err": err}

    warmups = dict.fromkeys(runs, 0)
    times = {key: [] for key in runs}  # per implementation, per round: seconds of each call
    for index in range(rounds_of(settings)):
        for key, fn in runs.items():
            last = times[key][-1][-1] if times[key] else first[key]
            warmup, seconds = time_round(fn, last, index, settings, timer)
            warmups[key] += warmup
            times[key].append(seconds)

    per_call = row.T if row.mode == "step" else 1  # step mode reports per step
    flops = row.flops()

    def record(key, against):
        """key's record, its ratio against rnnfast's implementation ``against``."""
        rec = {**base, "path": against[1], "peer": key[0]}
        if key not in runs:
            return {**rec, "status": "unsupported", "check": unsupported[key]}
        seconds = [s for r in times[key] for s in r]
        median = statistics.median(seconds) / per_call
        ratio = statistics.median(statistics.median(theirs) / statistics.median(our)
                                  for theirs, our in zip(times[key], times[against]))
        return {**rec, **checks[key], "repeats": len(seconds), "rounds": len(times[key]),
                "warmup": warmups[key], "median_s": median,
                "min_s": min(seconds) / per_call, "max_s": max(seconds) / per_call,
                "flops": flops, "gflops": flops / median / 1e9, "percent_of_peak": None,
                # > 1: rnnfast is faster. No ratio for a result that disagrees.
                "ratio": ratio if key != against and checks[key]["status"] == "ok" else None}

    records = []
    for our in ours:
        records.append(record(our, our))
        if our in runs:
            records += [record(key, our) for key in keys
                        if key not in ours and key[1] in (None, our[1])]
    return records


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


def _load_of(row_records):
    """The load probe's reading around a row (its measured records share it); None where
    nothing of the row was measured."""
    return next((r["load_gflops"] for r in row_records if "load_gflops" in r), None)


def run_suite(rows, peers, settings, quiet=False):
    """Runs the rows with the given implementations (rnnfast first). Returns the peak GEMM rate
    (measured at the start and at the end: the higher, so that a start slowed by other work does
    not inflate every % of peak), how it was measured, the records, and the load probe's rates
    (before the first row and after every row, then before and after every re-run). Each
    measured record gets the lower of the probes around its row (load_gflops). A row timed
    under load (its probe under report.LOADED of the best so far) is timed again at the end, up
    to settings["retry_loaded"] times, and keeps its least loaded attempt; its records count
    the row's attempts."""
    device = settings["device"]
    timer = CudaTimer() if device == "cuda" else CpuTimer()
    start, method = measure_peak(device, timer, dtype=settings["dtype"])
    progress = Progress(len(rows), quiet)
    probe = _float32_matmul(device, LOAD_PROBE_N)

    def load_probe():
        return _rate(probe, LOAD_PROBE_N, timer, 5, 1)

    probes = [load_probe()]

    def measure(row):
        progress.update(f"{row.cell} {row.mode} T,B,I,H={row.T},{row.B},{row.I},{row.H}")
        row_records = run_row(row, peers, settings, timer)
        probes.append(load_probe())
        for record in row_records:
            if record["status"] != "unsupported":
                record["load_gflops"] = min(probes[-2:])
        return row_records

    measured = [measure(row) for row in rows]
    attempts = [1] * len(rows)
    for _ in range(settings["retry_loaded"]):
        again = [i for i, row_records in enumerate(measured)
                 if (load := _load_of(row_records)) is not None and under_load(load, max(probes))]
        progress.total += len(again)
        for i in again:
            attempts[i] += 1
            # A probe of its own before: the last one, after another row, may have read the
            # load that this row is timed again for.
            probes.append(load_probe())
            retried = measure(rows[i])
            if _load_of(retried) > _load_of(measured[i]):
                measured[i] = retried
    records = []
    for row_records, count in zip(measured, attempts):
        for record in row_records:
            if "load_gflops" in record:
                record["attempts"] = count
        records += row_records
    progress.close()
    end = measure_peak(device, timer, dtype=settings["dtype"])[0]
    peak = max(start, end)
    for record in records:
        if "gflops" in record:  # measured
            record["percent_of_peak"] = 100 * record["gflops"] / peak
    return peak, f"{method}; the higher of {start:.1f} at the start and {end:.1f} at the end", \
        records, probes
