"""A small forward + backward of every cell on the GPU, on both recurrence paths (standard and
persistent: rnnfast.backends.cuda_recurrence), for compute-sanitizer (gpu_check.sh): float32
and float64 (the SIMT kernels) and float16 (on the persistent path, the tensor-core kernels).

Run: compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize_case.py [cell ...]
Shapes cross every tile boundary of the standard kernels (32 units, 16 batch rows, depth 32)
with tails, and give the persistent kernels a last block with fewer units than the others.
Exits non-zero if a result is NaN (the numerics themselves are checked by tests/test_cuda.py).
"""

import sys

import cupy
import numpy as np

from rnnfast import backends, functional as F
from rnnfast.cell_registry import CELLS, SPECS


def run(cell, dtype, steps=3, batch=19, inputs=7, hidden=37, seed=0):
    rng = np.random.default_rng(seed)
    g = SPECS[cell].gate_count * hidden
    k = 1 / np.sqrt(hidden)
    draw = lambda *shape, scale=1.0: cupy.asarray(scale * rng.standard_normal(shape), dtype)  # noqa: E731
    x, h0 = draw(steps, batch, inputs), draw(batch, hidden, scale=0.5)
    c0 = draw(batch, hidden, scale=0.5) if cell == "lstm" else None
    w_ih, w_hh = draw(g, inputs, scale=k), draw(g, hidden, scale=k)
    b_ih, b_hh = draw(g, scale=k), draw(g, scale=k)
    y, h_n, c_n, ctx = F.forward(cell, x, h0, w_ih, w_hh, b_ih=b_ih, b_hh=b_hh, c0=c0,
                                 training=True)
    grads = F.backward(ctx, draw(steps, batch, hidden), draw(batch, hidden),
                       draw(batch, hidden) if cell == "lstm" else None)
    F.forward(cell, x, h0, w_ih, w_hh, c0=c0, training=False)  # inference, no bias
    cupy.cuda.get_current_stream().synchronize()
    results = [y, h_n, c_n, *grads.values()]
    return all(bool(cupy.isfinite(r).all()) for r in results if r is not None)


def main():
    cells = sys.argv[1:] or list(CELLS)
    ok = True
    for path in ("standard", "persistent"):
        for cell in cells:
            for dtype in (np.float32, np.float64, np.float16):
                with backends.cuda_recurrence(path):
                    finite = run(cell, dtype)
                print(f"{path} {cell} {np.dtype(dtype).name}: "
                      f"{'finite' if finite else 'NaN/inf in results'}")
                ok &= finite
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
