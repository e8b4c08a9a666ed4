"""rnnfast.torch runs rnnfast's kernels on torch's OpenMP threads (share_torch_threads): the
same results as on rnnfast's own threads, no thread of rnnfast's started while sharing, back to
rnnfast's threads where an OpenMP team comes out smaller than asked and in a forked child.

Each case runs in a fresh interpreter: which threads exist is a property of the process, and
rnnfast's own workers, once started, stay."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.torch]

# Prints, one per line: whether sharing is on; the process's thread count after torch's
# parallel op and after rnnfast's forward and backward, each relative to the count before, and
# the forward kernel's thread count; whether the outputs and gradients equal those of rnnfast's
# own threads (bitwise); with an argument, whether a forked child's forward, on rnnfast's own
# threads, equals them too. (The child runs no torch op: torch's own OpenMP ops hang in a child
# forked after they ran, with or without rnnfast.)
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
    if pid == 0:
        same = (forward().numpy() == own[0].numpy()).all()
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
