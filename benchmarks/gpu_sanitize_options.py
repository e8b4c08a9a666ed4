"""rnnfast._cuda's kernels with every option (lengths from 0 to T, resets, the LSTM projection),
each cell, float32 and float64, on a small problem that crosses the kernels' tiles, against the
CPU kernels: for compute-sanitizer (gpu_check.sh runs it after gpu_sanitize_case.py).

Run: compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize_options.py [cell ...]
Exits non-zero if a result differs from the CPU kernels' (tests/**/test_cuda_kernels_emulated.py's
compare_with_cpu, which also poisons every output and the workspace with NaN first).
"""

import pathlib
import sys

import cupy
import numpy as np

from rnnfast import _cuda

TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(next(TESTS.glob("**/test_cuda_kernels_emulated.py")).parent)]
from test_cuda_kernels_emulated import compare_with_cpu  # noqa: E402

from _util import CELLS  # noqa: E402


def main():
    ok = True
    for cell in sys.argv[1:] or CELLS:
        for dtype in (np.float32, np.float64):
            name = f"{cell} {np.dtype(dtype).name} with lengths, resets" + (
                ", projection" if cell == "lstm" else "")
            try:
                compare_with_cpu(_cuda, cell, dtype, (3, 19, 37), True, True, True,
                                 cell == "lstm", cupy.asarray, cupy.asnumpy)
                print(f"{name}: matches the CPU kernels")
            except AssertionError as e:
                print(f"{name}: {e}")
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
