"""What Python's garbage collector costs a forward and backward of a small LSTM (T=50, B=16,
I=32, H=64) through rnnfast.torch and through torch.nn: the median of 8 rounds of 100 calls
(after 10 warm-up calls) each, with the collector on and off (gc.disable), interleaved.

Run: python gc_cost.py
"""

import gc
import time

import numpy as np
import torch

import rnnfast.torch


def main():
    torch.manual_seed(0)
    modules = {"rnnfast.torch": rnnfast.torch.LSTM(32, 64), "torch.nn": torch.nn.LSTM(32, 64)}
    x = torch.randn(50, 16, 32, requires_grad=True)

    def step(module):
        y = module(x)[0]
        y.backward(torch.ones_like(y))

    times = {}
    for _ in range(8):
        for name, module in modules.items():
            for collector in ("on", "off"):
                if collector == "off":
                    gc.disable()
                for _ in range(10):
                    step(module)
                start = time.perf_counter()
                for _ in range(100):
                    step(module)
                times.setdefault((name, collector), []).append(
                    (time.perf_counter() - start) / 100 * 1e3)
                gc.enable()
    for (name, collector), values in times.items():
        print(f"{name:14s} gc {collector:3s} {np.median(values):.3f} ms")
    print(f"objects the collector tracks: {len(gc.get_objects())}")


if __name__ == "__main__":
    main()
