"""rnnfast._cpu.gemm's GFLOP/s on M x N x K for several depths K, alternating, medians: whether
a row stride of a power of two (K = 1024, 4096) costs the GEMM anything against its neighbours.

Run: RNNFAST_NUM_THREADS=1 python gemm_depths.py M N K1,K2,... [ROUNDS]
"""

import sys
import time

import numpy as np

from rnnfast import _cpu

m, n = int(sys.argv[1]), int(sys.argv[2])
depths = [int(v) for v in sys.argv[3].split(",")]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
rng = np.random.default_rng(0)
cases = []
for k in depths:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    cases.append((k, a, b, np.empty((m, n), np.float32), []))
for _ in range(rounds):
    for _k, a, b, c, times in cases:
        _cpu.gemm(a, b, c, False, False)
        start = time.perf_counter()
        _cpu.gemm(a, b, c, False, False)
        times.append(time.perf_counter() - start)
print(f"{m}x{n}: " + ", ".join(f"K={k}: {2 * m * n * k / 1e9 / np.median(t):.1f} GFLOP/s"
                               for k, a, b, c, t in cases))
