"""rnnfast's GEMM (_cpu.gemm) from two or more builds, loaded side by side in one process, at the
matrix products of the default grid's layers, and NumPy's BLAS at the same products.

Run: python gemm_builds.py OLD_PKG NEW_PKG [--threads 2] [--rounds 15] [--only proj,dx,dW]
where each PKG is a folder holding an rnnfast package (PKG/rnnfast/_cpu*.so) built from the
commit to compare. Per product and round, each build runs 3 calls back to back after one
untimed call, builds in turn; a round's ratio is the first build's median time over each
other's. Prints the rates (GFLOP/s, medians over all rounds) and the quartiles of the round
ratios (> 1: faster than the first build). NumPy's calls run in a block of their own after a
0.2 s pause, so that its spinning threads do not slow the next build's call.
"""

import argparse
import functools
import time

import numpy as np
from load_build import load  # this folder's

# Per layer (T, B, I = H, gates): the input projection x W_ih^T (proj), the input gradient
# dz W_ih (dx) and the weight gradient dz^T x (dW).
LAYERS = [(100, 16, 256, 4), (100, 64, 256, 4), (100, 64, 512, 4), (50, 128, 1024, 4),
          (1000, 8, 128, 4), (100, 64, 512, 3), (100, 64, 512, 1)]


def products(only):
    for T, B, H, G in LAYERS:
        TB, GH = T * B, G * H
        for kind, m, n, k, trans_a, trans_b in (("proj", TB, GH, H, False, True),
                                                ("dx", TB, H, GH, False, False),
                                                ("dW", GH, H, TB, True, False)):
            if kind in only:
                yield f"G={G} ({T},{B},{H}) {kind}", m, n, k, trans_a, trans_b




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", default="proj,dx,dW")
    args = parser.parse_args()
    builds = {folder: load(folder, args.threads) for folder in args.builds}
    rng = np.random.default_rng(0)
    for name, m, n, k, trans_a, trans_b in products(args.only.split(",")):
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        calls = {folder: functools.partial(mod.gemm, a, b, c, trans_a, trans_b)
                 for folder, mod in builds.items()}
        a_op, b_op = (a.T if trans_a else a), (b.T if trans_b else b)
        times = {folder: [] for folder in calls}
        numpy_times, ratios = [], []
        for _ in range(args.rounds):
            medians = {}
            for folder, call in calls.items():
                call()
                round_times = []
                for _ in range(3):
                    start = time.perf_counter()
                    call()
                    round_times.append(time.perf_counter() - start)
                times[folder] += round_times
                medians[folder] = np.median(round_times)
            first = medians[args.builds[0]]
            ratios.append([first / medians[folder] for folder in args.builds[1:]])
            time.sleep(0.2)
            for _ in range(2):
                start = time.perf_counter()
                np.matmul(a_op, b_op)
                numpy_times.append(time.perf_counter() - start)
            time.sleep(0.2)
        flops = 2 * m * n * k / 1e9
        rates = "  ".join(f"{flops / np.median(v):6.1f}" for v in times.values())
        quartiles = "  ".join("{:.3f} [{:.3f}, {:.3f}]".format(*np.percentile(r, [50, 25, 75]))
                              for r in np.array(ratios).T)
        print(f"{name:24s} {m}x{n}x{k}{' (A^T)' if trans_a else ''}: GFLOP/s {rates}  "
              f"numpy {flops / np.median(numpy_times):6.1f}  ratio {quartiles}", flush=True)


if __name__ == "__main__":
    main()
