"""A small training loop with rnnfast.torch against the same loop with torch.nn, in one run:
the same model (an LSTM and a linear head), initialisation, data and optimizer (Adam), timed
per training step (forward, backward, optimizer step) as the median of repeats after warm-up,
the two interleaved so that a change in the machine's load hits both.

--phases also times the parts of a step (the layer's forward, the head and loss, the backward,
Adam's step) and the layer alone (its forward and backward, nothing of torch's around it), to
show what running inside torch costs the layer (torch's OpenMP threads keep spinning on the
cores for a while after torch's own parallel ops).

Run: python benchmarks/torch_training_loop.py [--T 50 --B 16 --I 32 --H 64 --layers 1] [--phases]
"""

import argparse
import os
import time

import numpy as np
import torch

import rnnfast
import rnnfast.torch

PHASES = ("layer forward", "head + loss", "backward", "Adam step")


def make_steps(namespace, args):
    """(a training step, the layer's forward and backward alone): each appends its phases'
    times (seconds, PHASES' order) to the list it is given."""
    torch.manual_seed(0)
    rnn = namespace.LSTM(args.I, args.H, num_layers=args.layers, batch_first=True)
    head = torch.nn.Linear(args.H, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.B, args.T, args.I, generator=gen)
    y = torch.randn(args.B, 1, generator=gen)

    def step(times):
        t0 = time.perf_counter()
        out = rnn(x)[0]
        t1 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(head(out[:, -1]), y)
        optimizer.zero_grad()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        times.append((t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3))

    def layer_alone(times):
        t0 = time.perf_counter()
        out = rnn(x)[0]
        t1 = time.perf_counter()
        out.backward(torch.ones_like(out))
        times.append((t1 - t0, 0.0, time.perf_counter() - t1, 0.0))

    return step, layer_alone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("T", 50), ("B", 16), ("I", 32), ("H", 64), ("layers", 1),
                          ("steps", 20), ("repeats", 15)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--phases", action="store_true",
                        help="time the parts of a step and the layer alone too")
    parser.add_argument("--own-threads", action="store_true",
                        help="run rnnfast's kernels on rnnfast's own threads, not on torch's "
                             "OpenMP threads (rnnfast.torch.share_torch_threads(False))")
    args = parser.parse_args(argv)
    shared = rnnfast.torch.share_torch_threads(not args.own_threads)
    runs = {}
    for name, namespace in (("rnnfast.torch", rnnfast.torch), ("torch.nn", torch.nn)):
        step, layer_alone = make_steps(namespace, args)
        runs[name] = step
        if args.phases:
            runs[f"{name}, layer alone"] = layer_alone
    times = {name: [] for name in runs}
    for repeat in range(args.repeats + 2):  # the first two are warm-up
        for name, run in runs.items():
            per_step = []
            start = time.perf_counter()
            for _ in range(args.steps):
                run(per_step)
            if repeat >= 2:
                times[name].append(((time.perf_counter() - start) / args.steps,
                                    *np.median(per_step, axis=0)))
    median = {name: np.median(t, axis=0) for name, t in times.items()}
    print(f"LSTM T={args.T} B={args.B} I={args.I} H={args.H} layers={args.layers}, "
          f"threads: torch {torch.get_num_threads()}, rnnfast {rnnfast.get_num_threads()} "
          f"({rnnfast.cpu_info()['isa']}; {'on torch' if shared else 'own'} threads), "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.phases:
        print(f"  {'ms':27s} {'whole':>8s}" + "".join(f" {p:>13s}" for p in PHASES))
    for name, t in median.items():
        if args.phases:
            print(f"  {name:27s} {t[0] * 1e3:8.3f}" + "".join(f" {v * 1e3:13.3f}" for v in t[1:]))
        else:
            print(f"  {name:14s} {t[0] * 1e3:8.3f} ms per training step")
    print(f"  speedup of rnnfast.torch: {median['torch.nn'][0] / median['rnnfast.torch'][0]:.2f}x")


if __name__ == "__main__":
    main()
