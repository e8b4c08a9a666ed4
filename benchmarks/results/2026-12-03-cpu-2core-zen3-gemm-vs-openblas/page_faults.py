"""Minor page faults per call (getrusage) of _cpu.gemm at three products, and of an LSTM
layer's forward: a fresh buffer of n bytes costs about n / 4096 of them on first touch.

Run: python page_faults.py
"""

import resource
import time

import numpy as np

import rnnfast
from rnnfast import _cpu


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


rng = np.random.default_rng(0)
for m, n, k, trans_b in [(6400, 1024, 4096, False), (6400, 4096, 1024, True),
                         (1600, 1024, 256, True)]:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    _cpu.gemm(a, b, c, False, trans_b)
    before, start = faults(), time.perf_counter()
    for _ in range(3):
        _cpu.gemm(a, b, c, False, trans_b)
    print(f"{m}x{n}x{k}: {(faults() - before) / 3:.0f} minor faults a call, packed B "
          f"{n * k * 4 / 4096:.0f} pages, {(time.perf_counter() - start) / 3 * 1e3:.1f} ms a call")
layer = rnnfast.LSTM(256, 256, seed=0)
x = rng.standard_normal((100, 64, 256)).astype(np.float32)
layer(x)
before = faults()
for _ in range(3):
    layer(x)
print(f"LSTM(256,256) forward (100,64): {(faults() - before) / 3:.0f} minor faults a call")
