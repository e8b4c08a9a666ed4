"""What a run reports: the environment, the table, CSV, the comparison of two runs, the plot.
The fields are documented in benchmarks/README.md."""

import csv
import datetime
import importlib.metadata
import os
import pathlib
import platform
import subprocess

import numpy as np

import rnnfast

SCHEMA = 1
# The columns of the CSV file, in order: every field a record can have.
FIELDS = ("cell", "mode", "T", "B", "I", "H", "layers", "directions", "dtype", "device",
          "threads", "path", "peer", "status", "check", "max_rel_err", "repeats", "rounds",
          "warmup", "median_s", "min_s", "max_s", "flops", "gflops", "percent_of_peak", "ratio",
          "load_gflops", "attempts")
# Packages whose versions a run records (null when not installed): peers and their helpers.
OPTIONAL_PACKAGES = ("torch", "onnxruntime", "onnx", "cupy-cuda12x", "cupy-cuda13x",
                     "matplotlib")
# A row is marked as timed under load where the load probe around it read below this share of
# the run's best probe.
LOADED = 0.8


def under_load(load_gflops, best_gflops):
    """Whether a row whose load probe read load_gflops was timed under load (LOADED), against
    the best probe: the table's * mark and the bench's re-timing of rows both ask this."""
    return load_gflops < LOADED * best_gflops
# What identifies a row across runs (--compare). (Records from before "path" have none.)
KEY = ("cell", "mode", "T", "B", "I", "H", "layers", "directions", "dtype", "device", "path",
       "peer")


def _key(record, fields=KEY):
    """The record's values of ``fields``, None for one it lacks."""
    return tuple(record.get(k) for k in fields)


def _installed(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def source_commit():
    """(commit, where it came from): the RNNFAST_BENCH_COMMIT environment variable; else the git
    checkout that holds the imported rnnfast package (a source tree on sys.path), with
    "-dirty" when it has uncommitted changes; else "unknown" (an installed wheel does not know
    its commit: set the variable when running from an install)."""
    if os.environ.get("RNNFAST_BENCH_COMMIT"):
        return os.environ["RNNFAST_BENCH_COMMIT"], "RNNFAST_BENCH_COMMIT"
    here = pathlib.Path(rnnfast.__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(here), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    try:
        top = pathlib.Path(git("rev-parse", "--show-toplevel"))
        if not (top / "python" / "rnnfast" / "__init__.py").is_file():
            return "unknown", "not in an rnnfast checkout"
        commit, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown", "not in a git checkout"
    return commit + ("-dirty" if dirty else ""), "git checkout holding the package"


def gpu_name(device):
    """The GPU a run on ``device`` uses (CuPy's current device, named as rnnfast's CUDA module
    names it: "NVIDIA H100 80GB HBM3 (sm_90)"); None on the CPU."""
    if device != "cuda":
        return None
    import cupy

    return rnnfast.cuda_info()["devices"][cupy.cuda.Device().id]


def environment(settings, peers, peak, peak_method):
    """The run's header: machine (and GPU), CPU features, versions, commit and settings."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    commit, commit_source = source_commit()
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"hostname": platform.node(), "platform": platform.platform(),
                    "cpu_model": cpu_model(), "cores": os.cpu_count(),
                    "cores_available": len(cores) if cores else os.cpu_count()},
        "gpu": gpu_name(settings["device"]),
        "cpu_features": rnnfast.cpu_info(),
        "cuda": rnnfast.cuda_info(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "rnnfast": rnnfast.__version__,
                     **{name: _installed(name) for name in OPTIONAL_PACKAGES}},
        "commit": commit,
        "commit_source": commit_source,
        "peers": list(dict.fromkeys(p.name for p in peers if p.name != "rnnfast")),
        "peak_gflops": peak,
        "peak_method": peak_method,
        "settings": settings,
    }


def _time(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def _load_lines(report):
    """(best probe rate or None, the lines that say what the load probe read): none for a run
    from before the probe."""
    probe = report.get("load_probe")
    if not probe:
        return None, []
    rates, n = probe["gflops"], probe["n"]
    best = max(rates)
    line = (f"load: a {n}x{n} float32 matmul before and after every row read "
            f"{min(rates):.1f}-{best:.1f} GFLOP/s")
    retried = {_key(r, KEY[:-1]) for r in report["records"] if r.get("attempts", 1) > 1}
    if retried:
        rows, verb, each = (("1 row", "was", "") if len(retried) == 1
                            else (f"{len(retried)} rows", "were", "each "))
        line += (f"; {rows} it read under {LOADED:.0%} of its best around {verb} timed again at "
                 f"the end (--retry-loaded), {each}keeping its least loaded attempt")
    if not under_load(min(rates), best):
        return best, [line]
    return best, [line + f"; * marks rows it read under {LOADED:.0%} of its best around: other "
                  "work on the machine slowed them, so their times and % peak read low (their "
                  "ratios pair each round's calls, and hold better)"]


def _timed_under_load(record, best_probe):
    """Whether the load probe around ``record``'s row read low (the table's * mark); never for a
    run from before the probe (best_probe None) or a record without a reading."""
    return best_probe is not None and under_load(record.get("load_gflops", best_probe),
                                                 best_probe)


def format_table(report):
    """One line per row (and CUDA path): rnnfast's time, GFLOP/s and % of the peak (* where the
    load probe read low around the row), then each peer's ratio (peer time / rnnfast time)."""
    settings, records = report["settings"], report["records"]
    peers = report["peers"]
    best_probe, load_lines = _load_lines(report)
    rows = {}
    for r in records:
        rows.setdefault(_key(r, KEY[:-1]), {})[r["peer"]] = r
    stacked = any(r["layers"] != 1 or r["directions"] != 1 for r in records)
    paths = any(r.get("path") for r in records)
    head = ["cell", "mode", "T", "B", "I", "H"] + (["LxD"] if stacked else []) + (
        ["path"] if paths else []) + ["rnnfast", "GFLOP/s", "% peak"] + [
        f"vs {p}" for p in peers] + ["check"]
    lines = []
    for impls in rows.values():
        ours = impls["rnnfast"]
        line = [ours[k] for k in ("cell", "mode", "T", "B", "I", "H")]
        if stacked:
            line.append(f"{ours['layers']}x{ours['directions']}")
        if paths:
            line.append(ours["path"])
        if ours["status"] == "unsupported":
            lines.append(line + ["-"] * (3 + len(peers)) + [ours["check"]])
            continue

        def reps(r):
            return f" ({r['repeats']}r)" if r["repeats"] < settings["repeats"] else ""
        loaded = _timed_under_load(ours, best_probe)
        line += [_time(ours["median_s"]) + reps(ours), f"{ours['gflops']:.1f}",
                 f"{ours['percent_of_peak']:.0f}%" + ("*" if loaded else "")]
        for p in peers:
            r = impls.get(p)
            line.append("-" if r is None or r["status"] == "unsupported" else
                        "MISMATCH" if r["status"] == "mismatch" else
                        f"{r['ratio']:.2f}x" + reps(r))
        checks = [f"{p}: {impls[p]['check']}" for p in peers
                  if p in impls and impls[p]["status"] == "mismatch"]
        line.append("; ".join(checks) or "ok")
        lines.append(line)
    widths = [max(len(str(v)) for v in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, line)) for line in lines]
    out += [
        f"rnnfast: median time (per step in mode step); vs <peer>: the median over "
        f"{settings.get('rounds', 1)} rounds of peer median / rnnfast median in the round, "
        f">1 means rnnfast is faster; (Nr): only N repeats (time budget), else "
        f"{settings['repeats']}; check: every implementation's outputs against the float64 "
        f"reference ({settings['check']})", *load_lines,
        f"peak: {report['peak_gflops']:.1f} GFLOP/s ({report['peak_method']}, this run); "
        f"{settings['threads']} threads; dtype {settings['dtype']}; device {settings['device']}"
        + (f" ({report['gpu']})" if report.get("gpu") else "")]
    return "\n".join(out)


