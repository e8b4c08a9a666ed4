"""The single step's parts: rnnfast.LSTMCell(H, H) called as a streaming loop calls it (out=
given), and its kernel call alone (_cpu.cell_step on the packed weights), B = 1; min and median
of 9 rounds of 20000 calls, in microseconds.

Run: python step_parts.py H threads
"""

import sys
import timeit

import numpy as np

import rnnfast
from rnnfast import _cpu


def main():
    H, threads = int(sys.argv[1]), int(sys.argv[2])
    rnnfast.set_num_threads(threads)
    cell = rnnfast.LSTMCell(H, H, seed=0)
    x = np.ones((1, H), np.float32)
    state = [(np.zeros((1, H), np.float32), np.zeros((1, H), np.float32)) for _ in range(2)]
    packed = cell._packed_weights()
    (h, c), out = state

    def per_call(fn, n=20000):
        rounds = sorted(timeit.repeat(fn, number=n, repeat=9))
        return rounds[0] / n * 1e6, rounds[4] / n * 1e6

    full = per_call(lambda: cell(x, state[0], out=state[1]))
    kernel = per_call(lambda: _cpu.cell_step(packed, x, h, c, *out))
    print(f"H={H} threads={threads}: cell() min {full[0]:.2f} median {full[1]:.2f} us; "
          f"_cpu.cell_step min {kernel[0]:.2f} median {kernel[1]:.2f} us; "
          f"Python's share (mins) {full[0] - kernel[0]:.2f} us")


if __name__ == "__main__":
    main()
