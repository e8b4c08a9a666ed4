"""The CUDA kernels' nvcc build: they compile for the oldest and the newest architecture the
package ships (sm_80, sm_90), ptxas reports no register spills (a spill puts registers in
local memory, which costs every step of the recurrence), and the tensor-core kernels of both
paths, and only they, hold tensor-core instructions of their operand type: ``mma.sync`` in
the PTX that nvcc keeps from the same build (always, wherever nvcc is: CI has nvcc without
cuobjdump), and HMMA in the SASS (``cuobjdump -sass``, where cuobjdump is installed). No GPU
needed. A few minutes (two architectures, every cell, type and rounding), compiled once for
all tests.
"""

import collections
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NVCC = os.environ.get("CUDACXX") or shutil.which("nvcc")
_BESIDE_NVCC = pathlib.Path(NVCC).with_name("cuobjdump") if NVCC else None
# $CUOBJDUMP, else beside nvcc in a CUDA toolkit, else on PATH.
CUOBJDUMP = os.environ.get("CUOBJDUMP") or (
    str(_BESIDE_NVCC) if _BESIDE_NVCC and _BESIDE_NVCC.exists() else shutil.which("cuobjdump"))
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
    """cuda/recurrence.cu compiled for sm_80 and sm_90: (the object file, ptxas' -v log, the
    PTX of each architecture, which ptxas compiled: nvcc -keep leaves it beside the object)."""
    folder = tmp_path_factory.mktemp("nvcc")
    obj = folder / "recurrence.o"
    done = subprocess.run(
        [NVCC, "-std=c++17", "-O3", "-gencode", "arch=compute_80,code=sm_80",
         "-gencode", "arch=compute_90,code=sm_90", f"-I{ROOT / 'cpp' / 'include'}",
         f"-I{ROOT / 'cuda'}", "-Xptxas", "-v", "-keep", "-keep-dir", str(folder), "-c",
         str(ROOT / "cuda" / "recurrence.cu"), "-o", str(obj)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    ptx = [(folder / f"recurrence.compute_{arch}.ptx").read_text() for arch in (80, 90)]
    return obj, done.stdout + done.stderr, ptx


# The tensor-core instruction of each operand type (TensorCores<mma::Op> in a kernel's name).
MMA_INSTRUCTIONS = {"Bf16": "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                    "F16": "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
                    "Tf32": "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"}


# The kernels that take a kind of product (Simt or TensorCores<Op>), forward and backward, and
# how many of each there are per cell and operand type: the standard path's step kernels, and
# the persistent path's (the forward's for one direction and for both directions of a layer at
# once).
PRODUCT_KERNELS = {"forward_step": 1, "backward_step": 1, "forward_persistent": 2,
                   "backward_persistent": 1}


def _check_tensor_core_kernels(instructions, op_of):
    """instructions: {function: its tensor-core instructions, both architectures'}. Exactly the
    TensorCores kernels hold any: 4 cells x 3 operand types of each of PRODUCT_KERNELS (times
    its count), at least one per architecture, each of its kernel's operand type (op_of(name,
    instruction): whether the instruction is that of the Op in the name)."""
    tensor_cores = {k: v for k, v in instructions.items() if "TensorCores" in k}
    kinds = collections.Counter(
        re.search(r"\d(%s)I" % "|".join(PRODUCT_KERNELS), k).group(1) for k in tensor_cores)
    assert kinds == {k: 12 * n for k, n in PRODUCT_KERNELS.items()}, sorted(instructions)
    assert all(len(v) >= 2 for v in tensor_cores.values()), tensor_cores
    assert not {k: v for k, v in instructions.items() if v and k not in tensor_cores}
    wrong = {k: v for k, v in tensor_cores.items() if not all(op_of(k, i) for i in v)}
    assert not wrong, wrong


def _op(kernel):
    """The operand type of a TensorCores kernel's (mangled) name: Bf16, F16 or Tf32."""
    return re.search(r"TensorCores.*?(Bf16|F16|Tf32)", kernel).group(1)


def _ptx_mma(ptx):
    """{function: [its mma instructions]} for each kernel (.entry) and device function (.func)
    of a PTX file, in order."""
    found, function = {}, None
    for line in ptx.splitlines():
        m = re.search(r"\.(?:entry|func)\s+(?:\([^)]*\)\s*)?([\w$]+)", line)
        if m:
            function = m.group(1)
            found.setdefault(function, [])
        elif function and re.match(r"\s*mma\.", line):
            found[function].append(line.split()[0])
    return found


def test_ptx_parser():
    ptx = ("\t// .globl\t_Z1kv\n.visible .entry _Z1kv(\n\t.param .u64 _Z1kv_param_0\n)\n{\n"
           "\tmma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1, %f2, %f3, %f4}, "
           "{%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};\n}\n"
           ".func  (.param .b32 func_retval0) _Z1fv(\n)\n{\n\tfma.rn.f32 %f1, %f2, %f3, %f4;\n}\n")
    assert _ptx_mma(ptx) == {"_Z1kv": [MMA_INSTRUCTIONS["Tf32"]], "_Z1fv": []}


def _tensor_core_instructions(sass):
    """{kernel: [its HMMA instructions]} for each kernel of ``cuobjdump -sass`` output (both
    architectures' added)."""
    found, kernel = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            kernel = m.group(1)
            found.setdefault(kernel, [])
        else:
            m = re.search(r"\b(HMMA\.[^;]*;)", line)
            if kernel and m:
                found[kernel].append(m.group(1))
    return found


def test_sass_parser():
    sass = ("\t\tFunction : _Z1kv\n        /*0100*/   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n"
            "\t\tFunction : _Z1jv\n        /*0100*/   FFMA R4, R8, R12, R4 ;\n")
    assert _tensor_core_instructions(sass) == {"_Z1kv": ["HMMA.16816.F32.BF16 R4, R8, R12, R4 ;"],
                                               "_Z1jv": []}


@needs_nvcc
def test_tensor_core_kernels_have_mma_in_their_ptx(build):
    instructions = {}
    for ptx in build[2]:
        for function, found in _ptx_mma(ptx).items():
            instructions.setdefault(function, []).extend(found)
    _check_tensor_core_kernels(instructions, lambda k, i: i == MMA_INSTRUCTIONS[_op(k)])


@needs_nvcc
@pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump not found ($CUOBJDUMP, beside nvcc "
                                              "or on PATH); the PTX test checks the mma there")
def test_tensor_core_kernels_use_the_tensor_cores(build):
    done = subprocess.run([CUOBJDUMP, "-sass", str(build[0])], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # As ptxas 13 spells them for sm_80 and sm_90 (float16 has no type suffix).
    sass = {"Bf16": r"HMMA\.16816\.F32\.BF16 ", "F16": r"HMMA\.16816\.F32 ",
            "Tf32": r"HMMA\.1688\.F32\.TF32 "}
    _check_tensor_core_kernels(_tensor_core_instructions(done.stdout),
                               lambda k, i: re.match(sass[_op(k)], i) is not None)


@needs_nvcc
def test_recurrence_kernels_compile_without_spills(build):
    log = build[1]
    assert "Compiling entry function" in log and "sm_80" in log and "sm_90" in log, log[-2000:]
    assert "warning" not in log.lower(), log[-4000:]
    spilled = _spills(log)
    assert not spilled, "\n".join(f"{k}: {line}" for k, line in spilled)
