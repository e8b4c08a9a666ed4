"""Where one layer's forward and backward spend their time, by kernel call: rnnfast._cpu's
gemm, gemm_bf16 (keyed by trans_a, trans_b) and the recurrences, timed by wrappers around the
compiled module while rnnfast.LSTM runs a training forward and its backward.

Run (repository root, package importable): python layer_parts.py bfloat16 100 64 512
"""

import collections
import sys
import time

import numpy as np

import rnnfast
from rnnfast import _cpu

dtype, T, B, H = sys.argv[1], *map(int, sys.argv[2:5])
totals = collections.defaultdict(float)


def timed(name, kernel):
    def call(*args, **kwargs):
        start = time.perf_counter()
        kernel(*args, **kwargs)
        totals[(name, kwargs.get("trans_a"), kwargs.get("trans_b"))] += time.perf_counter() - start
    return call


for name in ("gemm", "gemm_bf16", "recurrent_forward", "recurrent_backward"):
    setattr(_cpu, name, timed(name, getattr(_cpu, name)))

layer = rnnfast.LSTM(H, H, dtype=dtype)
x = np.random.default_rng(0).standard_normal((T, B, H)).astype(
    layer.state_dict()["weight_ih_l0"].dtype)


def step():
    y, _ = layer(x)
    layer.backward(np.ones_like(y))


for _ in range(2):
    step()
totals.clear()
runs = 5
start = time.perf_counter()
for _ in range(runs):
    step()
wall = (time.perf_counter() - start) / runs
print(f"{dtype} LSTM T={T} B={B} H={H}, {rnnfast.get_num_threads()} threads: "
      f"{wall * 1e3:.1f} ms per training forward and backward")
for (name, trans_a, trans_b), seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
    label = name + (f" (trans_a={trans_a}, trans_b={trans_b})" if name.startswith("gemm") else "")
    print(f"  {label:45s} {seconds / runs * 1e3:8.2f} ms  {100 * seconds / runs / wall:5.1f}%")
