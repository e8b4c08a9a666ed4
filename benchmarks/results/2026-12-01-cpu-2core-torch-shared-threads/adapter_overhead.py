"""What rnnfast.torch adds to a forward of a small LSTM (T=50, B=16, I=32, H=64, inference
under torch.no_grad) over rnnfast.functional.forward_layers on the same data and GEMMs, with
torch.nn's forward beside them: medians of 10 rounds (after 2) of 100 calls each, interleaved.

Run: python adapter_overhead.py
"""

import time

import numpy as np
import torch

import rnnfast.torch
from rnnfast import backends, functional


def main():
    torch.manual_seed(0)
    ours, theirs = rnnfast.torch.LSTM(32, 64), torch.nn.LSTM(32, 64)
    x = torch.randn(50, 16, 32)
    params = {name: p.detach().numpy() for name, p in ours.named_parameters()}

    def through_functional(gemm):
        with backends.cpu_gemm(gemm):
            return functional.forward_layers("lstm", x.numpy(), params, training=False)

    cases = {"rnnfast.torch": lambda: ours(x), "torch.nn": lambda: theirs(x),
             "functional, torch's GEMMs": lambda: through_functional(rnnfast.torch._torch_gemm),
             "functional, rnnfast's GEMMs": lambda: through_functional(None)}
    times = {name: [] for name in cases}
    with torch.no_grad():
        for _ in range(12):
            for name, fn in cases.items():
                for _ in range(20):
                    fn()
                start = time.perf_counter()
                for _ in range(100):
                    fn()
                times[name].append((time.perf_counter() - start) / 100 * 1e6)
    for name, values in times.items():
        print(f"{name:28s} {np.median(values[2:]):7.1f} us")


if __name__ == "__main__":
    main()
