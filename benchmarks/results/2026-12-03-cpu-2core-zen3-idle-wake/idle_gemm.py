"""rnnfast's GEMM (_cpu.gemm, 1024^3 float32, 2 threads) and NumPy's (OpenBLAS) after the
process has been idle: nine calls at each pause, the pause taken before every call; median
and min in ms.

Run: python idle_gemm.py
"""
import numpy as np
from idle_layer import PAUSES, timings  # this folder's sibling script

import rnnfast
from rnnfast import _cpu


def main():
    rnnfast.set_num_threads(2)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
    c = np.empty_like(a)
    for name, call in (("rnnfast", lambda: _cpu.gemm(a, b, c)), ("numpy", lambda: a @ b)):
        for _ in range(5):
            call()
        for pause in PAUSES:
            median, least = timings(call, pause)
            print(f"{name:8s} gemm 1024^3 pause {pause:4.2f} s: median {median:6.2f} ms, "
                  f"min {least:6.2f}")


if __name__ == "__main__":
    main()
