"""The benchmark suite (rnnfast.bench) on a tiny grid: every installed peer, every mode; the
output files and their fields; a wrong peer is flagged; --compare, --plot; --device cuda
without a usable GPU, and on the stand-in for CuPy (its CUDA paths, bfloat16); the ONNX model
of stacked and bidirectional networks."""

import copy
import csv
import functools
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rnnfast
from rnnfast import backends
from rnnfast.bench import cli, main, report, runner
from rnnfast.bench.grids import (
    GRIDS_DIR,
    Row,
    Target,
    grid_path,
    load_grid,
    load_targets,
    packaged_grids,
)
from rnnfast.bench.peers import (
    PEERS,
    NumpyReferencePeer,
    OnnxRuntimePeer,
    RnnfastPeer,
    TorchPeer,
    make_problem,
)
from rnnfast.bench.report import FIELDS
from rnnfast.bench.runner import PEER_SLACK, CpuTimer, compare_outputs, run_row

# No pause before each implementation's timing: these runs test the suite, not the speed.
# No re-runs of rows timed under load either: the probes' count is then known.
NO_PAUSE = ["--settle", "0", "--retry-loaded", "0"]
TINY_SHAPE = [*NO_PAUSE, "--shapes", "3,2,5,4"]
TINY = [*TINY_SHAPE, "--cells", "lstm", "gru", "rnn_tanh", "rnn_relu",
        "--modes", "inference", "train", "step", "--repeats", "2", "--warmup", "0", "--quiet"]
INSTALLED = {p.name for p in PEERS[1:] if p.available("cpu")}
HAS_CELLS = hasattr(rnnfast, "LSTMCell")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = main(TINY + ["--json", str(out / "run.json"), "--csv", str(out / "run.csv")])
    with open(out / "run.json") as f:
        return status, json.load(f), out


def test_tiny_grid_every_installed_peer_agrees(tiny_run):
    status, result, _ = tiny_run
    assert status == 0
    assert set(result["peers"]) == INSTALLED
    records = result["records"]
    assert len({(r["cell"], r["mode"]) for r in records}) == 12
    for r in records:
        step_without_cells = r["mode"] == "step" and not HAS_CELLS
        if r["peer"] == "rnnfast" and step_without_cells:
            assert r["status"] == "unsupported" and "cells not available" in r["check"]
        elif r["peer"] == "onnxruntime" and r["mode"] != "inference":
            assert r["status"] == "unsupported" and "inference only" in r["check"]
        else:
            assert r["status"] == "ok", r
            assert r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"]
            assert r["repeats"] == 2
            assert (r["ratio"] is None) == (r["peer"] == "rnnfast")
    measured = {(r["cell"], r["mode"], r["peer"]) for r in records if r["status"] == "ok"}
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for peer in INSTALLED:
            assert (cell, "inference", peer) in measured
            if peer != "onnxruntime":
                assert (cell, "train", peer) in measured
                assert ((cell, "step", peer) in measured) == HAS_CELLS


