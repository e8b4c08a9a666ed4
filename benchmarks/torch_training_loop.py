"""A small training loop with rnnfast.torch against the same loop with torch.nn, in one run:
the same model (an LSTM and a linear head), initialisation, data and optimizer (Adam), timed
per training step (forward, backward, optimizer step) as the median of repeats after warm-up,
the two interleaved so that a change in the machine's load hits both.

Run: python benchmarks/torch_training_loop.py [--T 50 --B 16 --I 32 --H 64 --layers 1]
"""

import argparse
import time

import numpy as np
import torch

import rnnfast
import rnnfast.torch


def make_step(namespace, args):
    torch.manual_seed(0)
    rnn = namespace.LSTM(args.I, args.H, num_layers=args.layers, batch_first=True)
    head = torch.nn.Linear(args.H, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.B, args.T, args.I, generator=gen)
    y = torch.randn(args.B, 1, generator=gen)

    def step():
        loss = torch.nn.functional.mse_loss(head(rnn(x)[0][:, -1]), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("T", 50), ("B", 16), ("I", 32), ("H", 64), ("layers", 1),
                          ("steps", 20), ("repeats", 15)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args(argv)
    steps = {"rnnfast.torch": make_step(rnnfast.torch, args),
             "torch.nn": make_step(torch.nn, args)}
    times = {name: [] for name in steps}
    for repeat in range(args.repeats + 2):  # the first two are warm-up
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if repeat >= 2:
                times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(f"LSTM T={args.T} B={args.B} I={args.I} H={args.H} layers={args.layers}, "
          f"threads: torch {torch.get_num_threads()}, rnnfast {rnnfast.get_num_threads()} "
          f"({rnnfast.cpu_info()['isa']})")
    for name, t in median.items():
        print(f"  {name:14s} {t * 1e3:8.3f} ms per training step")
    print(f"  speedup of rnnfast.torch: {median['torch.nn'] / median['rnnfast.torch']:.2f}x")


if __name__ == "__main__":
    main()
