"""One-thread kernel rates from the CPU time of the calling thread, which a loaded machine's
preemptions do not inflate: rnnfast's GEMM of the recurrence's FLOPs ([T*B, H] x [H, G*H]), the
recurrence forward (inference and training) and backward, three rounds of `reps` calls each;
prints per kernel the best rate and the range of the rounds' medians.

Run: python kernel_cpu_time.py lstm 10 128 1024 [reps]
"""

import sys
import time

import numpy as np

import rnnfast
from rnnfast import _cpu
from rnnfast.backends import CPU
from rnnfast.cell_registry import SPECS


def cpu_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    times.sort()
    return times[0], times[len(times) // 2]


def main():
    cell, T, B, H = sys.argv[1], *(int(v) for v in sys.argv[2:5])
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 7
    rnnfast.set_num_threads(1)
    G, S, f32 = SPECS[cell].gate_count, _cpu.saved_per_unit(cell), np.float32
    rng = np.random.default_rng(0)
    zx = rng.standard_normal((T, B, G * H)).astype(f32)
    w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    b, h0 = np.zeros(G * H, f32), np.zeros((B, H), f32)
    lstm = cell == "lstm"
    c0, c_n = (np.zeros((B, H), f32), np.empty((B, H), f32)) if lstm else (None, None)
    y, h_n = np.empty((T, B, H), f32), np.empty((B, H), f32)
    saved = CPU.empty((T, B, S * H), f32, aligned=True) if S else None
    dy = rng.standard_normal((T, B, H)).astype(f32)
    dzx = np.empty((T, B, G * H), f32)
    dzh = np.empty_like(dzx) if cell == "gru" else None
    dh0, dc0 = np.empty((B, H), f32), np.empty((B, H), f32) if lstm else None
    x2 = rng.standard_normal((T * B, H)).astype(f32)

    def forward(workspace):
        return lambda: _cpu.recurrent_forward(cell, zx, w_hh, b, h0, c0, y, h_n, c_n, workspace)

    def backward():
        _cpu.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh, dh0, dc0)

    kernels = {"gemm": lambda: _cpu.gemm(x2, w_hh, zx.reshape(T * B, G * H), trans_b=True),
               "forward": forward(None), "train fwd": forward(saved), "backward": backward}
    flops = 2 * T * B * G * H * H
    rates = {name: [] for name in kernels}
    for _ in range(3):
        for name, fn in kernels.items():
            if name == "backward":
                forward(saved)()  # the workspace the backward reads
            best, median = cpu_time(fn, reps)
            rates[name].append((flops / best / 1e9, flops / median / 1e9))
    for name, r in rates.items():
        medians = sorted(m for _, m in r)
        print(f"{cell} T={T} B={B} H={H} 1 thread {name:10s}: best {max(b for b, _ in r):6.1f} "
              f"GFLOP/s, medians {medians[0]:.1f}-{medians[-1]:.1f}")


if __name__ == "__main__":
    main()
