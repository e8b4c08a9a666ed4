"""A cell step (LSTMCell(256, 256), B=1, float32, 2 threads) with Python busy for a while
between steps (0 to 20 ms, a spin, not a sleep): the median over 60 steps (30 at 20 ms), us.
Short runs like this one are below the thread pool's kMovesWorkers: they must not pay for
moving workers.

Run: python step_gap.py
"""
import time

import numpy as np

import rnnfast


def main():
    rnnfast.set_num_threads(2)
    cell = rnnfast.LSTMCell(256, 256, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    state = (np.zeros((1, 256), np.float32), np.zeros((1, 256), np.float32))
    for _ in range(50):
        cell(x, state)
    for gap in (0.0, 0.0003, 0.002, 0.02):
        times = []
        for _ in range(60 if gap < 0.01 else 30):
            start = time.perf_counter()
            while time.perf_counter() - start < gap:
                pass
            start = time.perf_counter()
            cell(x, state)
            times.append(time.perf_counter() - start)
        print(f"LSTMCell(256, 256) B=1, {gap * 1e3:4.1f} ms of Python between steps: "
              f"median {np.median(times) * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
