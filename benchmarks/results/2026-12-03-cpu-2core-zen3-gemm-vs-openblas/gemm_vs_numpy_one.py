"""One product, rnnfast's _cpu.gemm against np.matmul, alternating, a 0.3 s pause before each
call (NumPy's BLAS threads spin for a while after a call), median GFLOP/s and every round's.

Run: python gemm_vs_numpy_one.py M N K {t|n} [ROUNDS]   (t: B given as [N, K], transposed)
"""

import sys
import time

import numpy as np

from rnnfast import _cpu

m, n, k = (int(v) for v in sys.argv[1:4])
trans_b = sys.argv[4] == "t"
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
rng = np.random.default_rng(0)
a = rng.standard_normal((m, k)).astype(np.float32)
b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
c = np.empty((m, n), np.float32)
b_op = b.T if trans_b else b
flops = 2 * m * n * k / 1e9
ours, numpy_times = [], []
for _ in range(rounds):
    for times, call in ((ours, lambda: _cpu.gemm(a, b, c, False, trans_b)),
                        (numpy_times, lambda: np.matmul(a, b_op))):
        time.sleep(0.3)
        call()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
print(f"{m}x{n}x{k}{' (B^T)' if trans_b else ''}: rnnfast {flops / np.median(ours):.1f} GFLOP/s, "
      f"numpy {flops / np.median(numpy_times):.1f}; rounds rnnfast "
      f"{[round(flops / t) for t in ours]} numpy {[round(flops / t) for t in numpy_times]}")
