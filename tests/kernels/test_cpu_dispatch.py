"""Instruction-set dispatch and the thread count of the CPU kernels."""

import os
import subprocess
import sys

import numpy as np
import pytest

import rnnfast
from rnnfast import _cpu


def test_cpu_info():
    info = rnnfast.cpu_info()
    assert info["isa"] in info["available"]
    assert set(info["available"]) <= set(info["compiled"])
    assert info["available"][0] == "baseline"
    assert info["num_threads"] == rnnfast.get_num_threads() >= 1


def test_best_isa_is_the_default():
    if os.environ.get("RNNFAST_ISA"):
        pytest.skip("RNNFAST_ISA is set in this environment")
    code = "import rnnfast; print(rnnfast.cpu_info()['isa'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items()
                                          if k != "RNNFAST_ISA"})
    assert out.stdout.strip() == _cpu.available_isas()[-1]


@pytest.mark.parametrize("name", _cpu.available_isas())
def test_environment_variable_forces_isa(name):
    code = "import rnnfast; print(rnnfast.cpu_info()['isa'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "RNNFAST_ISA": name})
    assert out.stdout.strip() == name


def test_unknown_isa_in_environment_warns_and_keeps_best():
    code = ("import warnings, rnnfast\n"
            "print(rnnfast.cpu_info()['isa'])")
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                         text=True, check=True, env={**os.environ, "RNNFAST_ISA": "sse9"})
    assert out.stdout.strip() == _cpu.available_isas()[-1]
    assert "RNNFAST_ISA ignored" in out.stderr and "sse9" in out.stderr


def test_set_isa_refuses_unknown():
    with pytest.raises(ValueError, match="unknown instruction set"):
        _cpu.set_isa("avx1024")


def test_environment_variable_sets_threads():
    code = "import rnnfast; print(rnnfast.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "RNNFAST_NUM_THREADS": "3"})
    assert out.stdout.strip() == "3"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="threads"):
        rnnfast.set_num_threads(bad)


def test_many_threads_large_problem_bitwise_equal():
    """More threads than blocks, blocks not dividing evenly, and a layer large enough that every
    thread gets work: results equal the single-thread ones bit for bit."""
    layer = rnnfast.LSTM(40, 200, seed=3)
    x = np.random.default_rng(1).standard_normal((6, 11, 40)).astype(np.float32)
    saved = rnnfast.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 5, 16):
            rnnfast.set_num_threads(threads)
            out, (h, c) = layer(x)
            dx, (dh, dc) = layer.backward(np.ones_like(out))
            results.append((out, h, c, dx, dh, dc, layer.grads["weight_hh_l0"]))
    finally:
        rnnfast.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
