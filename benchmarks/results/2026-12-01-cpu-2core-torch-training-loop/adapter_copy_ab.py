"""In one process, a training step (benchmarks/torch_training_loop.py's model) with
rnnfast.torch's batch-first copies (of the output, and of the input gradient) made by torch
(``.transpose(0, 1).contiguous()``, as committed) or by NumPy on the calling thread (tried in
f654c8f, reverted), alternating per repeat; medians.

Run: python adapter_copy_ab.py T B I H   (STEPS, REPS in the environment)
"""

import os
import sys
import time

import numpy as np
import torch

import rnnfast.torch as rt

T, B, I, H = map(int, sys.argv[1:5])
STEPS, REPS = int(os.environ.get("STEPS", 10)), int(os.environ.get("REPS", 12))
torch_copy = rt._from_padded


def numpy_copy(call, a):
    if call.batch_sizes is None and call.batch_first:
        return torch.from_numpy(np.ascontiguousarray(a.numpy().transpose(1, 0, 2)))
    return torch_copy(call, a)


torch.manual_seed(0)
rnn = rt.LSTM(I, H, batch_first=True)
head = torch.nn.Linear(H, 1)
optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
x, y = torch.randn(B, T, I), torch.randn(B, 1)


def step():
    loss = torch.nn.functional.mse_loss(head(rnn(x)[0][:, -1]), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


times = {"torch copy": [], "numpy copy": []}
for repeat in range(REPS):
    for name, copy in (("torch copy", torch_copy), ("numpy copy", numpy_copy)):
        rt._from_padded = copy
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        if repeat >= 2:
            times[name].append((time.perf_counter() - start) / STEPS)
print(T, B, I, H, f"load {os.getloadavg()[0]:.1f}",
      {name: f"{np.median(t) * 1e3:.3f} ms" for name, t in times.items()})
