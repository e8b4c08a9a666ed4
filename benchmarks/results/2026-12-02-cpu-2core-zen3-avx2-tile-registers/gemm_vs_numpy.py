"""Alternating timing: rnnfast's _cpu.gemm against NumPy's matmul (OpenBLAS), median of 7 calls
each, at the layer's GEMM shapes. Run: python gemm_vs_numpy.py (PYTHONPATH=<package dir of the
build to time>)."""
import time

import numpy as np

from rnnfast import _cpu

SHAPES = [(6400, 2048, 512, False, True),   # input projection x W_ih^T at (100, 64, 512)
          (2048, 512, 6400, True, False),   # weight gradient dz^T x
          (6400, 4096, 1024, False, True)]  # input projection at (50, 128, 1024)


def median_rates(m, n, k, trans_a, trans_b, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    a_op, b_op = (a.T if trans_a else a), (b.T if trans_b else b)
    calls = {"rnnfast": lambda: _cpu.gemm(a, b, c, trans_a, trans_b),
             "numpy": lambda: np.matmul(a_op, b_op, out=c)}
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(7):
        for name, call in calls.items():
            time.sleep(0.05)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 2 * m * n * k / np.median(t) / 1e9 for name, t in times.items()}


rng = np.random.default_rng(0)
for shape in SHAPES:
    rates = median_rates(*shape, rng)
    print(f"M={shape[0]} N={shape[1]} K={shape[2]} ta={shape[3]} tb={shape[4]}: "
          + ", ".join(f"{name} {rate:.1f} GFLOP/s" for name, rate in rates.items()))
