"""rnnfast's and PyTorch's bfloat16 LSTM (training) against float64 on the same bfloat16 values.

One layer, I = H = 1024, B = 128, T from the command line (default 10): the errors of y, of the
input gradient and of W_ih's gradient (max |error| / max |float64 value|), rnnfast's float64
layer on the same weights, inputs and output gradient being the oracle. Written when the
benchmark suite's check flagged PyTorch's input gradient at (T, B, H) = (50, 128, 1024).

    python benchmarks/bf16_torch_accuracy.py [T]
"""

import sys

import ml_dtypes
import numpy as np
import torch

import rnnfast


def main(T=10, B=128, H=1024):
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    layer = rnnfast.LSTM(H, H, dtype="bfloat16", seed=0)
    weights = layer.state_dict()
    x, dy = (rng.standard_normal((T, B, H)).astype(bf16) for _ in range(2))
    h0, c0 = (rng.standard_normal((1, B, H)).astype(bf16) for _ in range(2))
    y, _ = layer(x, (h0, c0))
    dx, _ = layer.backward(dy)

    oracle = rnnfast.LSTM(H, H, dtype="float64")
    oracle.load_state_dict(weights)
    y64, _ = oracle(x.astype(np.float64), (h0.astype(np.float64), c0.astype(np.float64)))
    dx64, _ = oracle.backward(dy.astype(np.float64))

    def tensor(a):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    module = torch.nn.LSTM(H, H).to(torch.bfloat16)
    module.load_state_dict({k: tensor(v) for k, v in weights.items()})
    xt = tensor(x).clone().requires_grad_()
    yt, _ = module(xt, (tensor(h0), tensor(c0)))
    yt.backward(tensor(dy))

    def err(a, o):
        return float(np.abs(np.asarray(a, np.float64) - o).max() / np.abs(o).max())
    w64 = oracle.grads["weight_ih_l0"]
    print(f"T={T} B={B} H={H}")
    print(f"rnnfast: y {err(y, y64):.1e}  grad x {err(dx, dx64):.1e}  "
          f"grad W_ih {err(layer.grads['weight_ih_l0'], w64):.1e}")
    print(f"torch:   y {err(yt.detach().float().numpy(), y64):.1e}  "
          f"grad x {err(xt.grad.float().numpy(), dx64):.1e}  "
          f"grad W_ih {err(module.weight_ih_l0.grad.float().numpy(), w64):.1e}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
