"""The examples run and do what they say."""

import json
import pathlib
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_numpy_training_example_reduces_the_loss():
    main = runpy.run_path(str(EXAMPLES / "train_numpy.py"))["main"]
    losses = main(iterations=300)
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


# ------------------------------------------------------------------ the applications
# Each runs as a user would (a subprocess, --quick: CI-sized) and must beat its baseline by the
# margin its docstring states; the test reads the numbers from its JSON and checks them itself.

APPLICATIONS = ["char_lm", "forecast_co2", "anomaly_detection", "classify_digits",
                "vanishing_gradients", "streaming"]


@pytest.mark.parametrize("name", APPLICATIONS)
def test_application_beats_its_baseline(name, tmp_path):
    for module in ("tqdm", "matplotlib", "statsmodels", "sklearn", "threadpoolctl"):
        pytest.importorskip(module, reason='the examples need the extra "examples"')
    script = EXAMPLES / f"{name}.py"
    run = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000  # a real figure, not an empty one
    stated = re.findall(r"\(margin (\d+)%\)", script.read_text())
    assert stated == [f"{round(100 * record['margin'])}"], (stated, record["margin"])
    value, baseline, margin = record["value"], record["baseline"], record["margin"]
    if record["higher_is_better"]:
        assert value >= baseline * (1 + margin), record
    else:
        assert value <= baseline * (1 - margin), record
    assert all(record["checks"].values()), record["checks"]
    assert record["passed"] and record["quick"]
