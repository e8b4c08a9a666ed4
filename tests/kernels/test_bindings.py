"""The binding layer (rnnfast._cpu) refuses every malformed argument with an exception that
names it, and never writes outside the outputs it was given."""

import numpy as np
import pytest

from rnnfast import _cpu
from rnnfast.cell_registry import CELLS

T, B, H = 3, 2, 5


def forward_args(cell="lstm", dtype=np.float32, training=True):
    g = _cpu.gate_count(cell)
    s = _cpu.saved_per_unit(cell)
    rng = np.random.default_rng(0)
    lstm = cell == "lstm"
    return {
        "cell": cell,
        "zx": rng.standard_normal((T, B, g * H)).astype(dtype),
        "w_hh": rng.standard_normal((g * H, H)).astype(dtype),
        "b_hh": rng.standard_normal(g * H).astype(dtype),
        "h0": rng.standard_normal((B, H)).astype(dtype),
        "c0": rng.standard_normal((B, H)).astype(dtype) if lstm else None,
        "y": np.empty((T, B, H), dtype),
        "h_n": np.empty((B, H), dtype),
        "c_n": np.empty((B, H), dtype) if lstm else None,
        "saved": np.empty((T, B, s * H), dtype) if training and s else None,
    }


def backward_args(cell="lstm", dtype=np.float32):
    f = forward_args(cell, dtype)
    _cpu.recurrent_forward(**f)
    g = _cpu.gate_count(cell)
    lstm = cell == "lstm"
    return {
        "cell": cell, "w_hh": f["w_hh"], "h0": f["h0"], "c0": f["c0"], "y": f["y"],
        "saved": f["saved"], "dy": np.ones((T, B, H), dtype), "dh_n": None, "dc_n": None,
        "dzx": np.empty((T, B, g * H), dtype),
        "dzh": np.empty((T, B, g * H), dtype) if cell == "gru" else None,
        "dh0": np.empty((B, H), dtype), "dc0": np.empty((B, H), dtype) if lstm else None,
    }


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_valid_calls_run(cell, dtype):
    _cpu.recurrent_backward(**backward_args(cell, dtype))


def test_unknown_cell():
    with pytest.raises(ValueError, match="cell"):
        _cpu.recurrent_forward(**{**forward_args(), "cell": "lstmx"})


@pytest.mark.parametrize("name", ["zx", "w_hh", "b_hh", "h0", "c0", "y", "h_n", "c_n", "saved"])
def test_forward_wrong_dtype_names_argument(name):
    args = forward_args()
    args[name] = args[name].astype(np.float64)
    with pytest.raises(TypeError, match=name):
        _cpu.recurrent_forward(**args)


def test_integer_dtype_refused():
    args = forward_args()
    args["zx"] = args["zx"].astype(np.int32)
    with pytest.raises(TypeError, match="zx"):
        _cpu.recurrent_forward(**args)


@pytest.mark.parametrize("name", ["w_hh", "b_hh", "h0", "c0", "y", "h_n", "c_n", "saved"])
def test_forward_wrong_shape_names_argument(name):
    args = forward_args()
    args[name] = np.zeros(args[name].shape[:-1] + (args[name].shape[-1] + 1,), np.float32)
    with pytest.raises(ValueError, match=name):
        _cpu.recurrent_forward(**args)


def test_not_an_array():
    args = forward_args()
    args["h0"] = args["h0"].tolist()
    with pytest.raises(TypeError, match="h0"):
        _cpu.recurrent_forward(**args)


@pytest.mark.parametrize("name", ["w_hh", "h0", "y"])
def test_non_contiguous_refused(name):
    args = forward_args()
    a = args[name]
    args[name] = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]
    with pytest.raises(ValueError, match=f"{name} must be C-contiguous"):
        _cpu.recurrent_forward(**args)


@pytest.mark.parametrize("name", ["y", "h_n", "c_n", "saved"])
def test_read_only_output_refused(name):
    args = forward_args()
    args[name].flags.writeable = False
    with pytest.raises(ValueError, match=f"{name} is read-only"):
        _cpu.recurrent_forward(**args)


def test_read_only_inputs_accepted_and_untouched():
    args = forward_args()
    copies = {}
    for name in ("zx", "w_hh", "b_hh", "h0", "c0"):
        args[name].flags.writeable = False
        copies[name] = args[name].copy()
    _cpu.recurrent_forward(**args)
    for name, copy in copies.items():
        np.testing.assert_array_equal(args[name], copy)


def test_output_overlapping_input_refused():
    args = forward_args(cell="rnn_tanh")
    buf = np.zeros((T + 1, B, H), np.float32)
    args["y"], args["h0"] = buf[1:], buf[0]  # adjacent: allowed
    _cpu.recurrent_forward(**args)
    args["h_n"] = buf[1]  # inside y
    with pytest.raises(ValueError, match="overlaps"):
        _cpu.recurrent_forward(**args)


def test_cell_state_only_for_lstm():
    args = forward_args(cell="gru")
    args["c0"] = np.zeros((B, H), np.float32)
    with pytest.raises(ValueError, match="c0 must be None"):
        _cpu.recurrent_forward(**args)


