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


# ------------------------------------------------------------------ cache-derived tuning


def test_cpu_info_reports_caches_and_tuning():
    info = rnnfast.cpu_info()
    assert set(info["caches"]) == {"l1d", "l2", "l3"}
    assert all(isinstance(v, int) and v >= 0 for v in info["caches"].values())
    l2 = info["caches"]["l2"] or 1 << 20  # unknown: counted as 1 MB
    assert info["tuning"] == {"row_split_panel_bytes": l2 // 2, "gemm_block_bytes": l2 // 2}


def _sysfs_cache_bytes(level):
    """CPU 0's data or unified cache at `level` as Linux's sysfs gives it, or None."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, index)
        try:
            with open(os.path.join(path, "level")) as f_level, \
                    open(os.path.join(path, "type")) as f_type, \
                    open(os.path.join(path, "size")) as f_size:
                found, kind, size = int(f_level.read()), f_type.read().strip(), f_size.read()
        except (OSError, ValueError):
            continue
        if found == level and kind != "Instruction":
            size = size.strip()
            if size.isdigit():
                return int(size)
            unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:])
            return int(size[:-1]) * unit if unit and size[:-1].isdigit() else None
    return None


@pytest.mark.parametrize("level", [1, 2, 3])
def test_cache_sizes_are_those_linux_describes(level):
    # sysfs names the cache instance a core reaches (on a Zen 3 EPYC guest: an L3 of 32 MB
    # where glibc's sysconf answers the whole package's 256 MB).
    expected = _sysfs_cache_bytes(level)
    if expected is None:
        pytest.skip(f"no level-{level} data cache in this machine's sysfs")
    name = {1: "l1d", 2: "l2", 3: "l3"}[level]
    if name == "l2" and os.environ.get("RNNFAST_L2_CACHE_BYTES"):
        pytest.skip("RNNFAST_L2_CACHE_BYTES replaces the L2 size in this environment")
    assert rnnfast.cpu_info()["caches"][name] == expected


# The recurrence forward (training) and backward on 1 and 2 threads at batches of 3 to 12 (two
# row tiles, where the split may go by rows, are 3-4, 4-6 and 7-12 rows on the instruction sets
# with tiles of 2, 3 and 6 rows), for every cell and dtype: per case, the split of each kernel
# on 2 threads and a digest of every result.
_SPLIT_SCRIPT = """
import hashlib, numpy as np, rnnfast
from rnnfast import _cpu
from rnnfast.backends import CPU
T, H = 5, 70  # H: 2 threads even for the RNN at B = 7
for dtype in (np.float32, np.float64):
    for cell in ("lstm", "gru", "rnn_tanh"):
        for B in range(3, 13):
            G, S = _cpu.gate_count(cell), _cpu.saved_per_unit(cell)
            rng = np.random.default_rng(B)
            zx, dy = (rng.standard_normal((T, B, n)).astype(dtype) for n in (G * H, H))
            w_hh = rng.uniform(-0.3, 0.3, (G * H, H)).astype(dtype)
            b_hh = rng.standard_normal(G * H).astype(dtype)
            h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in "hc")
            c0 = c0 if cell == "lstm" else None
            digests, splits = set(), []
            for threads in (1, 2):
                rnnfast.set_num_threads(threads)
                y, h_n = np.empty((T, B, H), dtype), np.empty((B, H), dtype)
                c_n = np.empty((B, H), dtype) if c0 is not None else None
                saved = CPU.empty((T, B, S * H), dtype, aligned=True) if S else None
                _cpu.recurrent_forward(cell, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved)
                forward = _cpu.last_split()["split"]
                dzx = np.empty((T, B, G * H), dtype)
                dzh = np.empty_like(dzx) if cell == "gru" else None
                dh0 = np.empty((B, H), dtype)
                dc0 = np.empty((B, H), dtype) if c0 is not None else None
                _cpu.recurrent_backward(cell, w_hh, h0, c0, y, saved, dy, None, None, dzx, dzh,
                                        dh0, dc0)
                splits = [forward, _cpu.last_split()["split"]]
                digest = hashlib.sha256()
                for r in (y, h_n, c_n, saved, dzx, dzh, dh0, dc0):
                    if r is not None:
                        digest.update(r.tobytes())
                digests.add(digest.hexdigest())
            assert len(digests) == 1, (cell, B, "thread counts disagree")
            print(np.dtype(dtype).name, cell, B, *splits, digests.pop())
"""


def _lines_at_l2_sizes(script, isa):
    """script's output lines, split, run in a fresh interpreter on instruction set isa with an
    L2 of 1 byte and of 1 GB (RNNFAST_L2_CACHE_BYTES): (small, large)."""
    runs = []
    for l2 in ("1", str(1 << 30)):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, env={**os.environ, "RNNFAST_ISA": isa,
                                              "RNNFAST_L2_CACHE_BYTES": l2})
        runs.append([line.split() for line in out.stdout.splitlines()])
    return runs


@pytest.mark.parametrize("name", _cpu.available_isas())
def test_row_split_threshold_changes_speed_only(name):
    """The L2 size sets which recurrences split a step's rows between the threads: an L2 of 1
    byte (never) and of 1 GB (whenever the batch is two row tiles) give other splits and the
    same results, bit for bit, on 1 and 2 threads."""
    never, always = _lines_at_l2_sizes(_SPLIT_SCRIPT, name)
    assert len(never) == len(always) == 60
    for n, a in zip(never, always):
        assert n[:3] == a[:3] and n[-1] == a[-1], (n, a)  # same case, same results
        assert n[3:5] == ["columns", "columns"], n
    assert sum(a[3:5] == ["rows", "rows"] for a in always) >= 12, always  # 2 batches or more


# The GEMM in float32 and float64, A as given and transposed (copied block by block), on 1 and 2
# threads: per case, the block budget in use and a digest of C.
_GEMM_BLOCKS_SCRIPT = """
import hashlib, numpy as np, rnnfast
from rnnfast import _cpu
m, n, k = 700, 90, 300  # one pass over the depth; A's rows one block of 1 MB, or 15 of 48
for dtype in (np.float32, np.float64):
    for trans_a in (False, True):
        rng = np.random.default_rng(1)
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        digests = set()
        for threads in (1, 2):
            rnnfast.set_num_threads(threads)
            c = np.empty((m, n), dtype)
            _cpu.gemm(a, b, c, trans_a=trans_a)
            digests.add(hashlib.sha256(c.tobytes()).hexdigest())
        assert len(digests) == 1, (dtype, trans_a, "thread counts disagree")
        print(np.dtype(dtype).name, trans_a, _cpu.cpu_tuning()["gemm_block_bytes"], digests.pop())
"""


@pytest.mark.parametrize("name", _cpu.available_isas())
def test_gemm_block_budget_changes_speed_only(name):
    """The L2 size sets the GEMM's blocks of A's rows: an L2 of 1 byte (blocks of one chunk of
    rows) and of 1 GB (all rows one block) give the same C, bit for bit, on 1 and 2 threads."""
    small, large = _lines_at_l2_sizes(_GEMM_BLOCKS_SCRIPT, name)
    assert len(small) == len(large) == 4
    for s, g in zip(small, large):
        assert s[2] == "0" and g[2] == str(1 << 29), (s, g)  # the budgets differ
        assert s[:2] == g[:2] and s[3] == g[3], (s, g)  # same case, same C
