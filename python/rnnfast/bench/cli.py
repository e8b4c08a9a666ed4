"""The command line: ``python -m rnnfast.bench`` / ``rnnfast-bench``."""

import argparse
import dataclasses
import json
import pathlib
import sys

import rnnfast

from ..cell_registry import CELLS
from . import report
from .grids import MODES, grid_path, load_grid, load_targets, packaged_grids, product_rows
from .peers import PEER_NAMES, PEERS, RnnfastPeer, baseline_peer
from .runner import LOAD_PROBE_N, RULE, run_suite

# The CUDA recurrence paths timed on the GPU ("auto" is one of them, the standard one for now).
CUDA_PATHS = tuple(path for path in rnnfast.backends.CUDA_PATHS if path != "auto")


def _shape(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a shape is T,B,I,H of positive integers, not {text!r}")
    return values


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return parse


def parser():
    p = argparse.ArgumentParser(
        prog="rnnfast-bench",
        description="Benchmark rnnfast against its peers on this machine: same shapes, weights "
                    "and inputs, outputs checked against rnnfast's, medians of "
                    "repeats after warm-up. Exit status 1 when an output disagrees.",
        epilog="Grids: " + ", ".join(packaged_grids()) + ". Peers (when installed): "
               + ", ".join(PEER_NAMES) + ". Method and output fields: benchmarks/README.md.")
    g = p.add_argument_group("what to run")
    g.add_argument("--grid", default="default", metavar="NAME|FILE.json",
                   help="a packaged grid (default, full; for the --device) or a grid file "
                        "(default: %(default)s)")
    g.add_argument("--full", action="store_const", const="full", dest="grid",
                   help="the whole grid (--grid full)")
    g.add_argument("--shapes", nargs="+", type=_shape, metavar="T,B,I,H",
                   help="run these shapes (every cell and mode selected) instead of the grid")
    g.add_argument("--cells", nargs="+", choices=CELLS, help="only these cells")
    g.add_argument("--modes", nargs="+", choices=MODES,
                   help="only these modes (inference: forward; train: forward and backward "
                        "with all gradients; step: single-step latency of a cell, per step)")
    g.add_argument("--layers", nargs="+", type=_positive(int), help="stacked layers (default 1)")
    g.add_argument("--directions", nargs="+", type=int, choices=(1, 2),
                   help="1: unidirectional, 2: bidirectional (default 1)")
    g.add_argument("--dtype", default="float32",
                   choices=("float32", "float64", "bfloat16", "float16"),
                   help="bfloat16 needs ml_dtypes (rnnfast[bf16]); its peak on the CPU is "
                        "the faster bfloat16 matmul, PyTorch's or rnnfast's; on the GPU rnnfast "
                        "gets it as float32 arrays computed as bfloat16 (CuPy has no bfloat16)")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    g.add_argument("--cuda-paths", nargs="+", choices=CUDA_PATHS, metavar="PATH",
                   help="--device cuda only: time rnnfast on each of these recurrence paths "
                        "(rnnfast.backends.cuda_recurrence: " + ", ".join(CUDA_PATHS) +
                        "), each its own line, the records' field path; a call the "
                        "persistent path cannot run is reported with the reason (default: "
                        "both)")
    g.add_argument("--peers", nargs="+", choices=PEER_NAMES,
                   help="only these peers (default: every installed one)")
    g.add_argument("--skip-peers", nargs="+", choices=PEER_NAMES, default=[],
                   help="leave these peers out")
    g.add_argument("--baseline", metavar="DIR",
                   help="also time the rnnfast package DIR/rnnfast (an earlier build's, copied "
                        "from its site-packages) as the peer rnnfast@baseline, in the same run")
    m = p.add_argument_group("method")
    m.add_argument("--threads", type=_positive(int),
                   help="threads of rnnfast, PyTorch and ONNX Runtime (default: rnnfast's "
                        "default, the cores this process may use)")
    m.add_argument("--repeats", type=_positive(int), default=5,
                   help="timed calls per implementation and row, at most (default %(default)s)")
    m.add_argument("--warmup", type=int, default=1,
                   help="untimed calls after the first, checked one, unless that took "
                        "longer than the budget (default %(default)s)")
    m.add_argument("--budget", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="time per implementation and row: the repeats are as many as fit, "
                        "judged by the last warm-up call, at least 2 (the count is reported) "
                        "(default %(default)s)")
    m.add_argument("--settle", type=float, default=0.2, metavar="SECONDS",
                   help="pause before each implementation's warm-up and repeats, so that the "
                        "previous one's worker threads stop spinning (default %(default)s)")
    m.add_argument("--rounds", type=_positive(int), default=3,
                   help="rounds per row, each with a pause, warm-up and a share of the repeats "
                        "of every implementation in turn; a peer's ratio is the median over the "
                        "rounds of its time over rnnfast's in the same round (default "
                        "%(default)s)")
    m.add_argument("--retry-loaded", type=int, default=1, metavar="N",
                   help="time a row again at the end, up to N times, where the load probe "
                        f"read under {report.LOADED * 100:.0f}%% of its best around it (other "
                        "work on the machine), keeping the least loaded attempt (default "
                        "%(default)s)")
    m.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the results as JSON")
    o.add_argument("--csv", metavar="FILE", help="write the records as CSV")
    o.add_argument("--plot", metavar="FILE.png",
                   help="draw rnnfast's speedup against PyTorch (needs matplotlib)")
    o.add_argument("--load", metavar="FILE.json",
                   help="report a previous run's JSON instead of running (table, --csv, --plot)")
    o.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"),
                   help="print the change of every row between two runs, and exit")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def select_rows(args):
    if args.shapes:
        rows = product_rows(args.cells or ("lstm", "gru", "rnn_tanh"), args.shapes,
                            args.modes or ("inference", "train"))
    else:
        rows, _ = load_grid(grid_path(args.grid, args.device))
        rows = [r for r in rows if (not args.cells or r.cell in args.cells)
                and (not args.modes or r.mode in args.modes)]
    if args.layers or args.directions:
        rows = list(dict.fromkeys(
            dataclasses.replace(r, layers=nl, directions=nd) for r in rows
            for nl in args.layers or (r.layers,) for nd in args.directions or (r.directions,)))
    return rows


