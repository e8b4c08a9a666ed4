"""rnnfast._cpu.activation (exp, tanh, sigmoid) of two builds compared bit for bit, float32 and
float64, on a dense grid of [-120, 120], tiny and huge magnitudes and special values (inf, NaN,
the clamps' edges), under each instruction set this CPU runs.

Run: python activations_bitwise.py OLD_PACKAGE_DIR NEW_PACKAGE_DIR
"""

import os
import subprocess
import sys

import numpy as np

ISAS = ("baseline", "avx2")


def outputs():
    """Every activation's output bytes on the grid, for the imported build."""
    from rnnfast import _cpu

    out = b""
    for dtype in (np.float32, np.float64):
        fi = np.finfo(dtype)
        grid = np.concatenate([
            np.linspace(-120, 120, 2_000_001), np.linspace(-1e-3, 1e-3, 200_001),
            np.geomspace(1e-40, 1e30, 100_000), -np.geomspace(1e-40, 1e30, 100_000),
            [0.0, -0.0, np.inf, -np.inf, np.nan, fi.max, -fi.max, fi.tiny, 87, 88, 89, -87, -88,
             -89, 708, 709, -708, -709, 40, 80, -40]]).astype(dtype)
        for name in ("exp", "tanh", "sigmoid"):
            result = np.empty_like(grid)
            _cpu.activation(name, grid, result)
            out += result.tobytes()
    return out


if len(sys.argv) == 2:  # a child: one build, one instruction set (RNNFAST_ISA)
    sys.stdout.buffer.write(outputs())
    sys.exit(0)
old, new = sys.argv[1:3]
for isa in ISAS:
    got = [subprocess.run([sys.executable, __file__, "child"], capture_output=True, check=True,
                          env={**os.environ, "PYTHONPATH": d, "RNNFAST_ISA": isa}).stdout
           for d in (old, new)]
    print(isa, "identical" if got[0] == got[1] else "DIFFERENT", len(got[0]), "bytes")
