"""Where the time of one layer goes: the parts of rnnfast.functional's forward and backward,
each timed alone (median of repeats after warm-up) with its GFLOP/s and % of the SGEMM rate
measured in the same run. Run: python benchmarks/profile_layer.py [--cells ...] [--shapes ...]

Parts: the input projection (one GEMM), the fused recurrence (forward and backward), and the
weight and input gradients (three GEMMs), all rnnfast's kernels (_cpu.gemm, _cpu.recurrent_*),
as rnnfast.functional calls them. The GEMMs are also timed through NumPy's BLAS for comparison,
and the recurrence right after a NumPy GEMM, to show what the BLAS library's worker threads
(which keep spinning for a while after a call) would cost the kernel's threads.
"""

import argparse
import time

import numpy as np

import rnnfast
from rnnfast import _cpu
from rnnfast.backends import CPU
from rnnfast.cell_registry import SPECS

SHAPES = [(100, 1, 256), (100, 16, 256), (100, 64, 256), (100, 64, 512), (50, 128, 1024),
          (1000, 8, 128)]


def median_time(fn, repeats, warmup=2):
    time.sleep(0.2)  # for the worker threads of the previous part (NumPy's BLAS) to go idle
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sgemm_rate(repeats):
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    return 2 * 2048 ** 3 / median_time(lambda: a @ a, repeats) / 1e9


def profile(cell, T, B, H, repeats, peak):
    I, G = H, SPECS[cell].gate_count
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.standard_normal((T, B, I)).astype(f32)
    w_ih = (rng.standard_normal((G * H, I)) / np.sqrt(H)).astype(f32)
    w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(f32)
    b = np.zeros(G * H, f32)
    h0 = np.zeros((B, H), f32)
    c0 = h0.copy() if cell == "lstm" else None
    zx = (x.reshape(T * B, I) @ w_ih.T).reshape(T, B, G * H)
    y = np.empty((T, B, H), f32)
    h_n = np.empty((B, H), f32)
    c_n = np.empty((B, H), f32) if cell == "lstm" else None
    per_unit = _cpu.saved_per_unit(cell)
    # aligned as rnnfast.functional allocates it (the kernel streams it around the caches)
    saved = CPU.empty((T, B, per_unit * H), f32, aligned=True) if per_unit else None
    dy = rng.standard_normal((T, B, H)).astype(f32)
    dzx = np.empty((T, B, G * H), f32)
    dzh = np.empty_like(dzx) if cell == "gru" else None
    dh0 = np.empty((B, H), f32)
    dc0 = np.empty((B, H), f32) if cell == "lstm" else None
    a = np.random.default_rng(1).standard_normal((512, 512)).astype(f32)

    def recurrence():
        _cpu.recurrent_forward(cell, zx, w_hh, b, h0, c0, y, h_n, c_n, saved)

    def recurrence_after_gemm():
        a @ a
        recurrence()

    def backward():
        _cpu.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh, dh0, dc0)

    x2, d, y2 = x.reshape(T * B, I), dzx.reshape(T * B, G * H), y.reshape(T * B, H)
    dx, dw_ih, dw_hh = np.empty((T * B, I), f32), np.empty((G * H, I), f32), np.empty_like(w_hh)

    def projection():
        _cpu.gemm(x2, w_ih, zx.reshape(T * B, G * H), trans_b=True)

    def gradient_gemms():
        _cpu.gemm(d, w_ih, dx)
        _cpu.gemm(d, x2, dw_ih, trans_a=True)
        _cpu.gemm(d, y2, dw_hh, trans_a=True)

    def gradient_gemms_blas():
        d @ w_ih
        d.T @ x2
        d.T @ y2

    gemm = T * B * G * 2 * I * H  # FLOPs of one T*B x I x G*H GEMM (I = H: also the recurrence)
    recurrence()
    backward()
    after = median_time(recurrence_after_gemm, repeats) - median_time(lambda: a @ a, repeats)
    parts = [
        ("input projection", median_time(projection, repeats), gemm),
        ("  same, NumPy's BLAS", median_time(lambda: x2 @ w_ih.T, repeats), gemm),
        ("recurrence forward", median_time(recurrence, repeats), gemm),
        ("  same, after a BLAS call", after, gemm),
        ("recurrence backward", median_time(backward, repeats), gemm),
        ("gradient GEMMs", median_time(gradient_gemms, repeats), 3 * gemm),
        ("  same, NumPy's BLAS", median_time(gradient_gemms_blas, repeats), 3 * gemm),
    ]
    print(f"\n{cell} T={T} B={B} I=H={H}")
    for name, seconds, flops in parts:
        rate = flops / seconds / 1e9
        print(f"  {name:26s} {seconds * 1e3:9.3f} ms  {rate:7.1f} GFLOP/s  "
              f"{100 * rate / peak:5.1f}% of SGEMM")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,rnn_tanh")
    parser.add_argument("--shapes", default=None, help="T,B,H;T,B,H;... (default: the CPU grid)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    shapes = SHAPES if args.shapes is None else [
        tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    peak = sgemm_rate(args.repeats)
    print(f"SGEMM (NumPy, 2048^2 float32): {peak:.0f} GFLOP/s; rnnfast threads: "
          f"{rnnfast.get_num_threads()}, ISA: {rnnfast.cpu_info()['isa']}")
    for cell in args.cells.split(","):
        for T, B, H in shapes:
            profile(cell, T, B, H, args.repeats, peak)


if __name__ == "__main__":
    main()
