"""rnnfast's CUDA paths timed against PyTorch's cuDNN, one layer, float32.

The benchmark suite now times the same and more: ``rnnfast-bench --device cuda --cuda-paths
standard persistent`` (both paths per row, checked against the float64 reference; float32 and
bfloat16; benchmarks/README.md, On a GPU). This script is kept beside the results it made.

What it measures: for each cell (lstm, gru), shape (T, B, H) with input size I = H, rnnfast's
recurrence path (--paths: standard, persistent; ``rnnfast.backends.cuda_recurrence``; the
row's "path" field) and mode

- ``inference``: ``rnnfast.functional.forward(..., training=False)`` against
  ``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN) in eval mode under ``torch.no_grad()``,
- ``train``: ``functional.forward(..., training=True)`` then ``functional.backward``
  with a random dy, against torch's forward then the backward of ``(y * dy).sum()`` with
  gradients for the input and all weights (``y.backward(dy)``),

the median time of one call of each, measured with CUDA events on each library's current
stream (``cupy.cuda.Event`` for rnnfast, ``torch.cuda.Event`` for torch), each implementation
timed on its own after at least --warmup untimed calls, with the device synchronised before each
timed call and before the events are read.

Same problem for both: weights drawn once per row as PyTorch initialises them (uniform in
+-1/sqrt(H)), x and dy standard normal, h0 (and c0) 0.5 * standard normal, all from --seed;
the weights are copied into torch's module with ``load_state_dict``. Before timing, rnnfast's y
is compared with torch's: max |y_torch - y_rnnfast| / max |y_rnnfast|, flagged MISMATCH above
1e-3; in train mode the gradients (x, w_ih, w_hh, b_ih, b_hh) are compared the same way
(column "grad err", flagged GRAD-MISMATCH above 1e-3).

float32 without TF32 on both: torch.backends.cudnn.allow_tf32 = False and
torch.backends.cuda.matmul.allow_tf32 = False; CuPy uses TF32 only when the CUPY_TF32
environment variable says so, and this script refuses to run when it is set.

FLOPs of a row: T*B*G*(2*I*H + 2*H*H) (G = 4 LSTM, 3 GRU), 3x that in train mode; the table's
TFLOP/s is rnnfast's (FLOPs / rnnfast's median). ratio = torch ms / rnnfast ms (> 1: rnnfast
faster). At the start the CuPy float32 GEMM rate (4096^3, no TF32) is measured for reference.

Run, on a machine with a CUDA GPU, CuPy, PyTorch (CUDA build) and rnnfast built with its CUDA
module installed (run it from outside the source tree so that the installed package is used):

    python benchmarks/gpu_timing.py --json gpu_timing.json --commit $(git rev-parse --short HEAD)

Options: --cells, --paths, --modes, --shapes "T,B,H;T,B,H", --seed, --warmup, --min-repeats,
--max-repeats, --budget (seconds of timed calls per implementation and row). The default grid
is sized to take well under 4 minutes on an H100. Exit status 1 when a row mismatches or fails.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from rnnfast.bench.grids import Row
from rnnfast.bench.runner import rel_err  # NaN counts as infinitely far
from rnnfast.cell_registry import SPECS

SHAPES = [(100, 64, 512), (100, 256, 1024), (50, 128, 1024), (1024, 16, 768), (100, 1, 512)]
CELLS = ("lstm", "gru")
PATHS = ("standard", "persistent")
MODES = ("inference", "train")
TOLERANCE = 1e-3

# The libraries, as module globals (imported in main()).
cp = None   # cupy
CF = None   # rnnfast.functional (on CuPy arrays: the CUDA backend)
CUDA_PATH = None  # rnnfast.backends.cuda_recurrence
torch = None
TORCH_DEVICE = "cuda"


# --- timers: one call, device synchronised before it and before the events are read ---------

def cupy_time_ms(fn):
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()  # recorded on CuPy's current stream
    start.record()
    fn()
    end.record()
    cp.cuda.Device().synchronize()
    return cp.cuda.get_elapsed_time(start, end)


def torch_time_ms(fn):
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()  # on torch's current stream
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def measure(fn, timer, args):
    """(median, min, max ms, warm-up calls, repeats): at least args.warmup untimed calls (more,
    up to 20, until 0.1 s of them), then between args.min_repeats and args.max_repeats timed
    calls, as many as fit in args.budget seconds judging by the last warm-up call."""
    warmup, spent, last = 0, 0.0, 0.0
    while warmup < args.warmup or (spent < 0.1 and warmup < 20):
        last = timer(fn)
        spent += last / 1e3
        warmup += 1
    repeats = int(min(args.max_repeats, max(args.min_repeats, args.budget * 1e3 / max(last, 1e-3))))
    times = [timer(fn) for _ in range(repeats)]
    return statistics.median(times), min(times), max(times), warmup, repeats


# --- the problem and the two implementations --------------------------------------------------

def make_problem(cell, T, B, H, seed):
    """Host arrays (float32) of one row: weights in PyTorch's layout, x, h0, c0, dy."""
    rng = np.random.default_rng([seed, T, B, H, SPECS[cell].gate_count])
    G, I, k = SPECS[cell].gate_count * H, H, 1 / math.sqrt(H)
    f32 = np.float32
    p = {
        "w_ih": rng.uniform(-k, k, (G, I)).astype(f32),
        "w_hh": rng.uniform(-k, k, (G, H)).astype(f32),
        "b_ih": rng.uniform(-k, k, G).astype(f32),
        "b_hh": rng.uniform(-k, k, G).astype(f32),
        "x": rng.standard_normal((T, B, I)).astype(f32),
        "h0": (0.5 * rng.standard_normal((B, H))).astype(f32),
        "c0": (0.5 * rng.standard_normal((B, H))).astype(f32) if cell == "lstm" else None,
        "dy": rng.standard_normal((T, B, H)).astype(f32),
    }
    return p


