"""The CUDA kernels' nvcc build: they compile for the oldest and the newest architecture the
package ships (sm_80, sm_90), and ptxas reports no register spills (a spill puts registers in
local memory, which costs every step of the recurrence). Runs wherever nvcc is installed; no GPU
needed. About a minute (two architectures, every cell and type).
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NVCC = os.environ.get("CUDACXX") or shutil.which("nvcc")


def _spills(ptxas_log):
    """[(kernel, line)] for each kernel whose ptxas -v statistics show spill stores or loads."""
    spilled, kernel = [], None
    for line in ptxas_log.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            kernel = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and (int(m.group(1)) or int(m.group(2))):
            spilled.append((kernel, line.strip()))
    return spilled


def test_spill_parser():
    log = ("ptxas info    : Function properties for _Z1kv\n"
           "    16 bytes stack frame, 12 bytes spill stores, 24 bytes spill loads\n"
           "ptxas info    : Function properties for _Z1jv\n"
           "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n")
    spill = "16 bytes stack frame, 12 bytes spill stores, 24 bytes spill loads"
    assert _spills(log) == [("_Z1kv", spill)]


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDACXX or put it on PATH)")
def test_recurrence_kernels_compile_without_spills(tmp_path):
    done = subprocess.run(
        [NVCC, "-std=c++17", "-O3", "-gencode", "arch=compute_80,code=sm_80",
         "-gencode", "arch=compute_90,code=sm_90", f"-I{ROOT / 'cpp' / 'include'}",
         f"-I{ROOT / 'cuda'}", "-Xptxas", "-v", "-c", str(ROOT / "cuda" / "recurrence.cu"),
         "-o", str(tmp_path / "recurrence.o")],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stdout + done.stderr
    assert "Compiling entry function" in log and "sm_80" in log and "sm_90" in log, log[-2000:]
    assert "warning" not in log.lower(), log[-4000:]
    spilled = _spills(log)
    assert not spilled, "\n".join(f"{k}: {line}" for k, line in spilled)
