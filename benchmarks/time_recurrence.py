"""The fused recurrence kernel alone (rnnfast._cpu.recurrent_forward, or recurrent_backward
after a training forward), without the layer's GEMMs: median of repeats after warm-up, with its
GFLOP/s (2*T*B*G*H*H FLOPs per pass).

Run: python benchmarks/time_recurrence.py lstm 100 64 512 [--threads 2] [--training | --backward]
     [--bf16]   (the recurrent matmul in bfloat16, as for bfloat16 layers: AMX or vdpbf16ps)
"""

import argparse

import numpy as np
from profile_layer import median_time  # this folder's sibling script

import rnnfast
from rnnfast import _cpu
from rnnfast.backends import CPU
from rnnfast.cell_registry import SPECS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", choices=sorted(SPECS))
    for name in ("T", "B", "H"):
        parser.add_argument(name, type=int)
    parser.add_argument("--threads", type=int, default=rnnfast.get_num_threads())
    parser.add_argument("--training", action="store_true",
                        help="time the training forward, which also writes the workspace")
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 products with float32 sums (bf16_matmul)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rnnfast.set_num_threads(args.threads)
    cell, T, B, H, G = args.cell, args.T, args.B, args.H, SPECS[args.cell].gate_count
    rng = np.random.default_rng(0)
    f32 = np.float32
    lstm = cell == "lstm"
    zx = rng.standard_normal((T, B, G * H)).astype(f32)
    w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    b_hh = np.zeros(G * H, f32)
    h0 = np.zeros((B, H), f32)
    c0 = h0.copy() if lstm else None
    y, h_n = np.empty((T, B, H), f32), np.empty((B, H), f32)
    c_n = np.empty((B, H), f32) if lstm else None
    per_unit = _cpu.saved_per_unit(cell)
    # aligned as rnnfast.functional allocates it (the kernel streams it around the caches)
    keeps_workspace = (args.training or args.backward) and per_unit > 0
    saved = CPU.empty((T, B, per_unit * H), f32, aligned=True) if keeps_workspace else None

    def forward():
        _cpu.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved,
                               bf16_matmul=args.bf16)

    run = forward
    if args.backward:
        forward()
        dy = rng.standard_normal((T, B, H)).astype(f32)
        dzx = np.empty((T, B, G * H), f32)
        dzh = np.empty_like(dzx) if cell == "gru" else None
        dh0, dc0 = np.empty((B, H), f32), np.empty((B, H), f32) if lstm else None

        def run():
            _cpu.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh,
                                    dh0, dc0, bf16_matmul=args.bf16)
    ms = median_time(run, args.repeats) * 1e3
    what = "backward" if args.backward else "training forward" if args.training else "forward"
    what += " (bf16 products)" if args.bf16 else ""
    print(f"{cell} {what} T={T} B={B} H={H}, "
          f"{args.threads} threads: {ms:.2f} ms, {2 * T * B * G * H * H / ms / 1e6:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
