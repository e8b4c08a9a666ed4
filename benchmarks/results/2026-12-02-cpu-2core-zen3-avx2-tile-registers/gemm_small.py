"""_cpu.gemm at the layer input projection's B = 1 shapes (M = 100 rows), median of 301 calls
after 50. Run: python gemm_small.py, once per build, alternating builds (PYTHONPATH=<package
dir>)."""
import time

import numpy as np

from rnnfast import _cpu

rng = np.random.default_rng(0)
for m, n, k in ((100, 1024, 256), (100, 768, 256), (100, 256, 256)):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    for _ in range(50):
        _cpu.gemm(a, b, c, False, True)
    times = []
    for _ in range(301):
        start = time.perf_counter()
        _cpu.gemm(a, b, c, False, True)
        times.append(time.perf_counter() - start)
    print(f"{m}x{n}x{k}: {np.median(times) * 1e6:.1f} us", end="; ")
print()
