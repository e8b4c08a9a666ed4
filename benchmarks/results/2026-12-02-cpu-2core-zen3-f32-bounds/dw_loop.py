"""The weight-gradient GEMM dW = dz^T x of an LSTM layer (M = 4H, N = H, K = T*B; A transposed,
so packed), called 300 times: the workload profiled with `perf record -e cpu-clock python
dw_loop.py T B H`. Prints the mean time of a call."""
import sys
import time

import numpy as np

from rnnfast import _cpu

T, B, H = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(0)
dz = rng.standard_normal((T * B, 4 * H)).astype(np.float32)
x = rng.standard_normal((T * B, H)).astype(np.float32)
dw = np.empty((4 * H, H), np.float32)
start = time.perf_counter()
for _ in range(300):
    _cpu.gemm(dz, x, dw, True, False)
print(f"{(time.perf_counter() - start) / 300 * 1e3:.3f} ms a call")