def _criterion(key, threshold, value):
    """(met, what rnnfast reached, how far it is from the threshold) for one criterion of a
    target (grids.Target) and the row's measured value (met None: not measured)."""
    name = key[3:] if key.startswith("vs_") else None
    if value is None:
        return None, f"no {name + ' ratio' if name else key.replace('_', ' ')}", None
    if name:
        return (value >= threshold, f"{value:.2f}x {name}",
                f"target {threshold:g}x: {threshold / value:.2f}x faster needed")
    if key == "percent_of_peak":
        return (value >= threshold, f"{value:.1f}% of peak",
                f"target {threshold:g}%: {threshold - value:.1f} points short")
    return (value <= threshold, f"{value:.1f} us",
            f"target {threshold:g} us: {value / threshold:.2f}x faster needed")


def _measured(ours, key, records):
    """What a target's criterion ``key`` reads of rnnfast's record ``ours`` (None: not
    measured, as a peer not run or whose outputs disagreed). records: by _key."""
    if key == "percent_of_peak":
        return ours["percent_of_peak"]
    if key == "max_us":
        return ours["median_s"] * 1e6
    peer = records.get(_key(ours)[:-1] + (key[3:],))
    return peer["ratio"] if peer is not None and peer["status"] == "ok" else None


def _verdict(criteria):
    """All of an alternative's criteria (each _criterion's tuple) hold: True, False, or None
    where none failed but some were not measured."""
    if any(c[0] is False for c in criteria):
        return False
    return None if any(c[0] is None for c in criteria) else True


