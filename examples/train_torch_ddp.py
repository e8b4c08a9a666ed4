"""A small sequence model on rnnfast's kernels, trained with PyTorch's DistributedDataParallel.

Two processes on this machine (gloo backend, 127.0.0.1 only) each take half of every batch;
DDP averages their gradients, so both keep the same parameters, those that one process would
reach on the whole batch. The task: read a sequence of numbers and output its running mean,
with a 2-layer GRU and a linear head.

    python examples/train_torch_ddp.py [--steps 200] [--max-seconds 60]
"""

import argparse
import datetime
import os
import socket
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import rnnfast
import rnnfast.torch

INPUT, HIDDEN, STEPS_IN_TIME, BATCH = 1, 16, 12, 32


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnfast.torch.GRU(INPUT, HIDDEN, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    return Model().to(dtype)


def batch(step, dtype=torch.float32):
    """The batch of a step (the same in every process): x [BATCH, T, 1] and its running mean."""
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, STEPS_IN_TIME, INPUT, generator=gen, dtype=dtype)
    steps = torch.arange(1, STEPS_IN_TIME + 1, dtype=dtype)[:, None]
    return x, x.cumsum(1) / steps


def train(model, steps, rank=0, world_size=1, max_seconds=None):
    """SGD with momentum on the loss averaged over this process's share of each batch; returns
    the losses (of this process's share)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses, start = [], time.monotonic()
    for step in range(steps):
        x, y = batch(step, next(model.parameters()).dtype)
        share = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
        loss = torch.nn.functional.mse_loss(model(x[share]), y[share])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        out_of_time = max_seconds is not None and time.monotonic() - start > max_seconds
        if world_size > 1:  # the processes must all stop at the same step
            flag = torch.tensor(float(out_of_time))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag)
        if out_of_time:
            break
    return losses


def worker(rank, world_size, port, steps, max_seconds, dtype, folder):
    """One process of the DDP run: saves its losses and parameters in ``folder``."""
    # One thread per process: the two processes share the machine's cores.
    torch.set_num_threads(1)
    rnnfast.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback interface only
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        model = DistributedDataParallel(make_model(dtype))
        losses = train(model, steps, rank, world_size, max_seconds)
        torch.save((losses, model.module.state_dict()), os.path.join(folder, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(steps, max_seconds=None, dtype=torch.float32, world_size=2):
    """Trains over ``world_size`` processes; returns [(losses, state_dict)] by rank."""
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(world_size, free_port(), steps, max_seconds, dtype, folder),
                 nprocs=world_size)  # raises if a process fails
        return [torch.load(os.path.join(folder, f"{rank}.pt")) for rank in range(world_size)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    (losses, params), (_, params_1) = run_ddp(args.steps, args.max_seconds)
    same = all(torch.equal(params[k], params_1[k]) for k in params)
    print(f"{len(losses)} steps on 2 processes: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
          f"parameters identical in both processes: {same}")


if __name__ == "__main__":
    main()
