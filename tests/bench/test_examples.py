"""The examples run and do what they say."""

import pathlib
import runpy

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_numpy_training_example_reduces_the_loss():
    main = runpy.run_path(str(EXAMPLES / "train_numpy.py"))["main"]
    losses = main(iterations=300)
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
