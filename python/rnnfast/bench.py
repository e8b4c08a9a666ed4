"""rnnfast's benchmark suite: ``python -m rnnfast.bench`` (or ``rnnfast-bench``).

Times rnnfast's kernels against its peers on the same shapes, weights and inputs, in the same
process: warm-up, then repeats with the peers interleaved with rnnfast so that machine drift
hits both; reports medians (with min and max), the ratio to each peer, GFLOP/s and the
fraction of this machine's SGEMM rate measured in the same run. Every peer's output is checked
against rnnfast's first; a result that disagrees is flagged and gets no ratio.

Peers in this version: the NumPy reference (``rnnfast.reference``).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import rnnfast
from rnnfast import functional, reference

# (T, B, I, H): small enough for a default run of about a minute on 2 cores.
DEFAULT_SHAPES = [(50, 1, 128, 128), (50, 16, 256, 256), (20, 64, 512, 512)]
MODES = ("inference", "train")


def flops(cell, mode, steps, batch, inputs, hidden):
    """Multiply-adds of the matmuls counted as 2 FLOPs; training (forward and backward) as 3x
    the forward."""
    forward = steps * batch * reference.GATES[cell] * (2 * inputs * hidden + 2 * hidden * hidden)
    return forward * (3 if mode == "train" else 1)


def time_calls(fns, repeats, warmup):
    """Runs each function of ``fns`` (a dict name -> callable) ``warmup`` times, then
    ``repeats`` rounds of one call each, interleaved. Returns name -> list of seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def sgemm_gflops(n=2048, repeats=5):
    """This machine's SGEMM rate through NumPy's BLAS (n x n float32 matmul), in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    seconds = time_calls({"sgemm": lambda: a @ b}, repeats, warmup=2)["sgemm"]
    return 2 * n**3 / statistics.median(seconds) / 1e9


def make_problem(cell, steps, batch, inputs, hidden, dtype, seed=0):
    """Weights initialised as the layers do, random input and output gradient."""
    rng = np.random.default_rng(seed)
    gh = reference.GATES[cell] * hidden
    bound = 1 / np.sqrt(hidden)
    args = {
        "x": rng.standard_normal((steps, batch, inputs)),
        "h0": rng.standard_normal((batch, hidden)),
        "w_ih": rng.uniform(-bound, bound, (gh, inputs)),
        "w_hh": rng.uniform(-bound, bound, (gh, hidden)),
        "b_ih": rng.uniform(-bound, bound, gh),
        "b_hh": rng.uniform(-bound, bound, gh),
        "c0": rng.standard_normal((batch, hidden)) if cell == "lstm" else None,
    }
    args = {k: (None if v is None else v.astype(dtype)) for k, v in args.items()}
    dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    return args, dy


def runners(cell, mode, args, dy):
    """name -> callable returning the outputs to check (y, and dx in training)."""
    def rnnfast_run():
        y, _, _, ctx = functional.forward(cell, **args, training=mode == "train")
        return (y,) if mode == "inference" else (y, functional.backward(ctx, dy)["x"])

    def reference_run():
        y, _, _, cache = reference.forward(cell, **args)
        return (y,) if mode == "inference" else (y, reference.backward(cache, dy)["x"])

    return {"rnnfast": rnnfast_run, "numpy-reference": reference_run}


def agrees(ours, theirs, dtype):
    """Peer outputs agree with rnnfast's to a tolerance that float rounding over a sequence
    stays well inside (relative to each array's largest value)."""
    tol = 1e-3 if dtype == np.float32 else 1e-9
    return all(np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-30)
               for a, b in zip(ours, theirs))


def run(cells, shapes, modes, dtype, repeats, warmup, progress=sys.stderr):
    peak = sgemm_gflops()
    rows = []
    total = len(cells) * len(shapes) * len(modes)
    for cell in cells:
        for shape in shapes:
            args, dy = make_problem(cell, *shape, dtype)
            for mode in modes:
                if progress is not None:
                    print(f"[{len(rows) + 1}/{total}] {cell} {mode} T,B,I,H={shape}",
                          file=progress, flush=True)
                fns = runners(cell, mode, args, dy)
                ours = fns["rnnfast"]()
                checked = {name: agrees(ours, fn(), dtype) for name, fn in fns.items()
                           if name != "rnnfast"}
                times = time_calls(fns, repeats, warmup)
                work = flops(cell, mode, *shape)
                row = {"cell": cell, "mode": mode, "T": shape[0], "B": shape[1], "I": shape[2],
                       "H": shape[3], "dtype": np.dtype(dtype).name, "flops": work,
                       "times": {}, "agrees": checked}
                for name, seconds in times.items():
                    row["times"][name] = {"median": statistics.median(seconds),
                                          "min": min(seconds), "max": max(seconds)}
                median = row["times"]["rnnfast"]["median"]
                row["gflops"] = work / median / 1e9
                row["percent_of_sgemm"] = 100 * row["gflops"] / peak
                row["speedup"] = {name: row["times"][name]["median"] / median
                                  for name in checked if checked[name]}
                rows.append(row)
    return {"machine": machine_info(), "sgemm_gflops": peak, "results": rows}


def machine_info():
    return {"platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__,
            "rnnfast": rnnfast.__version__, "cpu": rnnfast.cpu_info(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}


def format_table(report):
    head = ("cell", "mode", "T", "B", "I", "H", "rnnfast ms", "reference ms", "speedup",
            "GFLOP/s", "% SGEMM")
    lines = []
    for r in report["results"]:
        peer = "numpy-reference"
        ok = r["agrees"][peer]
        lines.append((r["cell"], r["mode"], r["T"], r["B"], r["I"], r["H"],
                      f"{1e3 * r['times']['rnnfast']['median']:.3f}",
                      f"{1e3 * r['times'][peer]['median']:.3f}",
                      f"{r['speedup'][peer]:.1f}x" if ok else "DISAGREES",
                      f"{r['gflops']:.1f}", f"{r['percent_of_sgemm']:.0f}%"))
    widths = [max(len(str(v)) for v in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, line)) for line in lines]
    out.append(f"SGEMM (NumPy matmul 2048^2 float32) on this machine: "
               f"{report['sgemm_gflops']:.1f} GFLOP/s; times are medians")
    return "\n".join(out)


def parse_shape(text):
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"shape must be T,B,I,H of positive integers: {text!r}")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="rnnfast-bench", description="Benchmark rnnfast against its peers on this machine.")
    parser.add_argument("--cells", nargs="+", default=list(reference.CELLS),
                        choices=reference.CELLS)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=DEFAULT_SHAPES,
                        metavar="T,B,I,H", help="default: %(default)s")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="inference: forward only; train: forward and backward")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    report = run(args.cells, args.shapes, args.modes, np.dtype(args.dtype), args.repeats,
                 args.warmup)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    disagreements = [r for r in report["results"] if not all(r["agrees"].values())]
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