def select_peers(args, baseline=None):
    """rnnfast (on each of args.cuda_paths on the GPU), the baseline (likewise) and the peers
    asked for that are installed."""
    wanted = set(args.peers or PEER_NAMES) - set(args.skip_peers)
    ours = [PEERS[0]] + ([baseline] if baseline else [])
    chosen = [peer.on_path(path) for peer in ours for path in args.cuda_paths] \
        if args.cuda_paths else ours
    for peer in PEERS[1:]:
        if peer.name not in wanted:
            continue
        if peer.available(args.device):
            chosen.append(peer)
        elif args.peers:
            print(f"rnnfast-bench: peer {peer.name} is not installed (or not for "
                  f"{args.device}): left out", file=sys.stderr)
    return chosen


def grid_targets(args, result):
    """The grid's speed targets judged on this run (report.judge_targets): for a run of a grid
    (not --shapes) in the dtype the targets hold for; [] otherwise."""
    if args.shapes:
        return []
    dtype, targets = load_targets(grid_path(args.grid, args.device))
    return report.judge_targets(result, targets) if dtype == args.dtype else []


def check_cuda():
    """None when rnnfast can run on a GPU here, else why not."""
    info = rnnfast.cuda_info()
    if not info.get("built"):
        return "this rnnfast was built without its CUDA module (no CUDA backend)"
    if info.get("error") or not info.get("devices"):
        return f"rnnfast's CUDA module sees no usable GPU: {info.get('error')}"
    try:
        import cupy
    except ImportError:
        return "the CUDA benchmarks need CuPy (pip install 'rnnfast[cuda12]')"
    # The CUDA module may report devices before it has kernels: try a step on CuPy arrays.
    try:
        rnnfast.RNN(1, 1, device="cuda").eval()(cupy.zeros((1, 1, 1), cupy.float32))
    except Exception as error:  # whatever the layers raise on arrays they cannot take
        return f"rnnfast's layers failed a step on the GPU: {error!r}"
    return None


def main(argv=None):
    args = parser().parse_args(argv)
    if args.compare:
        old, new = (json.loads(pathlib.Path(path).read_text()) for path in args.compare)
        print(report.format_compare(old, new))
        return 0
    if args.load:
        with open(args.load) as f:
            result = json.load(f)
    else:
        if args.warmup < 0:
            parser().error("--warmup must be >= 0")
        if args.settle < 0:
            parser().error("--settle must be >= 0")
        if args.retry_loaded < 0:
            parser().error("--retry-loaded must be >= 0")
        if args.dtype == "bfloat16" and rnnfast._dtypes.BFLOAT16 is None:
            parser().error("--dtype bfloat16 needs ml_dtypes: pip install 'rnnfast[bf16]'")
        if args.device == "cpu" and args.cuda_paths:
            parser().error("--cuda-paths needs --device cuda (the CPU has one recurrence path)")
        if args.device == "cuda" and (why := check_cuda()):
            print(f"rnnfast-bench: --device cuda: {why}", file=sys.stderr)
            return 2
        if args.device == "cuda":
            args.cuda_paths = list(dict.fromkeys(args.cuda_paths or CUDA_PATHS))
        try:
            rows = select_rows(args)
        except FileNotFoundError as error:
            parser().error(f"no grid {args.grid!r} for {args.device}: {error.filename}")
        if not rows:
            parser().error("no rows selected")
        threads = args.threads or rnnfast.get_num_threads()
        try:
            baseline = baseline_peer(args.baseline) if args.baseline else None
        except FileNotFoundError as error:
            parser().error(f"--baseline: no rnnfast package at {error}")
        peers = select_peers(args, baseline)
        for peer in peers:
            if isinstance(peer, RnnfastPeer):
                peer.package.set_num_threads(threads)
        if any(p.name == "torch" for p in peers):
            import torch

            torch.set_num_threads(threads)
            if args.device == "cuda":
                # float32 in float32, as rnnfast's (unless CUPY_TF32=1): cuDNN's RNNs use TF32
                # by default, which the float32 check would flag as a mismatch.
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
        settings = {"grid": "command line" if args.shapes else args.grid,
                    "device": args.device, "cuda_paths": args.cuda_paths,
                    "dtype": args.dtype, "threads": threads,
                    "repeats": args.repeats, "warmup": args.warmup, "budget_s": args.budget,
                    "settle_s": args.settle, "rounds": args.rounds,
                    "retry_loaded": args.retry_loaded,
                    "seed": args.seed, "check": RULE[args.dtype]}
        peak, method, records, probes = run_suite(rows, peers, settings, quiet=args.quiet)
        result = {**report.environment(settings, peers, peak, method),
                  "load_probe": {"n": LOAD_PROBE_N, "gflops": probes},
                  "records": records}
        result["targets"] = grid_targets(args, result)
    print(report.format_table(result))
    if targets := report.format_targets(result):
        print(targets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.csv:
        report.write_csv(result, args.csv)
    if args.plot:
        report.plot(result, args.plot)
    return 1 if any(r["status"] == "mismatch" for r in result["records"]) else 0