def judge_targets(report, targets):
    """Each target (grids.Target) judged on the report's rnnfast rows that it covers: a dict per
    target, its text and per row the cell, mode, shape, whether it was met (an alternative of
    its met_if held; None: none failed, but a value one needs was not measured, as a peer not
    run), what rnnfast reached against each criterion (and how far from the target where it
    falls short), and whether the row was timed under load. Rows of stacked or bidirectional
    networks are not judged: the targets are set for single layers. Targets that cover no row
    of the run are left out."""
    best_probe, _ = _load_lines(report)
    records = {_key(r): r for r in report["records"]}
    judged = []
    for target in targets:
        rows = []
        for ours in report["records"]:
            shape = (ours["T"], ours["B"], ours["I"], ours["H"])
            if (ours["peer"] != "rnnfast" or ours["status"] != "ok" or ours["layers"] != 1
                    or ours["directions"] != 1
                    or not target.covers(ours["cell"], ours["mode"], shape)):
                continue
            alternatives = [[_criterion(k, x, _measured(ours, k, records)) for k, x in alt.items()]
                            for alt in target.met_if]
            verdicts = [_verdict(alt) for alt in alternatives]
            rows.append({
                "cell": ours["cell"], "mode": ours["mode"], "shape": list(shape),
                "met": True if True in verdicts else None if None in verdicts else False,
                "reached": [c[1] + (f" ({c[2]})" if c[0] is False else "")
                            for alt in alternatives for c in alt],
                "loaded": _timed_under_load(ours, best_probe)})
        if rows:
            judged.append({"text": target.text, "met_if": list(target.met_if), "rows": rows})
    return judged


def format_targets(report):
    """The report's judged targets ("targets", from judge_targets): per target how many of its
    rows met it, then each row that did not, with what rnnfast reached and how far from the
    target it is. Empty for a report without targets."""
    judged = report.get("targets")
    if not judged:
        return ""
    settings = report["settings"]
    out = [f"targets of the grid {settings['grid']} ({settings['dtype']}, {settings['threads']} "
           "threads; * a row timed under load):"]
    for t in judged:
        met = sum(r["met"] is True for r in t["rows"])
        out.append(f"  {met} of {len(t['rows'])} met: {t['text']}")
        for r in t["rows"]:
            if r["met"] is not True:
                verdict = "not met" if r["met"] is False else "not measured"
                out.append(f"    {verdict}{'*' if r['loaded'] else ''}: {r['cell']} {r['mode']} "
                           f"{','.join(map(str, r['shape']))}: {', '.join(r['reached'])}")
    return "\n".join(out)


def write_csv(report, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(report["records"])


def format_compare(old, new):
    """Per row present in both runs (with a time in both): the old and new median times and
    their ratio new/old (< 1: faster now)."""
    def index(report):
        return {_key(r): r for r in report["records"] if r.get("median_s")}
    before, after = index(old), index(new)
    common = [k for k in after if k in before]
    head = ("cell", "mode", "T", "B", "I", "H", "LxD", "dtype", "path", "peer", "old", "new",
            "new/old")
    lines = []
    for k in common:
        o, n = before[k]["median_s"], after[k]["median_s"]
        lines.append(k[:6] + (f"{k[6]}x{k[7]}", k[8], k[10] or "-", k[11], _time(o), _time(n),
                              f"{n / o:.2f}"))
    widths = [max(len(str(v)) for v in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*map(str, line)) for line in lines]
    out.append(f"{len(common)} rows in both runs ({len(before) - len(common)} only in the old, "
               f"{len(after) - len(common)} only in the new); old commit {old['commit']}, "
               f"new commit {new['commit']}")
    return "\n".join(out)


def plot(report, path, against="torch"):
    """Grouped bars of rnnfast's speedup against a peer (peer time / rnnfast time): one panel
    per mode, one group per shape, one bar per cell; log y axis, a line at 1x. Rows whose
    outputs disagree have no ratio and no bar."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib "
                         "(or the extra: pip install 'rnnfast[bench]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in report["records"] if r["peer"] == against and r.get("ratio")]
    if not recs:
        raise SystemExit(f"--plot: no rows with a ratio against {against} in these results")
    modes = list(dict.fromkeys(r["mode"] for r in recs))
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 3.2 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        mine = [r for r in recs if r["mode"] == mode]
        cells = list(dict.fromkeys(r["cell"] for r in mine))
        def shape(r):  # a group of bars: a shape (and CUDA path)
            return r["T"], r["B"], r["I"], r["H"], r["layers"], r["directions"], r.get("path")
        shapes = list(dict.fromkeys(map(shape, mine)))
        width = 0.8 / len(cells)
        for i, cell in enumerate(cells):
            ratio = {shape(r): r["ratio"] for r in mine if r["cell"] == cell}
            xs = [j + (i - (len(cells) - 1) / 2) * width for j, s in enumerate(shapes)
                  if s in ratio]
            bars = ax.bar(xs, [ratio[s] for s in shapes if s in ratio], width, label=cell)
            ax.bar_label(bars, fmt="%.2g", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlim(-0.6, max(len(shapes), 4) - 0.4)  # a lone group keeps its bars narrow
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([f"{t},{b},{i},{h}" + (f" {l}x{d}" if (l, d) != (1, 1) else "")
                            + (f" {path}" if path else "")
                            for t, b, i, h, l, d, path in shapes], fontsize=8)
        ax.set_ylabel(f"speedup vs {against}")
        ax.set_title(f"{mode} (T,B,I,H); > 1: rnnfast faster", fontsize=10)
        ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"rnnfast {report['versions']['rnnfast']} vs {against} "
                 f"{report['versions'].get(against)}: {report.get('gpu') or m['cpu_model']}, "
                 f"{report['settings']['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
