"""The CUDA kernels' nvcc build: they compile for the oldest and the newest architecture the
package ships (sm_80, sm_90), ptxas reports no register spills (a spill puts registers in
local memory, which costs every step of the recurrence), and the persistent path's tensor-core
kernels hold tensor-core instructions (HMMA in ``cuobjdump -sass``). Runs wherever nvcc is
installed (the SASS check where cuobjdump is too); no GPU needed. A few minutes (two
architectures, every cell, type and rounding), compiled once for both tests.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NVCC = os.environ.get("CUDACXX") or shutil.which("nvcc")
_BESIDE_NVCC = pathlib.Path(NVCC).with_name("cuobjdump") if NVCC else None
CUOBJDUMP = (str(_BESIDE_NVCC) if _BESIDE_NVCC and _BESIDE_NVCC.exists()
             else shutil.which("cuobjdump"))  # beside nvcc in a CUDA toolkit, else on PATH
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDACXX or put it on "
                                                     "PATH)")


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


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """cuda/recurrence.cu compiled for sm_80 and sm_90: (the object file, ptxas' -v log)."""
    obj = tmp_path_factory.mktemp("nvcc") / "recurrence.o"
    done = subprocess.run(
        [NVCC, "-std=c++17", "-O3", "-gencode", "arch=compute_80,code=sm_80",
         "-gencode", "arch=compute_90,code=sm_90", f"-I{ROOT / 'cpp' / 'include'}",
         f"-I{ROOT / 'cuda'}", "-Xptxas", "-v", "-c", str(ROOT / "cuda" / "recurrence.cu"),
         "-o", str(obj)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return obj, done.stdout + done.stderr


def _tensor_core_instructions(sass):
    """{kernel: HMMA instructions} for each kernel of ``cuobjdump -sass`` output (both
    architectures' counts added)."""
    counts, kernel = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            kernel = m.group(1)
            counts.setdefault(kernel, 0)
        elif kernel and re.search(r"\bHMMA\.", line):
            counts[kernel] += 1
    return counts


def test_sass_parser():
    sass = ("\t\tFunction : _Z1kv\n        /*0100*/   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n"
            "\t\tFunction : _Z1jv\n        /*0100*/   FFMA R4, R8, R12, R4 ;\n")
    assert _tensor_core_instructions(sass) == {"_Z1kv": 1, "_Z1jv": 0}


@needs_nvcc
@pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump not found (beside nvcc or on PATH)")
def test_persistent_tensor_core_kernels_use_the_tensor_cores(build):
    done = subprocess.run([CUOBJDUMP, "-sass", str(build[0])], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = _tensor_core_instructions(done.stdout)
    tensor_cores = {k: n for k, n in counts.items() if "TensorCores" in k}
    # forward: 4 cells x 3 roundings
    assert len(tensor_cores) == 12, sorted(counts)
    assert all(n >= 2 for n in tensor_cores.values()), tensor_cores  # an mma on each arch
    assert not any(n for k, n in counts.items() if k not in tensor_cores)


@needs_nvcc
def test_recurrence_kernels_compile_without_spills(build):
    log = build[1]
    assert "Compiling entry function" in log and "sm_80" in log and "sm_90" in log, log[-2000:]
    assert "warning" not in log.lower(), log[-4000:]
    spilled = _spills(log)
    assert not spilled, "\n".join(f"{k}: {line}" for k, line in spilled)