def build_rnnfast(cell, mode, p, path):
    """fn() running one call on the recurrence `path`; collect() -> dict of host arrays from a
    fresh call."""
    d = {k: (cp.asarray(v) if v is not None else None) for k, v in p.items()}
    args = (cell, d["x"], d["h0"], d["w_ih"], d["w_hh"])
    biases = {"b_ih": d["b_ih"], "b_hh": d["b_hh"]}

    if mode == "inference":
        def fn():
            with CUDA_PATH(path):
                return CF.forward(*args, **biases, c0=d["c0"], training=False)[0]

        def collect():
            return {"y": cp.asnumpy(fn())}
    else:
        def fn():
            with CUDA_PATH(path):
                y, _, _, ctx = CF.forward(*args, **biases, c0=d["c0"], training=True)
                return y, CF.backward(ctx, d["dy"])

        def collect():
            y, g = fn()
            out = {"y": cp.asnumpy(y)}
            out.update({k: cp.asnumpy(g[k]) for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")})
            return out
    return fn, collect


def build_torch(cell, mode, p, path=None):
    T, B, H = p["dy"].shape
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        H, H, num_layers=1, bias=True, batch_first=False, bidirectional=False,
        device=TORCH_DEVICE, dtype=torch.float32)
    module.load_state_dict({
        "weight_ih_l0": torch.from_numpy(p["w_ih"]), "weight_hh_l0": torch.from_numpy(p["w_hh"]),
        "bias_ih_l0": torch.from_numpy(p["b_ih"]), "bias_hh_l0": torch.from_numpy(p["b_hh"])})

    def dev(a):
        return torch.from_numpy(a).to(TORCH_DEVICE)

    x, dy = dev(p["x"]), dev(p["dy"])
    h0 = dev(p["h0"])[None]
    hx = (h0, dev(p["c0"])[None]) if cell == "lstm" else h0

    if mode == "inference":
        module.eval()

        @torch.no_grad()
        def fn():
            return module(x, hx)[0]

        def collect():
            return {"y": fn().cpu().numpy()}
    else:
        module.train()
        x.requires_grad_(True)

        def fn():
            x.grad = None
            module.zero_grad(set_to_none=True)
            y = module(x, hx)[0]
            y.backward(dy)  # the gradient of (y * dy).sum()
            return y

        def collect():
            y = fn()
            out = {"y": y.detach().cpu().numpy(), "x": x.grad.cpu().numpy()}
            for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"),
                                 ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
                out[ours] = getattr(module, theirs).grad.cpu().numpy()
            return out
    return fn, collect


def run_row(cell, path, mode, T, B, H, args):
    """One row's record: the check, then each implementation timed on its own."""
    build = {"rnnfast": build_rnnfast, "torch": build_torch}
    timer = {"rnnfast": cupy_time_ms, "torch": torch_time_ms}
    row = {"cell": cell, "path": path, "mode": mode, "T": T, "B": B, "I": H, "H": H,
           "flops": Row(cell, mode, T, B, H, H).flops(), "status": "ok"}
    p = make_problem(cell, T, B, H, args.seed)
    fns, outs = {}, {}
    for name in ("rnnfast", "torch"):
        try:
            fns[name], collect = build[name](cell, mode, p, path)
            outs[name] = collect()  # the first call, checked below
        except Exception as error:  # noqa: BLE001 - one failing row must not end the run
            row[f"{name}_error"] = f"{type(error).__name__}: {error}"
            row["status"] = "error"
    if "rnnfast" in outs and "torch" in outs:
        ours, theirs = outs["rnnfast"], outs["torch"]
        row["rel_err_y"] = rel_err(theirs["y"], ours["y"])
        if row["rel_err_y"] > TOLERANCE:
            row["status"] = "MISMATCH"
        if mode == "train":
            errs = {k: rel_err(theirs[k], ours[k]) for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")}
            row["rel_err_grads"] = errs
            row["rel_err_grad"] = max(errs.values())
            if row["rel_err_grad"] > TOLERANCE and row["status"] == "ok":
                row["status"] = "GRAD-MISMATCH"
    outs.clear()
    for name in ("rnnfast", "torch"):
        if name not in fns or f"{name}_error" in row:
            continue
        try:
            med, lo, hi, warmup, repeats = measure(fns[name], timer[name], args)
            row.update({f"{name}_ms": med, f"{name}_min_ms": lo, f"{name}_max_ms": hi,
                        f"{name}_warmup": warmup, f"{name}_repeats": repeats,
                        f"{name}_tflops": row["flops"] / (med * 1e-3) / 1e12})
        except Exception as error:  # noqa: BLE001
            row[f"{name}_error"] = f"{type(error).__name__}: {error}"
            row["status"] = "error"
    if "rnnfast_ms" in row and "torch_ms" in row:
        row["ratio"] = row["torch_ms"] / row["rnnfast_ms"]
    return row


# --- report -------------------------------------------------------------------------------------

COLUMNS = ("cell", "path", "mode", "T", "B", "H", "rnnfast ms", "torch ms", "ratio", "TFLOP/s",
           "rel err y", "grad err", "status")


def fmt(value, spec):
    """value formatted by spec, or "-" right-aligned in the same width when None."""
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def table_line(row):
    return (f"{row['cell']:<5} {row['path']:<10} {row['mode']:<9} {row['T']:>5} {row['B']:>4} "
            f"{row['H']:>5} "
            f"{fmt(row.get('rnnfast_ms'), '11.3f')} {fmt(row.get('torch_ms'), '9.3f')} "
            f"{fmt(row.get('ratio'), '6.2f')} {fmt(row.get('rnnfast_tflops'), '8.2f')} "
            f"{fmt(row.get('rel_err_y'), '10.1e')} {fmt(row.get('rel_err_grad'), '9.1e')} "
            f"{row['status']}")


def table_header():
    return (f"{'cell':<5} {'path':<10} {'mode':<9} {'T':>5} {'B':>4} {'H':>5} {'rnnfast ms':>11} "
            f"{'torch ms':>9} {'ratio':>6} {'TFLOP/s':>8} {'rel err y':>10} {'grad err':>9} "
            f"status")


def gemm_rate():
    """CuPy's float32 GEMM rate (TFLOP/s) at 4096^3, median of 10 after 3 warm-up calls."""
    n = 4096
    rng = np.random.default_rng(0)
    a, b = (cp.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    times = [cupy_time_ms(lambda: a @ b) for _ in range(13)][3:]
    return 2 * n ** 3 / (statistics.median(times) * 1e-3) / 1e12


def header_info(args):
    import cupy

    import rnnfast

    info = {
        "what": "rnnfast.functional (CUDA) vs torch.nn LSTM/GRU (cuDNN), float32, no TF32",
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cupy": cupy.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "rnnfast": getattr(rnnfast, "__version__", "unknown"),
        "rnnfast_cuda": rnnfast.cuda_info(),
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "CUPY_TF32": os.environ.get("CUPY_TF32"),
        "seed": args.seed, "warmup": args.warmup, "min_repeats": args.min_repeats,
        "max_repeats": args.max_repeats, "budget_s": args.budget,
        "timing": "CUDA events per call, device synchronised before each call and before "
                  "reading the events; median over the timed calls",
        "rel_err": "max |torch - rnnfast| / max |rnnfast|",
        "flops": "T*B*G*(2*I*H + 2*H*H), 3x for train",
    }
    return info


def write_json(path, header, rows):
    if path:
        with open(path, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1, default=str)


def parse_shapes(text):
    return [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the header and rows to this JSON file")
    ap.add_argument("--commit", default="unknown", help="rnnfast's git commit, for the header")
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--shapes", type=parse_shapes, default=SHAPES, help='"T,B,H;T,B,H"')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls at least (default 3)")
    ap.add_argument("--min-repeats", type=int, default=10)
    ap.add_argument("--max-repeats", type=int, default=50)
    ap.add_argument("--budget", type=float, default=0.5,
                    help="seconds of timed calls per implementation and row (default 0.5)")
    return ap.parse_args(argv)


def main(argv=None):
    global cp, CF, CUDA_PATH, torch
    args = parse_args(argv)
    if os.environ.get("CUPY_TF32") not in (None, "", "0"):
        sys.exit("gpu_timing.py: CUPY_TF32 is set; unset it to time float32 without TF32")
    import cupy
    import torch as torch_module

    from rnnfast import backends, functional

    cp, CF, CUDA_PATH, torch = cupy, functional, backends.cuda_recurrence, torch_module
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if not torch.backends.cudnn.is_available():
        print("warning: cuDNN is not available to torch", file=sys.stderr)

    started = time.perf_counter()
    header = header_info(args)
    try:
        header["cupy_sgemm_tflops_4096"] = gemm_rate()  # also warms the GPU up
    except Exception as error:  # noqa: BLE001 - a reference figure only
        header["cupy_sgemm_tflops_4096"] = float("nan")
        print(f"GEMM rate failed: {type(error).__name__}: {error}")
    for key in ("gpu", "commit", "date", "torch", "torch_cuda", "cudnn", "cupy", "numpy"):
        print(f"{key}: {header[key]}")
    print(f"rnnfast CUDA: {header['rnnfast_cuda']}")
    print(f"CuPy float32 GEMM 4096^3 (no TF32): {header['cupy_sgemm_tflops_4096']:.2f} TFLOP/s")
    print("ratio = torch ms / rnnfast ms (> 1: rnnfast faster); TFLOP/s: rnnfast's; rel err: "
          "max |torch - rnnfast| / max |rnnfast| (y; grad err: max over dx, dW, db in train)")
    print(table_header())
    rows, bad = [], False
    for cell in args.cells:
        for T, B, H in args.shapes:
            for path in args.paths:
                for mode in args.modes:
                    row = run_row(cell, path, mode, T, B, H, args)
                    rows.append(row)
                    print(table_line(row))
                    for name in ("rnnfast", "torch"):
                        if f"{name}_error" in row:
                            print(f"  {name} failed: {row[f'{name}_error']}")
                    bad |= row["status"] != "ok"
                    write_json(args.json, header, rows)  # rewritten after each row
    header["total_s"] = time.perf_counter() - started
    write_json(args.json, header, rows)
    print(f"total {header['total_s']:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
