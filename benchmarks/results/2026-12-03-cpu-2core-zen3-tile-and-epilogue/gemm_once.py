"""rnnfast's GEMM (rnnfast._cpu.gemm) called REPS times on one product, for a profiler.
Run: python gemm_once.py M N K {n|t} REPS   (t: A given as [K, M], transposed)"""
import sys

import numpy as np

from rnnfast import _cpu

m, n, k, trans_a, reps = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                          sys.argv[4] == "t", int(sys.argv[5]))
rng = np.random.default_rng(0)
a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
b = rng.standard_normal((k, n)).astype(np.float32)
c = np.empty((m, n), np.float32)
for _ in range(reps):
    _cpu.gemm(a, b, c, trans_a, False)
