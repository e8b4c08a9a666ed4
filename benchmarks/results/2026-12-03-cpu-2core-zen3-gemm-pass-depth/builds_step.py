"""The single step (_cpu.cell_step on packed weights, B = 1, I = H) of several builds loaded side
by side in one process, blocks of 2000 steps alternating: median us per step [min-max].

Run: python builds_step.py CELL H PKG1 PKG2 ... [--threads 2] [--blocks 9]
where each PKG is a folder holding an rnnfast package built from the commit to compare.
"""

import argparse
import time

import numpy as np
from load_build import load  # this folder's

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", choices=sorted(GATES))
    parser.add_argument("H", type=int)
    parser.add_argument("builds", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=9)
    args = parser.parse_args()
    G, H, f32 = GATES[args.cell], args.H, np.float32
    rng = np.random.default_rng(0)
    w_ih = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    bias = np.zeros(G * H, f32)
    builds = {}
    for folder in args.builds:
        module = load(folder, args.threads)
        builds[folder] = (module, module.pack_cell(args.cell, w_ih, w_hh, bias, bias,
                                                   bfloat16=False))
    x = rng.standard_normal((1, H)).astype(f32)
    h = [np.zeros((1, H), f32) for _ in range(2)]  # states in turn: step i reads i % 2
    c = [np.zeros((1, H), f32) for _ in range(2)] if args.cell == "lstm" else [None, None]

    def steps(module, packed, n):
        for i in range(n):
            module.cell_step(packed, x, h[i % 2], c[i % 2], h[1 - i % 2], c[1 - i % 2])

    times = {folder: [] for folder in builds}
    for _ in range(args.blocks):
        for folder, (module, packed) in builds.items():
            steps(module, packed, 200)
            start = time.perf_counter()
            steps(module, packed, 2000)
            times[folder].append((time.perf_counter() - start) / 2000)
    print(args.cell, H, "  ".join(
        f"{folder} {np.median(v) * 1e6:.2f} us [{min(v) * 1e6:.2f}-{max(v) * 1e6:.2f}]"
        for folder, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
