"""Alternating timing: rnnfast's _cpu.gemm against NumPy's matmul (OpenBLAS), median of 7 calls
each, at the layer's GEMM shapes. Run: python gemm_vs_numpy.py [--pause SECONDS] (PYTHONPATH=
<package dir of the build to time>).

--pause: the sleep before each call (default 0.3 s). The closing note of stop 30 quoted this
script's figures with a pause of 0.05 s, too short: NumPy's BLAS threads were still spinning
after the previous matmul and took the cores from rnnfast's threads (see the README of
2026-12-02-cpu-2core-zen3-f32-bounds).
"""
import argparse
import time

import numpy as np

from rnnfast import _cpu

SHAPES = [(6400, 2048, 512, False, True),   # input projection x W_ih^T at (100, 64, 512)
          (2048, 512, 6400, True, False),   # weight gradient dz^T x
          (6400, 4096, 1024, False, True)]  # input projection at (50, 128, 1024)


def median_rates(m, n, k, trans_a, trans_b, rng, pause):
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
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 2 * m * n * k / np.median(t) / 1e9 for name, t in times.items()}


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--pause", type=float, default=0.3)
pause = parser.parse_args().pause
rng = np.random.default_rng(0)
for shape in SHAPES:
    rates = median_rates(*shape, rng, pause)
    print(f"M={shape[0]} N={shape[1]} K={shape[2]} ta={shape[3]} tb={shape[4]}: "
          + ", ".join(f"{name} {rate:.1f} GFLOP/s" for name, rate in rates.items()))
