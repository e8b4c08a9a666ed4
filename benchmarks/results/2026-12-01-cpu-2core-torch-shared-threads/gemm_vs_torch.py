"""The four large GEMMs of an LSTM layer (T*B = M rows, input size I, G*H gates, hidden size
H), rnnfast's own (rnnfast._cpu.gemm, on rnnfast's threads) against torch's (torch.mm, MKL on
torch's threads), float32, each the median of 9 repeats of 20 calls after 5 warm-up calls.

Run: python gemm_vs_torch.py M I GH H    (e.g. 800 32 256 64)
"""

import sys
import time

import numpy as np
import torch

from rnnfast import _cpu


def median_us(fn):
    for _ in range(5):
        fn()
    times = []
    for _ in range(9):
        start = time.perf_counter()
        for _ in range(20):
            fn()
        times.append((time.perf_counter() - start) / 20 * 1e6)
    return float(np.median(times))


def main():
    m, i, gh, h = map(int, sys.argv[1:5])
    rng = np.random.default_rng(0)
    # name, shape of a, of b, trans_a, trans_b: out = op(a) op(b)
    cases = [("zx = x w_ih^T", (m, i), (gh, i), False, True),
             ("dx = dzx w_ih", (m, gh), (gh, i), False, False),
             ("dw_ih = dzx^T x", (m, gh), (m, i), True, False),
             ("dw_hh = dzh^T h", (m, gh), (m, h), True, False)]
    print(f"threads: rnnfast {_cpu.num_threads()}, torch {torch.get_num_threads()}")
    for name, shape_a, shape_b, trans_a, trans_b in cases:
        a = rng.standard_normal(shape_a, dtype=np.float32)
        b = rng.standard_normal(shape_b, dtype=np.float32)
        print(f"{name:16s} {compare(a, b, trans_a, trans_b)}")


def compare(a, b, trans_a, trans_b):
    """One GEMM timed both ways, as a line of the report."""
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    out = np.empty((op_a.shape[0], op_b.shape[1]), np.float32)
    ours = median_us(lambda: _cpu.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b))
    split = _cpu.last_split()
    ta, tb, tout = torch.from_numpy(op_a), torch.from_numpy(op_b), torch.from_numpy(out)
    theirs = median_us(lambda: torch.mm(ta, tb, out=tout))
    flops = 2 * op_a.shape[0] * op_a.shape[1] * op_b.shape[1]
    return (f"rnnfast {ours:9.1f} us ({flops / ours / 1e3:6.1f} GFLOP/s, {split['threads']} "
            f"threads, {split['split']})  torch {theirs:9.1f} us "
            f"({flops / theirs / 1e3:6.1f} GFLOP/s)  torch/rnnfast time {theirs / ours:.2f}")

if __name__ == "__main__":
    main()