def test_zero_steps_refused():
    args = forward_args()
    args["zx"] = np.zeros((0, B, 4 * H), np.float32)
    with pytest.raises(ValueError, match="zx"):
        _cpu.recurrent_forward(**args)


def test_backward_requires_separate_dzh_for_gru_only():
    args = backward_args("gru")
    args["dzh"] = None
    with pytest.raises(TypeError, match="dzh"):
        _cpu.recurrent_backward(**args)
    args = backward_args("lstm")
    args["dzh"] = np.empty_like(args["dzx"])
    with pytest.raises(ValueError, match="dzh must be None"):
        _cpu.recurrent_backward(**args)


@pytest.mark.parametrize("name", ["saved", "dy", "dh_n", "dc_n"])
def test_backward_wrong_shape_names_argument(name):
    args = backward_args("lstm")
    args[name] = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match=name):
        _cpu.recurrent_backward(**args)


def test_backward_missing_saved_for_lstm():
    args = backward_args("lstm")
    args["saved"] = None
    with pytest.raises(TypeError, match="saved"):
        _cpu.recurrent_backward(**args)


def test_unpickled_arrays_accepted():
    # An unpickled array's dtype is equal to, but not the same object as, np.float32's.
    import pickle

    args = {k: (pickle.loads(pickle.dumps(v)) if isinstance(v, np.ndarray) else v)
            for k, v in forward_args().items()}
    _cpu.recurrent_forward(**args)


def test_byte_swapped_refused():
    args = forward_args()
    args["h0"] = args["h0"].astype(">f4")
    with pytest.raises(TypeError, match="h0"):
        _cpu.recurrent_forward(**args)


def test_unaligned_refused():
    args = forward_args()
    raw = np.zeros(B * H * 4 + 1, np.uint8)[1:].view(np.float32).reshape(B, H)
    assert not raw.flags.aligned
    args["h0"] = raw
    with pytest.raises(ValueError, match="h0 must be aligned"):
        _cpu.recurrent_forward(**args)


def test_zero_batch_runs():
    args = forward_args()
    for name in ("zx", "h0", "c0", "y", "h_n", "c_n", "saved"):
        shape = list(args[name].shape)
        shape[-2] = 0
        args[name] = np.zeros(shape, np.float32)
    _cpu.recurrent_forward(**args)


# lengths [B] int64 in [0, T], resets [T, B] bool/uint8, w_hr [P, H] (LSTM only) with w_hh
# [4H, P], and dh_proj [T, B, P] exactly when w_hr is given. A wrong dtype is a TypeError, as
# for every other array; a wrong shape or value a ValueError.
BAD_OPTIONS = {
    "lengths_range": (ValueError, "lengths", lambda: {"lengths": np.array([T + 1, 0], np.int64)}),
    "lengths_negative": (ValueError, "lengths", lambda: {"lengths": np.array([-1, 0], np.int64)}),
    "lengths_dtype": (TypeError, "lengths", lambda: {"lengths": np.array([1, 0], np.int32)}),
    "lengths_shape": (ValueError, "lengths", lambda: {"lengths": np.array([1, 0, 1], np.int64)}),
    "resets_shape": (ValueError, "resets", lambda: {"resets": np.zeros((B, T), bool)}),
    "resets_dtype": (TypeError, "resets", lambda: {"resets": np.zeros((T, B), np.int64)}),
    "w_hr_shape": (ValueError, "w_hh", lambda: {"w_hr": np.zeros((3, H), np.float32)}),
    "w_hr_gru": (ValueError, "w_hr",
                 lambda: {"cell": "gru", "w_hr": np.zeros((3, H), np.float32)}),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_name_the_argument(case):
    error, word, make = BAD_OPTIONS[case]
    options = make()
    args = {**forward_args(options.get("cell", "lstm")), **options}
    with pytest.raises(error, match=word):
        _cpu.recurrent_forward(**args)


def test_projection_needs_dh_proj_in_backward():
    P = 2
    rng = np.random.default_rng(1)
    f = forward_args()
    f.update(w_hh=rng.standard_normal((4 * H, P)).astype(np.float32),
             w_hr=rng.standard_normal((P, H)).astype(np.float32),
             h0=np.zeros((B, P), np.float32), y=np.empty((T, B, P), np.float32),
             h_n=np.empty((B, P), np.float32))
    _cpu.recurrent_forward(**f)
    args = {**backward_args(), "w_hh": f["w_hh"], "w_hr": f["w_hr"], "h0": f["h0"], "y": f["y"],
            "saved": f["saved"], "dy": np.ones((T, B, P), np.float32),
            "dh0": np.empty((B, P), np.float32)}
    with pytest.raises(TypeError, match="dh_proj"):  # a required output, missing
        _cpu.recurrent_backward(**args)
    _cpu.recurrent_backward(**args, dh_proj=np.empty((T, B, P), np.float32))
    with pytest.raises(ValueError, match="dh_proj"):
        _cpu.recurrent_backward(**backward_args(), dh_proj=np.empty((T, B, H), np.float32))
