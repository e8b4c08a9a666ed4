"""rnnfast.torch.LSTM(H, H).bfloat16() against torch.nn.LSTM(H, H).bfloat16(), same weights
and input: medians of 5 calls after 2 warm-ups, two rounds per row, inference (no_grad) and
training (forward, and backward of the float32 sum). Run: python bf16_adapter_speed.py
"""

import time

import torch

import rnnfast.torch as rt


def median_ms(fn, n=5):
    fn()
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2] * 1e3


def step(module, x, mode):
    if mode == "inference":
        with torch.no_grad():
            module(x)
    else:
        module(x.detach().requires_grad_())[0].float().sum().backward()


torch.manual_seed(0)
for H, T, B in ((512, 100, 64), (256, 100, 16)):
    theirs = torch.nn.LSTM(H, H).bfloat16()
    ours = rt.convert(torch.nn.LSTM(H, H)).bfloat16()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, H).bfloat16()
    for mode in ("inference", "train"):
        rounds = [(median_ms(lambda: step(ours, x, mode)),  # noqa: B023 (called right here)
                   median_ms(lambda: step(theirs, x, mode)))  # noqa: B023
                  for _ in range(2)]
        print(f"LSTM bf16 T={T} B={B} H={H} {mode}: " + "; ".join(
            f"rnnfast {a:.1f} ms torch {b:.1f} ms = {b / a:.2f}x" for a, b in rounds))
