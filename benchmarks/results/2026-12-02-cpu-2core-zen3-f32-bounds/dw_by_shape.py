"""The weight-gradient GEMM dW = dz^T x of an LSTM layer (M = 4H, N = H, K = T*B; A
transposed, so packed) at five (T, B, H): GFLOP/s, median of 11 calls (5 at H = 1024) after
two warm-up calls. Run once per build, alternating builds: python dw_by_shape.py
(PYTHONPATH=<package dir of the build to time>)."""
import time

import numpy as np

from rnnfast import _cpu


def rate(T, B, H, rng):
    K, M, N = T * B, 4 * H, H
    dz = rng.standard_normal((K, M)).astype(np.float32)
    x = rng.standard_normal((K, N)).astype(np.float32)
    dw = np.empty((M, N), np.float32)
    for _ in range(2):
        _cpu.gemm(dz, x, dw, True, False)
    times = []
    for _ in range(11 if H < 1024 else 5):
        start = time.perf_counter()
        _cpu.gemm(dz, x, dw, True, False)
        times.append(time.perf_counter() - start)
    return 2 * M * N * K / np.median(times) / 1e9


rng = np.random.default_rng(0)
print("  ".join(f"({T},{B},{H}) {rate(T, B, H, rng):.0f}"
                for T, B, H in [(100, 16, 256), (1000, 8, 128), (100, 64, 256), (100, 64, 512),
                                (50, 128, 1024)]))
