"""An inference loop that calls a NumPy matmul after each layer call (a linear head, or with
--head N an N x N x N product), against the layer called back to back: rnnfast.LSTM and
torch.nn.LSTM (T=100, B=16, I=H=256, float32, 2 threads each), the layer's time only, median of
30 calls after 3. NumPy's OpenBLAS keeps its worker thread spinning for about 0.1 s after each
matmul, so every layer call in the loop starts with one of the two cores busy.

Run: python numpy_between_calls.py [--head N] [--no-torch] [--blas-threads N] (PYTHONPATH=
<package dir of the build to time>); --blas-threads: NumPy's BLAS limited to N threads around
the head by threadpoolctl.
"""
import argparse
import time

import numpy as np

import rnnfast

T, B, H = 100, 16, 256


def median_ms(layer, x, head, calls=30, warmup=3):
    times = []
    for i in range(warmup + calls):
        start = time.perf_counter()
        y = layer(x)
        elapsed = time.perf_counter() - start
        if head is not None:
            head(y)
        if i >= warmup:
            times.append(elapsed)
    return 1e3 * np.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", type=int, default=0,
                        help="an N x N x N matmul after each call instead of the linear head")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--blas-threads", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    w_out = rng.standard_normal((H, H)).astype(np.float32)
    big = rng.standard_normal((args.head, args.head)).astype(np.float32) if args.head else None

    def product(y):  # y: the layer's output sequence [T, B, H] as a NumPy array
        return big @ big if big is not None else y.reshape(-1, H) @ w_out

    def head(y):
        if not args.blas_threads:
            return product(y)
        from threadpoolctl import threadpool_limits
        with threadpool_limits(args.blas_threads, user_api="blas"):
            return product(y)

    what = f"{args.head}^3 matmul" if args.head else "linear head"
    what += f" ({args.blas_threads} BLAS thread)" if args.blas_threads else ""
    lstm = rnnfast.LSTM(H, H)
    layers = {"rnnfast": (lambda v: lstm(v)[0], x)}
    if not args.no_torch:
        import torch
        torch_lstm = torch.nn.LSTM(H, H)

        def torch_layer(v):
            with torch.no_grad():
                return torch_lstm(v)[0].numpy()
        layers["torch.nn"] = (torch_layer, torch.from_numpy(x))
    for name, (layer, inputs) in layers.items():
        alone = median_ms(layer, inputs, None)
        mixed = median_ms(layer, inputs, head)
        print(f"{name:9s} back to back {alone:6.2f} ms; with a NumPy {what} after each call "
              f"{mixed:6.2f} ms", flush=True)


if __name__ == "__main__":
    main()