def test_json_and_csv_fields(tiny_run):
    _, result, out = tiny_run
    for key in ("schema", "created", "machine", "cpu_features", "cuda", "versions", "commit",
                "commit_source", "peers", "peak_gflops", "peak_method", "settings", "records"):
        assert key in result
    assert set(result["machine"]) == {"hostname", "platform", "cpu_model", "cores",
                                      "cores_available"}
    assert result["cpu_features"]["isa"] in result["cpu_features"]["available"]
    assert result["versions"]["rnnfast"] == rnnfast.__version__
    assert result["settings"]["threads"] == rnnfast.get_num_threads()
    assert result["peak_gflops"] > 0
    lstm_train = next(r for r in result["records"]
                      if (r["cell"], r["mode"], r["peer"]) == ("lstm", "train", "rnnfast"))
    assert set(lstm_train) == set(FIELDS) and lstm_train["path"] is None
    assert lstm_train["flops"] == 3 * 3 * 2 * 4 * (2 * 5 * 4 + 2 * 4 * 4)
    with open(out / "run.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS and len(rows) == len(result["records"])


def test_load_probe_brackets_every_row(tiny_run):
    """The load probe runs before every row and after the last; each measured record carries
    the lower of the two probes around its row."""
    _, result, _ = tiny_run
    rates = result["load_probe"]["gflops"]
    assert result["load_probe"]["n"] == runner.LOAD_PROBE_N and all(r > 0 for r in rates)
    rows = list(dict.fromkeys((r["cell"], r["mode"]) for r in result["records"]))
    assert len(rates) == len(rows) + 1
    for r in result["records"]:
        around = rates[rows.index((r["cell"], r["mode"])):][:2]
        if r["status"] == "unsupported":
            assert "load_gflops" not in r
        else:
            assert r["load_gflops"] == min(around)


def test_rows_timed_under_load_are_marked(tiny_run):
    """A row whose probe read under report.LOADED of the run's best gets * on its % peak and the
    table says why; a steady run, and a file from before the probe, have no mark."""
    _, result, _ = tiny_run
    steady = copy.deepcopy(result)
    steady["load_probe"]["gflops"] = [100.0] * len(steady["load_probe"]["gflops"])
    for r in steady["records"]:
        if "load_gflops" in r:
            r["load_gflops"] = 100.0
    table = report.format_table(steady)
    assert "*" not in table
    assert "read 100.0-100.0 GFLOP/s" in table.splitlines()[-2]

    loaded = copy.deepcopy(steady)
    first = next(r for r in loaded["records"] if r["peer"] == "rnnfast" and r["status"] == "ok")
    first["load_gflops"] = 100.0 * report.LOADED - 1
    loaded["load_probe"]["gflops"][0] = first["load_gflops"]
    table = report.format_table(loaded)
    assert table.count("%*") == 1 and "* marks rows it read under 80%" in table

    before = copy.deepcopy(result)
    del before["load_probe"]
    for r in before["records"]:
        r.pop("load_gflops", None)
    table = report.format_table(before)
    assert "*" not in table and "load:" not in table


@pytest.mark.parametrize("retries, second, kept, attempts", [
    (0, None, 1, 1),         # no re-runs asked for: the loaded attempt stays
    (1, (40.0, 40.0), 1, 2),  # the re-run read lower still: the first attempt stays
    (2, (40.0, 40.0), 3, 3),  # the second re-run read the machine idle: it replaces the first
])
def test_rows_timed_under_load_are_timed_again(monkeypatch, retries, second, kept, attempts):
    """A row whose load probe read under report.LOADED of the best is timed again at the end,
    up to retry_loaded times, with a probe of its own before and after each attempt, and keeps
    the attempt the probe read highest around; a row timed on an idle machine runs once."""
    # Probes: before row 0, after it, after row 1 (loaded: 50); then per re-run, before and
    # after: `second`, then the machine idle.
    rates = iter([100.0, 100.0, 50.0, *(second or ()), 100.0, 95.0])
    monkeypatch.setattr(runner, "measure_peak", lambda *a, **k: (100.0, "stand-in GEMM"))
    monkeypatch.setattr(runner, "_rate", lambda *a, **k: next(rates))
    calls = []

    def one_record(row, peers, settings, timer):
        calls.append(row.cell)
        return [{"cell": row.cell, "status": "ok", "gflops": 1.0, "call": len(calls)}]

    monkeypatch.setattr(runner, "run_row", one_record)
    rows = [Row("lstm", "inference", 2, 1, 3, 2), Row("gru", "inference", 2, 1, 3, 2)]
    settings = {"device": "cpu", "dtype": "float32", "retry_loaded": retries}
    _, _, records, probes = runner.run_suite(rows, [], settings, quiet=True)
    assert calls == ["lstm", "gru"] + ["gru"] * (attempts - 1)
    assert len(probes) == 3 + 2 * (attempts - 1)
    idle, loaded = records
    assert (idle["call"], idle["attempts"], idle["load_gflops"]) == (1, 1, 100.0)
    # The kept attempt's call number: 2 (the first of the loaded row) or 2 + its re-runs.
    assert loaded["call"] == 1 + kept and loaded["attempts"] == attempts
    assert loaded["load_gflops"] == {1: 50.0, 3: 95.0}[kept]
    if attempts == 1:
        return
    result = {"load_probe": {"n": runner.LOAD_PROBE_N, "gflops": probes}, "records": records}
    assert "1 row it read under 80% of its best around was timed again" in report._load_lines(
        result)[1][0]


def test_peak_is_the_higher_of_the_start_and_the_end(monkeypatch, tmp_path):
    """The GEMM rate is measured before the rows and after them; % peak is against the higher,
    so that a start slowed by other work does not inflate every row's share."""
    rates = iter([100.0, 200.0])
    monkeypatch.setattr(runner, "measure_peak", lambda *a, **k: (next(rates), "stand-in GEMM"))
    assert main([*NO_PAUSE, "--shapes", "2,1,3,2", "--cells", "rnn_tanh", "--modes", "inference",
                 "--peers", "numpy", "--repeats", "1", "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["peak_gflops"] == 200.0
    assert result["peak_method"] == ("stand-in GEMM; the higher of 100.0 at the start and 200.0 "
                                     "at the end")
    for r in result["records"]:
        assert r["percent_of_peak"] == pytest.approx(r["gflops"] / 2)


def test_commit_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNFAST_BENCH_COMMIT", "abc123")
    assert main([*NO_PAUSE, "--shapes", "2,1,3,2", "--cells", "rnn_tanh", "--modes", "inference",
                 "--peers", "numpy", "--repeats", "1", "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["commit"], result["commit_source"]) == ("abc123", "RNNFAST_BENCH_COMMIT")


class WrongPeer(NumpyReferencePeer):
    """The reference with its last output (in training a bias gradient) off by ``error``
    (relative; 1% by default)."""

    def __init__(self, error=0.01):
        super().__init__()
        self.error = error

    def build(self, problem):
        run = super().build(problem)

        def wrong(collect=False):
            out = run(collect)
            if collect:
                last = list(out)[-1]
                out[last] = out[last] * (1 + self.error)
            return out
        return wrong


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_wrong_peer_is_flagged_not_a_win(monkeypatch, tmp_path, capsys, mode):
    monkeypatch.setattr(cli, "PEERS", [PEERS[0], WrongPeer()])
    status = main([*NO_PAUSE, "--shapes", "3,2,5,4", "--cells", "gru", "--modes", mode, "--repeats",
                   "1", "--quiet", "--json", str(tmp_path / "r.json")])
    assert status == 1
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    ours, wrong = records
    assert wrong["peer"] == "numpy" and wrong["status"] == "mismatch"
    assert wrong["ratio"] is None and wrong["check"].startswith("MISMATCH max rel err")
    assert ours["status"] == "ok" and ours["max_rel_err"] <= 1e-5  # checked on its own
    line = capsys.readouterr().out.splitlines()[2]
    assert "MISMATCH" in line and "x  " not in line


def test_peer_within_its_slack_is_ok(monkeypatch, tmp_path):
    # A peer off by 1e-5 (past the rule's float32 bound here, about 2e-6, but within
    # PEER_SLACK times it: another summation order) is checked ok, and the run succeeds.
    monkeypatch.setattr(cli, "PEERS", [PEERS[0], WrongPeer(1e-5)])
    status = main([*NO_PAUSE, "--shapes", "3,2,5,4", "--cells", "gru", "--modes", "train",
                   "--repeats", "1", "--quiet", "--json", str(tmp_path / "r.json")])
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    peer = records[1]
    assert status == 0 and peer["status"] == "ok"
    assert 3e-6 < peer["max_rel_err"] < PEER_SLACK * 3e-6


def test_compare_and_plot(tiny_run, tmp_path, capsys):
    _, result, out = tiny_run
    assert main(["--compare", str(out / "run.json"), str(out / "run.json")]) == 0
    text = capsys.readouterr().out
    timed = [r for r in result["records"] if r.get("median_s")]
    assert text.count(" 1.00\n") == len(timed)
    if "torch" not in INSTALLED:
        pytest.skip("--plot draws the speedup against torch, which is not installed")
    pytest.importorskip("matplotlib")
    png = tmp_path / "speedup.png"
    assert main(["--load", str(out / "run.json"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cuda_without_backend_exits_with_a_message():
    if cli.check_cuda() is None:
        pytest.skip("rnnfast has a usable CUDA backend here")
    proc = subprocess.run([sys.executable, "-m", "rnnfast.bench", "--device", "cuda"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rnnfast-bench: --device cuda: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cuda_paths_are_refused_on_the_cpu(capsys):
    with pytest.raises(SystemExit):
        main([*TINY, "--cuda-paths", "standard"])
    assert "--cuda-paths needs --device cuda" in capsys.readouterr().err


STAND_IN_GPU = "Stand-in GPU (sm_90)"


def _without_bfloat16(copy):
    """The stand-in's asarray or array (``copy``), refusing bfloat16 as CuPy does."""
    def refusing(a, dtype=None):
        assert not rnnfast._dtypes.is_bfloat16(np.asarray(a).dtype), "CuPy has no bfloat16"
        return copy(a, dtype)
    return refusing


@pytest.fixture
def stand_in_gpu(fake_cupy, monkeypatch):
    """--device cuda on the stand-in for CuPy (tests/_fake_cupy.py: the CUDA kernels emulated),
    named STAND_IN_GPU, refusing bfloat16 as CuPy does, its peak measured on small matrices.
    Yields the record of the CUDA paths of the backend's recurrence calls."""
    for name in ("asarray", "array"):
        monkeypatch.setattr(fake_cupy, name, _without_bfloat16(getattr(fake_cupy, name)))
    monkeypatch.setattr(cli, "check_cuda", lambda: None)
    monkeypatch.setattr(rnnfast, "cuda_info", lambda: {
        "built": True, "cupy": fake_cupy.__version__, "devices": [STAND_IN_GPU], "error": None})
    monkeypatch.setattr(runner, "measure_peak", functools.partial(runner.measure_peak, n=64))
    paths, path = [], backends.CudaBackend._path

    def recorded():
        paths.append(path())
        return paths[-1]
    monkeypatch.setattr(backends.CudaBackend, "_path", staticmethod(recorded))
    yield paths


def test_cuda_paths_each_a_row(stand_in_gpu, tmp_path, capsys):
    """--device cuda times rnnfast on both recurrence paths by default, each its own record
    (field path) and table line; the header names the GPU."""
    assert main([*TINY_SHAPE, "--cells", "gru", "--modes", "inference", "train", "step",
                 "--repeats", "1", "--budget", "1e-9", "--quiet", "--device", "cuda",
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["gpu"] == STAND_IN_GPU and result["settings"]["cuda_paths"] == [
        "standard", "persistent"]
    assert [(r["mode"], r["path"], r["status"]) for r in result["records"]] == [
        (m, p, "ok") for m in ("inference", "train", "step") for p in ("standard", "persistent")]
    assert set(stand_in_gpu) == {"standard", "persistent"}
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[6] == "path" and [line.split()[6] for line in table[2:8]] == [
        "standard", "persistent"] * 3
    assert table[-1].endswith(f"device cuda ({STAND_IN_GPU})")


class HostPeerOnGpuRuns(NumpyReferencePeer):
    """The NumPy reference, taken as a peer of --device cuda runs (it computes on the host)."""

    devices = ("cpu", "cuda")


def test_a_peer_is_timed_once_and_compared_with_each_path(stand_in_gpu, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "PEERS", [PEERS[0], HostPeerOnGpuRuns()])
    assert main([*TINY_SHAPE, "--cells", "gru", "--modes", "inference", "--repeats", "1",
                 "--budget", "1e-9", "--quiet", "--device", "cuda",
                 "--json", str(tmp_path / "r.json")]) == 0
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    assert [(r["peer"], r["path"]) for r in records] == [
        ("rnnfast", "standard"), ("numpy", "standard"), ("rnnfast", "persistent"),
        ("numpy", "persistent")]
    ours, theirs = records[::2], records[1::2]
    assert theirs[0]["median_s"] == theirs[1]["median_s"]  # one timing
    for our, their in zip(ours, theirs):  # one round, one call each
        assert their["ratio"] == pytest.approx(their["median_s"] / our["median_s"])


def test_a_call_the_persistent_path_cannot_run_is_reported(stand_in_gpu, tmp_path, capsys):
    """A float64 LSTM of H = 256: its W_hh does not fit in the (emulated) device's shared
    memory, so the persistent path refuses it, with the reason, and the row goes on."""
    assert main([*NO_PAUSE, "--shapes", "1,1,1,256", "--cells", "lstm", "--modes", "inference",
                 "--dtype", "float64", "--repeats", "1", "--budget", "1e-9", "--quiet",
                 "--device", "cuda", "--json", str(tmp_path / "r.json")]) == 0
    standard, persistent = json.loads((tmp_path / "r.json").read_text())["records"]
    assert (standard["path"], standard["status"]) == ("standard", "ok")
    assert (persistent["path"], persistent["status"]) == ("persistent", "unsupported")
    assert persistent["check"].startswith("path='persistent' cannot run this call: ")
    assert "shared memory" in persistent["check"]
    assert capsys.readouterr().out.splitlines()[3].endswith(persistent["check"])


def test_bfloat16_on_cuda_computes_as_bfloat16_arrays(stand_in_gpu):
    """On the GPU rnnfast gets a bfloat16 problem as float32 CuPy arrays (CuPy has no bfloat16,
    and here neither has the stand-in), computed as bfloat16: its outputs are, bit for bit,
    those of the bfloat16 arrays themselves on the emulated CUDA backend."""
    row = Row("lstm", "train", 3, 2, 5, 4)
    on_gpu = RnnfastPeer(path="standard").build(make_problem(row, "bfloat16", "cuda"))(True)
    with backends.emulate_cuda():
        native = RnnfastPeer().build(make_problem(row, "bfloat16"))(True)
    assert on_gpu.keys() == native.keys()
    for name, value in on_gpu.items():
        assert value.dtype == np.float32, name
        np.testing.assert_array_equal(value, native[name].astype(np.float32), err_msg=name)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_16bit_dtypes_run(request, tmp_path, device):
    """--dtype bfloat16 and float16 on every mode, every installed peer on the CPU: checked ok."""
    if device == "cuda":
        request.getfixturevalue("stand_in_gpu")
    for dtype in ("bfloat16", "float16"):
        assert main([*TINY_SHAPE, "--cells", "lstm", "--modes", "inference", "train", "step",
                     "--repeats", "1", "--budget", "1e-9", "--quiet", "--dtype", dtype,
                     "--device", device, "--json", str(tmp_path / "r.json")]) == 0
        records = json.loads((tmp_path / "r.json").read_text())["records"]
        assert all(r["status"] == "ok" or r["peer"] != "rnnfast" for r in records), records


def test_bfloat16_peak_measures_only_the_faster_gemm(monkeypatch):
    """The CPU's bfloat16 peak: both GEMMs timed on the probe's size, the faster one alone at n
    (the slower may be PyTorch's loop, minutes at n = 2048), and the method names both rates."""
    import time

    calls = []

    def products(n):
        def make(lib, seconds):
            return lambda: (calls.append((lib, n)), time.sleep(seconds))
        return {"slow": make("slow", 2e-3), "fast": make("fast", 0.0)}
    monkeypatch.setattr(runner, "_bf16_products", products)
    rate, method = runner.measure_peak("cpu", CpuTimer(), n=512, dtype="bfloat16")
    assert {n for lib, n in calls if lib == "slow"} == {runner.PROBE_N}
    assert {n for lib, n in calls if lib == "fast"} == {runner.PROBE_N, 512}
    assert method.startswith("fast of 512x512") and "slow " in method and rate > 0


def test_help_through_python_m():
    proc = subprocess.run([sys.executable, "-m", "rnnfast.bench", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--compare" in proc.stdout and "--full" in proc.stdout


def test_grids():
    assert {"default_cpu", "full_cpu", "default_cuda"} <= set(packaged_grids())
    rows, _ = load_grid(grid_path("default"))
    issue_shapes = {(100, 1, 256, 256), (100, 16, 256, 256), (100, 64, 256, 256),
                    (100, 64, 512, 512), (50, 128, 1024, 1024), (1000, 8, 128, 128)}
    assert {r.shape for r in rows if r.mode != "step"} == issue_shapes
    assert {(r.cell, r.mode) for r in rows} == {
        (c, m) for c in ("lstm", "gru", "rnn_tanh") for m in ("inference", "train", "step")}
    assert {(r.B, r.H) for r in rows if r.mode == "step"} == {(1, 256)}
    for path in GRIDS_DIR.glob("*.json"):
        rows, description = load_grid(path)
        assert rows and description
    # Stacked, bidirectional: layers after the first see 2*H inputs.
    row = Row("gru", "inference", 10, 2, 3, 4, layers=2, directions=2)
    assert row.flops() == 2 * 10 * 2 * 3 * ((2 * 3 * 4 + 2 * 16) + (2 * 8 * 4 + 2 * 16))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_stacked_bidirectional_peers_agree(cell):
    """ONNX Runtime's model (gate orders, stacking, directions) against PyTorch, where rnnfast
    does not run such networks yet."""
    if not {"torch", "onnxruntime"} <= INSTALLED:
        pytest.skip("needs torch and onnxruntime")
    p = make_problem(Row(cell, "inference", 4, 3, 5, 4, layers=2, directions=2), np.float32,
                     threads=1)
    err, where = compare_outputs(TorchPeer().build(p)(True), OnnxRuntimePeer().build(p)(True))
    assert err < 1e-5, where


def test_unsupported_rows_are_reported(tmp_path):
    assert main([*NO_PAUSE, "--shapes", "3,2,5,4", "--cells", "lstm", "--layers", "2",
                 "--directions", "2", "--repeats", "1", "--quiet", "--json",
                 str(tmp_path / "r.json")]) == 0
    for r in json.loads((tmp_path / "r.json").read_text())["records"]:
        if r["peer"] == "rnnfast" and r["status"] == "unsupported":
            assert "not implemented" in r["check"]
        else:
            assert r["status"] in ("ok", "unsupported")


@pytest.mark.parametrize("budget", [1e-9, 60.0])
def test_time_budget_sets_repeats(tmp_path, budget):
    """A budget shorter than any call: no warm-up, the minimum of 2 repeats, one per round; a
    long one: the --repeats asked for, two per round, after warm-up calls filling 0.1 s in each
    round (many, for calls this small)."""
    assert main([*NO_PAUSE, "--shapes", "3,2,5,4", "--cells", "lstm", "--modes", "inference",
                 "--repeats", "4", "--rounds", "2", "--warmup", "1", "--budget", str(budget),
                 "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    for r in records:
        assert r["rounds"] == 2
        if budget < 1:
            assert (r["repeats"], r["warmup"]) == (2, 0)
        else:
            assert r["repeats"] == 4 and r["warmup"] > 2


def test_ratio_pairs_the_implementations_round_by_round():
    """A peer's ratio is the median over the rounds of its time over rnnfast's in the same
    round, not the ratio of the two medians: with rnnfast timed at 1, 10, 10 s and the peer at
    2, 20, 5 s (a machine that slows down in rounds 2 and 3), the rounds say 2, 2, 0.5 (ratio 2),
    the medians 5 / 10 (0.5)."""
    scripted = {"rnnfast": [1.0, 10.0, 10.0], "numpy": [2.0, 20.0, 5.0]}
    names = {}

    class Scripted:  # the real peer, its calls named for the timer
        def __init__(self, peer):
            self.peer, self.name, self.path = peer, peer.name, peer.path

        def build(self, problem):
            fn = self.peer.build(problem)
            names[id(fn)] = self.name
            return fn

    def timer(fn, *args):
        if args:  # the first, checked call: computed
            return CpuTimer()(fn, *args)
        return scripted[names[id(fn)]].pop(0), None

    settings = {"dtype": "float32", "device": "cpu", "threads": 1, "seed": 0, "repeats": 3,
                "rounds": 3, "warmup": 0, "budget_s": 1e-9, "settle_s": 0}
    records = run_row(Row("gru", "inference", 3, 2, 5, 4), [Scripted(RnnfastPeer()),
                      Scripted(NumpyReferencePeer())], settings, timer)
    ours, theirs = records
    assert scripted == {"rnnfast": [], "numpy": []}  # one timed call per round, no warm-up
    assert (ours["rounds"], ours["repeats"], ours["median_s"]) == (3, 3, 10.0)
    assert (theirs["median_s"], theirs["ratio"]) == (5.0, 2.0)


def test_baseline_build_is_timed_in_the_same_run(tmp_path):
    """--baseline DIR: the rnnfast package in DIR (here a copy of this one, compiled modules
    included) is imported beside rnnfast and timed as the peer rnnfast@baseline, every mode,
    its outputs checked like any peer's."""
    shutil.copytree(pathlib.Path(rnnfast.__file__).parent, tmp_path / "base" / "rnnfast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert main([*NO_PAUSE, "--shapes", "3,2,5,4", "--cells", "lstm", "gru", "--modes", "inference",
                 "train", "step", "--peers", "numpy", "--repeats", "2", "--warmup", "0",
                 "--quiet", "--baseline", str(tmp_path / "base"),
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["peers"][0] == "rnnfast@baseline"
    baseline = [r for r in result["records"] if r["peer"] == "rnnfast@baseline"]
    assert {(r["cell"], r["mode"]) for r in baseline} == {
        (c, m) for c in ("lstm", "gru") for m in ("inference", "train", "step")}
    assert all(r["status"] == "ok" and r["ratio"] > 0 for r in baseline)


def test_baseline_without_a_package_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*NO_PAUSE, "--shapes", "3,2,5,4", "--baseline", str(tmp_path)])
    assert "--baseline: no rnnfast package" in capsys.readouterr().err


BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script, args", [
    ("profile_layer.py", ["--cells", "gru", "--shapes", "3,2,8", "--repeats", "1"]),
    ("time_recurrence.py", ["lstm", "3", "2", "8", "--repeats", "1"]),
    ("time_recurrence.py", ["gru", "3", "2", "8", "--repeats", "1", "--backward"]),
    ("time_recurrence.py", ["lstm", "3", "2", "8", "--repeats", "1", "--training"]),
])
def test_profiling_scripts_run(script, args):
    """The profiling scripts of benchmarks/ (not part of the package) still run."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "GFLOP/s" in done.stdout


@pytest.mark.torch
def test_torch_training_loop_script_runs():
    """benchmarks/torch_training_loop.py, with its phases, on a tiny model."""
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "torch_training_loop.py"), "--T", "3",
                           "--B", "2", "--I", "2", "--H", "4", "--steps", "1", "--repeats", "1",
                           "--phases"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rnnfast.torch, layer alone" in done.stdout
    assert "speedup of rnnfast.torch" in done.stdout


def test_default_grid_holds_the_cpu_speed_targets():
    """The packaged default grid carries the CPU-speed issue's float32 targets, each over rows
    of the grid, with its thresholds."""
    dtype, targets = load_targets(grid_path("default"))
    assert dtype == "float32"
    found = [(t.cells, t.modes, t.shapes, t.met_if) for t in targets]
    both, big = ("inference", "train"), ((100, 64, 512, 512), (50, 128, 1024, 1024))
    assert found == [
        (("lstm",), both, (), ({"vs_torch": 1.0},)),
        (("lstm",), both, ((100, 1, 256, 256),), ({"vs_torch": 3.0},)),
        (("lstm",), ("train",), ((100, 64, 256, 256), (1000, 8, 128, 128)),
         ({"vs_torch": 1.5},)),
        (("gru", "rnn_tanh"), both, (), ({"vs_torch": 2.0}, {"percent_of_peak": 85})),
        (("lstm", "gru", "rnn_tanh"), both, big, ({"percent_of_peak": 80},)),
        (("lstm",), ("step",), (), ({"max_us": 10},)),
    ]


def _record(cell, mode, peer, **fields):
    return {"cell": cell, "mode": mode, "T": 100, "B": 1, "I": 8, "H": 8, "layers": 1,
            "directions": 1, "dtype": "float32", "device": "cpu", "path": None, "peer": peer,
            "status": "ok", **fields}


def test_targets_are_judged_on_the_runs_records():
    """Met where an alternative's criteria all hold; not met, with how far from the target,
    where none does; not measured where a value is missing and nothing failed; rows of other
    cells and modes, stacked rows and failed rows are not judged; * where the row was timed
    under load."""
    records = [
        _record("lstm", "inference", "rnnfast", percent_of_peak=90.0, median_s=2e-3,
                load_gflops=100.0),
        _record("lstm", "inference", "torch", ratio=1.2),
        _record("lstm", "train", "rnnfast", percent_of_peak=50.0, median_s=3e-3,
                load_gflops=10.0),
        _record("lstm", "train", "torch", ratio=2.5),
        _record("lstm", "step", "rnnfast", percent_of_peak=5.0, median_s=12e-6,
                load_gflops=100.0),
        _record("gru", "inference", "rnnfast", percent_of_peak=99.0, median_s=1e-3,
                load_gflops=100.0),
        {**_record("lstm", "inference", "rnnfast", percent_of_peak=1.0, median_s=1.0,
                   load_gflops=100.0), "layers": 2},
        {**_record("lstm", "train", "rnnfast"), "T": 7, "status": "unsupported"},
    ]
    run = {"records": records, "load_probe": {"n": 768, "gflops": [100.0, 100.0]},
           "settings": {"grid": "g.json", "dtype": "float32", "threads": 2}}
    targets = [
        Target("ratio or peak", ("lstm",), ("inference", "train"), (),
               ({"vs_torch": 2.0}, {"percent_of_peak": 80})),
        Target("onnx", ("lstm",), ("inference",), (), ({"vs_onnxruntime": 1.0},)),
        Target("step", ("lstm",), ("step",), ((100, 1, 8, 8),), ({"max_us": 10},)),
        Target("other shapes", ("lstm",), ("step",), ((1, 1, 1, 1),), ({"max_us": 10},)),
    ]
    judged = report.judge_targets(run, targets)
    assert [t["text"] for t in judged] == ["ratio or peak", "onnx", "step"]
    either, onnx, step = (t["rows"] for t in judged)
    assert [(r["mode"], r["met"], r["loaded"]) for r in either] == [
        ("inference", True, False), ("train", True, True)]
    assert either[0]["reached"] == [
        "1.20x torch (target 2x: 1.67x faster needed)", "90.0% of peak"]
    assert [(r["met"], r["reached"]) for r in onnx] == [(None, ["no onnxruntime ratio"])]
    assert [(r["met"], r["reached"]) for r in step] == [
        (False, ["12.0 us (target 10 us: 1.20x faster needed)"])]
    text = report.format_targets({**run, "targets": judged})
    assert text.splitlines() == [
        "targets of the grid g.json (float32, 2 threads; * a row timed under load):",
        "  2 of 2 met: ratio or peak",
        "  0 of 1 met: onnx",
        "    not measured: lstm inference 100,1,8,8: no onnxruntime ratio",
        "  0 of 1 met: step",
        "    not met: lstm step 100,1,8,8: 12.0 us (target 10 us: 1.20x faster needed)"]


@pytest.mark.parametrize("target, error", [
    ({"met_if": [{"vs_torch": 1.0, "fastest": 1}]}, "unknown criteria \\['fastest'\\]"),
    ({"met_if": [{}]}, "an alternative without criteria"),
    ({"shapes": [[1, 2, 3, 4]], "met_if": [{"max_us": 1}]}, "covers none of the grid's rows"),
])
def test_targets_that_cannot_be_judged_are_refused(tmp_path, target, error):
    grid = {"description": "d", "device": "cpu",
            "sets": [{"cells": ["lstm"], "modes": ["inference"], "shapes": [[3, 2, 5, 4]]}],
            "targets": {"dtype": "float32", "list": [
                {"text": "the target", "cells": ["lstm"], "modes": ["inference"], **target}]}}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid))
    with pytest.raises(ValueError, match=f"target 'the target': {error}"):
        load_targets(path)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_run_of_a_grid_with_targets_is_judged_by_them(tmp_path, capsys, dtype):
    """A run of a grid file in its targets' dtype prints the judged targets after the table
    and keeps them in its JSON, which --load prints again; a run in another dtype has none."""
    grid = {"description": "d", "device": "cpu",
            "sets": [{"cells": ["lstm"], "modes": ["inference"], "shapes": [[3, 2, 5, 4]]}],
            "targets": {"dtype": "float32", "list": [
                {"text": "any speed", "cells": ["lstm"], "modes": ["inference"],
                 "met_if": [{"percent_of_peak": 0, "vs_numpy": 1e-9}]},
                {"text": "impossibly fast", "cells": ["lstm"], "modes": ["inference"],
                 "met_if": [{"max_us": 1e-6}]}]}}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid))
    out = tmp_path / "r.json"
    assert main([*NO_PAUSE, "--grid", str(path), "--peers", "numpy", "--dtype", dtype,
                 "--repeats", "1", "--warmup", "0", "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    if dtype != "float32":
        assert saved["targets"] == [] and "targets of the grid" not in printed
        return
    assert [(t["text"], [r["met"] for r in t["rows"]]) for t in saved["targets"]] == [
        ("any speed", [True]), ("impossibly fast", [False])]
    assert "  1 of 1 met: any speed" in printed
    assert "  0 of 1 met: impossibly fast\n    not met" in printed
    assert main(["--load", str(out)]) == 0
    assert "  0 of 1 met: impossibly fast" in capsys.readouterr().out
