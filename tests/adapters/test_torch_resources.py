"""rnnfast.torch runs on torch's resources on the CPU: rnnfast's kernels on torch's OpenMP
threads (share_torch_threads), the large GEMMs on torch's.

Threads: the same results as on rnnfast's own threads, no thread of rnnfast's started while
sharing, back to rnnfast's threads where an OpenMP team comes out smaller than asked and in a
forked child. Each of these cases runs in a fresh interpreter: which threads exist is a property
of the process, and rnnfast's own workers, once started, stay."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rnnfast_torch = pytest.importorskip("rnnfast.torch")

pytestmark = [pytest.mark.torch]

# Prints, one per line: whether sharing is on; the process's thread count after torch's
# parallel op and after rnnfast's forward and backward, each relative to the count before, and
# the forward kernel's thread count; whether the outputs and gradients equal those of rnnfast's
# own threads (bitwise); with an argument, whether a forked child's forward, on rnnfast's own
# threads, matches them too. (The child sets torch's threads to 1 first, as torch's DataLoader
# does in its workers: torch's own parallel ops hang in a child forked after they ran on
# several threads, with or without rnnfast.)
SCRIPT = r"""
import os, sys
import torch
import rnnfast, rnnfast.torch
from rnnfast import _cpu

def threads():
    return len(os.listdir("/proc/self/task"))

torch.set_num_threads(2)
rnnfast.set_num_threads(2)
print(_cpu.openmp_library() != "")
start = threads()
torch.randn(512, 512) @ torch.randn(512, 512)  # torch's parallel op starts its team
after_torch = threads()
torch.manual_seed(0)
m = rnnfast.torch.LSTM(64, 128)
x = torch.randn(20, 16, 64, requires_grad=True)

def forward():
    with torch.no_grad():
        return m(x)[0]

def run():
    x.grad = None
    m.zero_grad()
    y, _ = m(x)
    split = _cpu.last_split()["threads"]
    y.square().sum().backward()
    return [y.detach().clone(), x.grad.clone(), m.weight_hh_l0.grad.clone()], split

shared, split = run()
print(after_torch - start, threads() - after_torch, split)
rnnfast.torch.share_torch_threads(False)
own, _ = run()
print(all(torch.equal(a, b) for a, b in zip(shared, own)))
if len(sys.argv) > 1:
    rnnfast.torch.share_torch_threads(True)
    pid = os.fork()
    if pid == 0:  # one torch thread, as in torch's DataLoader workers
        torch.set_num_threads(1)
        same = torch.allclose(forward(), own[0], rtol=1e-6, atol=1e-6)
        os._exit(0 if _cpu.openmp_library() == "" and same else 1)
    print(os.waitpid(pid, 0)[1] == 0)
"""


def _run(*args, **env):
    result = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_kernels_run_on_torchs_threads_with_the_same_results():
    lines = _run("fork")
    assert lines[0] == "True", "torch's OpenMP runtime was not found"
    torch_team, rnnfast_new, split = map(int, lines[1].split())
    assert torch_team >= 1  # torch started at least one worker
    assert split == 2
    assert rnnfast_new == 0, "rnnfast started threads of its own while sharing torch's"
    assert lines[2] == "True", "results differ between torch's threads and rnnfast's"
    assert lines[3] == "True", "the forked child did not run on rnnfast's own threads"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_a_smaller_openmp_team_falls_back_to_rnnfasts_threads():
    # OMP_THREAD_LIMIT=1: torch's runtime gives one thread for two asked; the kernel runs on
    # rnnfast's own threads instead (one worker started), with the same results.
    lines = _run(OMP_THREAD_LIMIT="1")
    assert lines[0] == "True"
    torch_team, rnnfast_new, split = map(int, lines[1].split())
    assert split == 2
    assert rnnfast_new == 1
    assert lines[2] == "True"


@pytest.mark.parametrize("batch_first", [False, True])
def test_large_gemms_run_on_torchs(batch_first):
    # torch's profiler sees the input projection, the input gradient and the weight gradients
    # as torch's matrix products, inside the forward and the backward of rnnfast's operators.
    torch.manual_seed(0)
    m = rnnfast_torch.GRU(6, 10, num_layers=2, batch_first=batch_first)
    x = torch.randn(4, 3, 6, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y, _ = m(x)
        y.sum().backward()
    counts = {}
    for event in prof.events():
        if event.name in ("aten::mm", "aten::addmm", "aten::addmm_"):
            counts[event.name] = counts.get(event.name, 0) + 1
    # per layer: the input projection (addmm, with b_ih); dx, dW_ih and dW_hh's part from h0
    # (mm each); dW_hh's part from the other steps, accumulated (addmm_)
    assert counts == {"aten::addmm": 2, "aten::mm": 6, "aten::addmm_": 2}, counts


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
def test_torch_gemm_has_the_semantics_of_rnnfasts(trans_a, trans_b, bias, accumulate):
    # out = op(a) op(b) (+ bias), or out += ..., as rnnfast._cpu.gemm (float64: both exact to
    # rounding, whatever the order of their sums)
    from rnnfast import _cpu

    rng = np.random.default_rng(1)
    m, k, n = 7, 5, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    bias_ = rng.standard_normal(n) if bias else None
    start = rng.standard_normal((m, n))
    ours, theirs = start.copy(), start.copy()
    _cpu.gemm(a, b, ours, trans_a=trans_a, trans_b=trans_b, bias=bias_, accumulate=accumulate)
    rnnfast_torch._torch_gemm(a, b, theirs, trans_a, trans_b, bias_, accumulate)
    np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_torchs_float32_matmul_precision():
    # torch.set_float32_matmul_precision("medium") makes torch's CPU matrix products round
    # float32 operands to bfloat16 (on AMX or AVX512-BF16: differences of about 1e-3 here);
    # torch.nn's LSTM ignores it, and so must rnnfast.torch, whose GEMMs are torch's otherwise
    # (there on rnnfast's own: the same values up to float32's rounding, in another order).
    # (Passes trivially on a CPU where "medium" changes nothing.)
    torch.manual_seed(0)
    m = rnnfast_torch.LSTM(64, 96)
    x = torch.randn(6, 5, 64, requires_grad=True)

    def run():
        x.grad = None
        m.zero_grad()
        y, _ = m(x)
        y.square().sum().backward()
        return [y.detach().clone(), x.grad.clone(), m.weight_ih_l0.grad.clone()]

    exact = run()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        medium = run()
    finally:
        torch.set_float32_matmul_precision(before)
    for a, b in zip(exact, medium):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
