"""Property-based test (hypothesis): whole layers on drawn cells, options, shapes, layouts,
lengths, resets, initial states and dropout, forward and backward, against the float64
reference stack, with every caller array checked unchanged.

Bounded for CI: RNNFAST_HYPOTHESIS_EXAMPLES examples (default 200), small shapes, no deadline
(the first examples pay for imports and thread start-up), derandomized so that CI runs the same
examples every time; a longer search: RNNFAST_HYPOTHESIS_EXAMPLES=5000.
"""

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from _stack import accuracy_failures, make_layer, run_both  # noqa: E402
from hypothesis import (  # noqa: E402
    HealthCheck,
    given,
    settings,
    strategies as st,  # noqa: E402
)

from _util import CELLS  # noqa: E402

EXAMPLES = int(os.environ.get("RNNFAST_HYPOTHESIS_EXAMPLES", "200"))


@st.composite
def problems(draw):
    """A layer's constructor options and the arguments of one forward and backward."""
    cell = draw(st.sampled_from(CELLS))
    # float32 only away from relu's kink: float32 and float64 may take its two sides there.
    dtype = draw(st.sampled_from(["float64"] if cell == "rnn_relu" else ["float64", "float32"]))
    hidden = draw(st.integers(1, 6))
    options = {
        "num_layers": draw(st.integers(1, 3)),
        "bidirectional": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
    }
    if cell == "lstm" and hidden > 1 and draw(st.booleans()):
        options["proj_size"] = draw(st.integers(1, hidden - 1))
    if options["num_layers"] > 1 and draw(st.booleans()):
        options["dropout"] = draw(st.sampled_from([0.25, 0.5, 1.0]))
    steps, batch, inputs = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    unbatched = draw(st.booleans()) and batch == 1
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, inputs, hidden, dtype, seed=seed, **options)
    features = layer.num_directions * (layer.proj_size or hidden)

    def sequence(size):
        a = rng.standard_normal((steps, batch, size)).astype(dtype)
        return a[:, 0] if unbatched else a.transpose(1, 0, 2) if layer.batch_first else a

    def states(optional):
        if optional and draw(st.booleans()):
            return None
        lead = (layer.num_layers * layer.num_directions,) + (() if unbatched else (batch,))
        h = rng.standard_normal(lead + (layer.proj_size or hidden,)).astype(dtype)
        if cell != "lstm":
            return h
        return (h, rng.standard_normal(lead + (hidden,)).astype(dtype))

    lengths = None
    if draw(st.booleans()):
        lengths = np.array(draw(st.lists(st.integers(0, steps), min_size=batch,
                                         max_size=batch)))
        if unbatched and draw(st.booleans()):
            lengths = int(lengths[0])  # a single integer, as an unbatched layer takes it
    resets = None
    if draw(st.booleans()):
        resets = rng.random((steps, batch)) < draw(st.sampled_from([0.2, 0.5]))
        resets = resets[:, 0] if unbatched else resets.T if layer.batch_first else resets
    args = {"x": sequence(inputs), "hx": states(True), "lengths": lengths, "resets": resets,
            "dy": sequence(features), "grad_hx": states(True)}
    return layer, args, draw(st.integers(0, 1000))


def _flat(value):
    """The arrays in an argument (an array, a tuple of them, an int, None) as a list."""
    if value is None or isinstance(value, int):
        return [value]
    return list(value) if isinstance(value, tuple) else [value]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problems())
def test_layers_match_the_reference_and_leave_caller_arrays_unchanged(problem):
    layer, args, dropout_seed = problem
    before = {name: [None if a is None else np.copy(a) for a in _flat(value)]
              for name, value in args.items()}
    got, oracle, same_dtype = run_both(layer, seed=dropout_seed, **args)
    failures, _ = accuracy_failures(got, oracle, same_dtype)
    assert not failures, f"{layer!r}: " + "; ".join(failures)
    for name, value in args.items():
        for old, new in zip(before[name], _flat(value)):
            assert (old is None and new is None) or np.array_equal(old, new), (
                f"{name} was modified")
