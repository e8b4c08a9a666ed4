"""A layer's call after the process has been idle: rnnfast.LSTM and torch.nn.LSTM (inference,
T=100, B=16, I=H=256, float32, 2 threads each), nine calls at each pause, the pause taken
before every call; median and min in ms. Pause 0: back to back.

Run: python idle_layer.py [--no-torch]
"""
import argparse
import time

import numpy as np

import rnnfast

PAUSES = (0.0, 0.01, 0.05, 0.1, 0.4)


def timings(call, pause, calls=9):
    times = []
    for _ in range(calls):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * np.median(times), 1e3 * min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    T, B, H = 100, 16, 256
    rnnfast.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    layer = rnnfast.LSTM(H, H, seed=1)
    layer.eval()
    calls = {"rnnfast": lambda: layer(x)}
    if not args.no_torch:
        import torch
        torch.set_num_threads(2)
        peer, xt = torch.nn.LSTM(H, H), torch.from_numpy(x)

        def torch_call():
            with torch.no_grad():
                peer(xt)
        calls["torch"] = torch_call
    for name, call in calls.items():
        for _ in range(5):
            call()
        for pause in PAUSES:
            median, least = timings(call, pause)
            print(f"{name:8s} pause {pause:4.2f} s: median {median:6.2f} ms, min {least:6.2f}")


if __name__ == "__main__":
    main()
