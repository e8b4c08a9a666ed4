"""The fused recurrence (_cpu.recurrent_forward, or recurrent_backward after a training forward)
of several builds loaded side by side in one process, calls alternating: median ms per build,
and GFLOP/s (2*T*B*G*H*H per pass; the backward counts two passes).

Run: python builds_recurrence.py inf|bwd CELL T B H PKG1 PKG2 ... [--threads 2] [--rounds 5]
where each PKG is a folder holding an rnnfast package built from the commit to compare. Per
round each build runs one untimed call, then 3 timed ones.
"""

import argparse
import time

import numpy as np
from load_build import load  # this folder's

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}




def aligned(shape, dtype=np.float32):
    """An array of `shape` starting on a 64-byte boundary (as rnnfast allocates the workspace)."""
    n = int(np.prod(shape))
    raw = np.empty(n + 16, dtype)
    offset = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[offset:offset + n].reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["inf", "bwd"])
    parser.add_argument("cell", choices=sorted(GATES))
    for name in ("T", "B", "H"):
        parser.add_argument(name, type=int)
    parser.add_argument("builds", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cell, T, B, H, G = args.cell, args.T, args.B, args.H, GATES[args.cell]
    builds = {folder: load(folder, args.threads) for folder in args.builds}
    rng, f32, lstm = np.random.default_rng(0), np.float32, args.cell == "lstm"
    zx = rng.standard_normal((T, B, G * H)).astype(f32)
    w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    b_hh, h0 = np.zeros(G * H, f32), np.zeros((B, H), f32)
    c0 = h0.copy() if lstm else None
    y, h_n = np.empty((T, B, H), f32), np.empty((B, H), f32)
    c_n = np.empty((B, H), f32) if lstm else None
    per_unit = next(iter(builds.values())).saved_per_unit(cell)
    backward = args.mode == "bwd"
    saved = aligned((T, B, per_unit * H)) if backward and per_unit > 0 else None
    dy = rng.standard_normal((T, B, H)).astype(f32)
    dzx = np.empty((T, B, G * H), f32)
    dzh = np.empty_like(dzx) if cell == "gru" else None
    dh0, dc0 = np.empty((B, H), f32), (np.empty((B, H), f32) if lstm else None)

    def call(module):
        if backward:
            module.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh,
                                      dh0, dc0)
        else:
            module.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved)

    for module in builds.values():  # the backward reads the workspace of a training forward
        module.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved)
        call(module)
    times = {folder: [] for folder in builds}
    for _ in range(args.rounds):
        for folder, module in builds.items():
            call(module)
            for _ in range(3):
                start = time.perf_counter()
                call(module)
                times[folder].append(time.perf_counter() - start)
    flops = 2 * T * B * G * H * H * (2 if backward else 1)
    print(f"{cell} {args.mode} T={T} B={B} H={H} threads={args.threads}: " + ", ".join(
        f"{folder} {np.median(v) * 1e3:.2f} ms ({flops / np.median(v) / 1e9:.0f})"
        for folder, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
