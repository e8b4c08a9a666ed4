"""rnnfast's _cpu.gemm against NumPy's matmul (OpenBLAS) at a layer's three GEMM shapes (input
projection, weight gradient dz^T x, input gradient dz W_ih) for a few (T, B, H) of an LSTM:
median of 9 calls each after a 0.3 s pause (NumPy's BLAS threads asleep again) and two warm-up
calls. Run: python gemm_by_shape.py (PYTHONPATH=<package dir of the build to time>)."""
import time

import numpy as np

from rnnfast import _cpu


def shapes(T, B, H, G=4):
    n = T * B
    return [(n, G * H, H, False, True, "inproj"), (G * H, H, n, True, False, "dW"),
            (n, H, G * H, False, False, "dX")]


def rate(call, flops):
    time.sleep(0.3)
    call()
    call()
    times = []
    for _ in range(9):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return flops / np.median(times) / 1e9


def rates(m, n, k, ta, tb, rng):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    return (rate(lambda: _cpu.gemm(a, b, c, ta, tb), 2 * m * n * k),
            rate(lambda: np.matmul(a_op, b_op, out=c), 2 * m * n * k))


rng = np.random.default_rng(0)
for T, B, H in [(100, 16, 256), (1000, 8, 128), (100, 64, 512), (100, 64, 256)]:
    for m, n, k, ta, tb, name in shapes(T, B, H):
        ours, blas = rates(m, n, k, ta, tb, rng)
        print(f"({T},{B},{H}) {name:7s} M={m} N={n} K={k}: rnnfast {ours:.0f}  numpy {blas:.0f}  "
              f"ratio {ours / blas:.2f}", flush=True)
