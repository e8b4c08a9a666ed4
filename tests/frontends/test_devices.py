"""Layers and cells on a GPU device: ``device=``, ``.to()``, state_dict across devices, forward
and backward there against the float64 reference (the tolerance rule of _util.py), and the
errors for arrays on the wrong device, raised before any kernel runs.

They run over the stand-in for CuPy of tests/_fake_cupy.py (CUDA kernels emulated on the host;
its docstring says what that shows and what it does not) and, where CuPy, rnnfast's CUDA module
and a GPU are present, over CuPy itself (the ``cupy_module`` fixture; marker gpu). The sizes are
small: the emulator is slow.
"""

import sys

import numpy as np
import pytest

import rnnfast
from rnnfast import functional, reference as ref
from rnnfast.cell_registry import CELLS, SPECS

from _util import FLOAT32_FLOOR, FLOAT64_TOL, STEP_TOL, rel_err

KINDS = {cell: (s.torch_class, dict(s.torch_options)) for cell, s in SPECS.items()}


def new_layer(cell, I=3, H=4, dtype="float32", seed=0, **options):
    kind, kwargs = KINDS[cell]
    return getattr(rnnfast, kind)(I, H, dtype=dtype, seed=seed, **kwargs, **options)


def new_cell(cell, I=3, H=4, dtype="float32", seed=0, **options):
    kind, kwargs = KINDS[cell]
    return getattr(rnnfast, kind + "Cell")(I, H, dtype=dtype, seed=seed, **kwargs, **options)


def host(a):
    """NumPy copy of a device array (None kept): what a user calls; np.asarray would not do on
    CuPy's arrays."""
    return None if a is None else a.get()


# ------------------------------------------------------------------ placement


@pytest.mark.parametrize("make", [new_layer, new_cell], ids=["layer", "cell"])
def test_device_at_construction_and_to_round_trip(cupy_module, make):
    on_cpu = make("lstm", seed=3)
    on_gpu = make("lstm", seed=3, device="cuda")
    assert on_cpu.device == "cpu" and on_gpu.device == "cuda:0"
    assert "device='cuda:0'" in repr(on_gpu) and "device" not in repr(on_cpu)
    cpu_params = on_cpu.state_dict()
    for name, value in on_gpu.state_dict().items():
        assert type(value) is cupy_module.ndarray, name
        np.testing.assert_array_equal(host(value), cpu_params[name])  # the same seed, bitwise

    assert on_cpu.to("cuda:0") is on_cpu and on_cpu.device == "cuda:0"
    moved = on_cpu.state_dict()
    assert all(type(v) is cupy_module.ndarray for v in moved.values())
    same = dict(on_cpu._params)
    assert on_cpu.to("cuda") is on_cpu and all(on_cpu._params[n] is v for n, v in same.items())
    assert on_cpu.to("cpu").device == "cpu"
    for name, value in on_cpu.state_dict().items():
        assert type(value) is np.ndarray, name
        np.testing.assert_array_equal(value, cpu_params[name])


def test_to_moves_the_gradients_and_needs_a_new_forward(cupy_module):
    layer = new_layer("rnn_tanh", num_layers=2).train()
    out, _ = layer(np.ones((2, 1, 3), np.float32))
    layer.backward(np.ones_like(out))
    grads = {name: value.copy() for name, value in layer.grads.items()}
    layer.to("cuda")
    for name, value in layer.grads.items():
        assert type(value) is cupy_module.ndarray
        np.testing.assert_array_equal(host(value), grads[name])
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(cupy_module.asarray(np.ones_like(out)))


def test_bad_devices(fake_cupy, monkeypatch):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', not 'gpu'"):
        rnnfast.GRU(3, 4, device="gpu")
    with pytest.raises(RuntimeError, match="CuPy sees 1 GPU"):
        rnnfast.GRUCell(3, 4, device="cuda:1")
    with pytest.raises(ValueError, match="device must be"):
        rnnfast.GRU(3, 4).to(0)

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver")  # what CuPy raises, a subclass

    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", no_driver)
    with pytest.raises(RuntimeError, match=r"device 'cuda': CuPy finds no usable GPU \(cuda"):
        rnnfast.RNN(3, 4, device="cuda")
    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(RuntimeError, match="CuPy finds no GPU"):
        rnnfast.RNN(3, 4).to("cuda")
    # Without rnnfast's CUDA module (a build without nvcc): the backend cannot load.
    monkeypatch.delitem(rnnfast.backends._loaded, "cuda")
    monkeypatch.setitem(sys.modules, "rnnfast._cuda", None)
    monkeypatch.delattr(rnnfast, "_cuda", raising=False)
    with pytest.raises(ImportError, match="built without its CUDA module"):
        rnnfast.LSTM(3, 4, device="cuda")
    # Without CuPy.
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"needs CuPy: pip install 'rnnfast\[cuda12\]'"):
        rnnfast.LSTMCell(3, 4).to("cuda")


def test_state_dict_and_parameters_across_devices(cupy_module):
    on_gpu = new_layer("gru", num_layers=2, seed=1, device="cuda")
    on_cpu = new_layer("gru", num_layers=2, seed=2)
    on_cpu.load_state_dict(on_gpu.state_dict())  # device arrays into a CPU layer
    for name, value in on_gpu.state_dict().items():
        assert type(on_cpu.state_dict()[name]) is np.ndarray
        np.testing.assert_array_equal(on_cpu.state_dict()[name], host(value))
    other = new_layer("gru", num_layers=2, seed=5, device="cuda")
    other.load_state_dict({k: v.astype(np.float64) for k, v in on_cpu.state_dict().items()})
    for name, value in other.named_parameters():
        assert type(value) is cupy_module.ndarray and value.dtype == np.float32, name
        np.testing.assert_array_equal(host(value), on_cpu.state_dict()[name])
    cell = new_cell("rnn_tanh", device="cuda")
    cell.weight_hh = np.ones((4, 4))  # assigned from the host, placed on the device
    assert type(cell.weight_hh) is cupy_module.ndarray
    np.testing.assert_array_equal(host(cell.weight_hh), np.ones((4, 4), np.float32))


# ------------------------------------------------------------------ results


def _problem(layer, T, B, rng):
    L, H = layer.num_layers * layer.num_directions, layer.hidden_size
    x = rng.standard_normal((T, B, layer.input_size))
    h0, c0 = 0.5 * rng.standard_normal((2, L, B, H))
    dy = rng.standard_normal((T, B, layer.num_directions * H))
    dh, dc = rng.standard_normal((2, L, B, H))
    return x, h0, c0, dy, dh, dc


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_forward_backward_on_the_device(cupy_module, cell, dtype, monkeypatch):
    """A stacked, bidirectional layer with lengths, in training mode, on the device: every
    output and gradient against the float64 reference by the tolerance rule, through the CUDA
    backend's kernels (counted)."""
    T, B = 4, 3
    backend, calls = rnnfast.backends._loaded["cuda"], []

    def counting(name, run):
        def counted(*args, **kwargs):
            calls.append(name)
            return run(*args, **kwargs)
        return counted

    for name in ("recurrent_forward", "recurrent_backward"):
        monkeypatch.setattr(backend, name, counting(name, getattr(backend, name)))
    layer = new_layer(cell, dtype=np.dtype(dtype).name, num_layers=2, bidirectional=True,
                      seed=7, device="cuda").train()
    x, h0, c0, dy, dh, dc = _problem(layer, T, B, np.random.default_rng(11))
    lengths = np.array([4, 1, 3])
    lstm = cell == "lstm"

    def dev(a):
        return cupy_module.asarray(a.astype(dtype))

    out, state = layer(dev(x), (dev(h0), dev(c0)) if lstm else dev(h0), lengths=lengths)
    dx, dstate = layer.backward(dev(dy), (dev(dh), dev(dc)) if lstm else dev(dh))
    got = {"y": out, "h_n": state[0] if lstm else state, "dx": dx,
           "dh0": dstate[0] if lstm else dstate, **layer.grads}
    if lstm:
        got.update({"c_n": state[1], "dc0": dstate[1]})
    assert all(type(v) is cupy_module.ndarray for v in got.values())
    assert calls == ["recurrent_forward"] * 4 + ["recurrent_backward"] * 4  # 2 layers x 2 dirs

    def reference(ref_dtype):
        params = {k: host(v).astype(ref_dtype) for k, v in layer.state_dict().items()}
        x_, h0_, c0_, dy_, dh_, dc_ = (a.astype(dtype).astype(ref_dtype)
                                       for a in (x, h0, c0, dy, dh, dc))
        y, h_n, c_n, cache = ref.forward_layers(cell, x_, params, 2, True, h0_,
                                                c0_ if lstm else None, lengths=lengths)
        gx, gh0, gc0, grads = ref.backward_layers(cache, dy_, dh_, dc_ if lstm else None)
        res = {"y": y, "h_n": h_n, "dx": gx, "dh0": gh0, **grads}
        if lstm:
            res.update({"c_n": c_n, "dc0": gc0})
        return res

    oracle = reference(np.float64)
    ref32 = reference(np.float32) if dtype == np.float32 else None
    failures = []
    for name, value in got.items():
        err = rel_err(host(value), oracle[name])
        bound = FLOAT64_TOL if dtype == np.float64 else \
            2 * rel_err(ref32[name], oracle[name]) + FLOAT32_FLOOR
        if not err <= bound:
            failures.append(f"{name}: rel err {err:.3e} > {bound:.3e}")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_step_on_the_device_equals_the_cpu_step(cupy_module, cell):
    rng = np.random.default_rng(5)
    lstm = cell == "lstm"
    for dtype in (np.float32, np.float64):
        on_cpu = new_cell(cell, dtype=np.dtype(dtype).name, seed=4)
        on_gpu = new_cell(cell, dtype=np.dtype(dtype).name, seed=4, device="cuda")
        x = rng.standard_normal((2, 3)).astype(dtype)
        h, c = (0.5 * rng.standard_normal((2, 2, 4))).astype(dtype)
        hx = (h, c) if lstm else h
        expected = on_cpu(x, hx)
        dev = cupy_module.asarray
        out = (dev(np.empty_like(h)), dev(np.empty_like(c))) if lstm else dev(np.empty_like(h))
        got = on_gpu(dev(x), (dev(h), dev(c)) if lstm else dev(h), out=out)
        assert all(g is o for g, o in zip(got, out)) if lstm else got is out
        for e, g in zip(expected if lstm else (expected,), got if lstm else (got,)):
            assert type(g) is cupy_module.ndarray
            assert rel_err(host(g), e) <= STEP_TOL[dtype]
        # Unbatched, zero state, and a non-contiguous input.
        unbatched = on_gpu(dev(x[0]))
        expected = on_cpu(x[0])
        for e, g in zip(expected if lstm else (expected,), unbatched if lstm else (unbatched,)):
            assert g.shape == (4,) and rel_err(host(g), e) <= STEP_TOL[dtype]
        wide = dev(np.repeat(x, 2, axis=1))[:, ::2]
        again = on_gpu(wide, (dev(h), dev(c)) if lstm else dev(h))
        for e, g in zip(on_cpu(x, hx) if lstm else (on_cpu(x, hx),),
                        again if lstm else (again,)):
            assert rel_err(host(g), e) <= STEP_TOL[dtype]


# ------------------------------------------------------------------ arrays on the wrong device


def _refuse_kernels(monkeypatch):
    """From here on, a call that reaches functional (and so a kernel) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("functional was called: the device check came too late")

    for name in ("forward_layers", "backward_layers", "forward"):
        monkeypatch.setattr(functional, name, refuse)


def test_mixed_devices_are_refused_naming_the_argument(cupy_module, monkeypatch):
    dev = cupy_module.asarray
    x, h = np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 4), np.float32)
    on_gpu = rnnfast.LSTM(3, 4, device="cuda").train()
    on_cpu = rnnfast.LSTM(3, 4).train()
    out, _ = on_gpu(dev(x))  # a training forward to backward from
    on_cpu(x)
    cases = [
        (on_gpu, (x,), {}, TypeError,
         r"input is a numpy\.ndarray \(CPU\) but the layer's parameters are on cuda:0: pass "
         r"cupy\.asarray\(input\) or call layer\.to\('cpu'\)"),
        (on_gpu, (x.tolist(),), {}, TypeError, r"input is a builtins\.list \(CPU\)"),
        (on_gpu, (dev(x), (dev(h), h)), {}, TypeError, r"hx\[1\] is a numpy\.ndarray \(CPU\)"),
        (on_gpu, (dev(x),), {"resets": np.zeros((2, 1), bool)}, TypeError, "resets is a numpy"),
        (on_cpu, (dev(x),), {}, TypeError,
         r"input is a cupy\.ndarray on cuda:0 but the layer's parameters are on the CPU: pass "
         r"input\.get\(\) or call layer\.to\('cuda:0'\)"),
        (on_cpu, (x, (h, dev(h))), {}, TypeError, r"hx\[1\] is a cupy\.ndarray"),
        (on_gpu.backward, (np.zeros((2, 1, 4), np.float32),), {}, TypeError,
         r"grad_output is a numpy\.ndarray \(CPU\)"),
        (on_gpu.backward, (dev(np.zeros((2, 1, 4), np.float32)), (None, h)), {}, TypeError,
         r"grad_hx\[1\] is a numpy\.ndarray"),
        (on_cpu.backward, (dev(np.zeros((2, 1, 4), np.float32)),), {}, TypeError,
         r"grad_output is a cupy\.ndarray"),
    ]
    _refuse_kernels(monkeypatch)
    for call, args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            call(*args, **kwargs)
    cell_gpu, cell_cpu = rnnfast.GRUCell(3, 4, device="cuda"), rnnfast.GRUCell(3, 4)
    x, h = x[0], h[0]
    for cell, args, kwargs, match in [
            (cell_gpu, (x,), {}, r"input is a numpy\.ndarray \(CPU\) but the cell's parameters "
             r"are on cuda:0: pass cupy\.asarray\(input\) or call cell\.to\('cpu'\)"),
            (cell_gpu, (dev(x), h), {}, r"hx is a numpy\.ndarray"),
            (cell_gpu, (dev(x), dev(h)), {"out": np.empty_like(h)}, r"out is a numpy\.ndarray"),
            (cell_cpu, (dev(x), h), {}, r"input is a cupy\.ndarray on cuda:0 but the cell's "
             r"parameters are on the CPU: pass input\.get\(\) or call cell\.to\('cuda:0'\)"),
            (cell_cpu, (x, dev(h)), {"out": np.empty_like(h)}, r"hx is a cupy\.ndarray"),
            (rnnfast.LSTMCell(3, 4), (x, (h, dev(h))), {}, r"hx\[1\] is a cupy\.ndarray")]:
        with pytest.raises(TypeError, match=match):
            cell(*args, **kwargs)
    assert type(out) is cupy_module.ndarray


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cell_errors_are_the_same_on_both_devices(cupy_module, device):
    """The cells' bad-argument cases of test_cells.py, on each device: the same exceptions and
    messages (on the GPU from the front end's checks, on the CPU from the kernel's)."""
    xp = np if device == "cpu" else cupy_module
    c = rnnfast.LSTMCell(3, 4, device=device)
    x = xp.zeros((2, 3), np.float32)
    h = xp.zeros((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"input has dtype float64, expected float32 \(the dtype "
                       r"of the cell's weights\)"):
        c(x.astype(np.float64), (h, h))
    with pytest.raises(ValueError, match=r"input has shape \(2, 5\), expected \(2, 3\)"):
        c(xp.zeros((2, 5), np.float32), (h, h))
    with pytest.raises(ValueError, match="input must be 1-D"):
        c(xp.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"hx\[1\] has shape \(1, 4\), expected \(2, 4\)"):
        c(x, (h, h[:1]))
    with pytest.raises(TypeError, match=r"hx\[0\] has dtype float64"):
        c(x, (h.astype(np.float64), h))
    with pytest.raises(TypeError, match="tuple"):
        c(x, h)
    with pytest.raises(ValueError, match=r"out\[0\] overlaps the memory of hx\[0\]"):
        c(x, (h, h.copy()), out=(h, xp.empty_like(h)))
    base = xp.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"out\[1\] overlaps the memory of input"):
        c(base[:, :3], (h, h), out=(xp.empty_like(h), base))
    g = rnnfast.GRUCell(3, 4, device=device)
    with pytest.raises(ValueError, match=r"out has shape \(2, 5\), expected \(2, 4\)"):
        g(x, h, out=xp.empty((2, 5), np.float32))
    with pytest.raises(KeyError, match="missing"):
        g.load_state_dict({"weight_ih": xp.zeros((12, 3))})


def test_the_stand_in_refuses_host_arrays_as_cupy_does(fake_cupy):
    """The stand-in is only useful if it catches a forgotten copy to the device."""
    a = fake_cupy.asarray(np.ones(3))
    for compute in (lambda: a + np.ones(3), lambda: np.where(a > 0, a, np.zeros(3)),
                    lambda: fake_cupy.concatenate([a, np.ones(3)]), lambda: a @ np.ones(3),
                    lambda: fake_cupy.zeros_like(np.ones(3))):
        with pytest.raises(TypeError, match="CuPy refuses host arrays"):
            compute()
    assert type(a * 2 + a) is fake_cupy.ndarray and type(a.get()) is np.ndarray
    assert rnnfast.backends.for_array(a).name == "cuda"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_layer_bad_input_is_refused_alike_on_both_devices(cupy_module, device, monkeypatch):
    """The same exceptions and messages on each device, before any kernel runs."""
    xp = np if device == "cpu" else cupy_module
    layer = rnnfast.LSTM(3, 4, num_layers=2, device=device)
    backend = rnnfast.backends.CPU if device == "cpu" else rnnfast.backends._loaded["cuda"]
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran: the checks came too late")

    for name in ("gemm", "recurrent_forward", "recurrent_backward"):
        monkeypatch.setattr(backend, name, refuse)
    x, h = xp.zeros((5, 2, 3), np.float32), xp.zeros((2, 2, 4), np.float32)
    cases = [
        ((xp.zeros((5, 2, 4), np.float32),), {}, ValueError,
         r"input has shape \(5, 2, 4\): its last dimension must be input_size = 3"),
        ((xp.zeros((5, 3), np.float32)[None, None],), {}, ValueError, "input must be 2-D"),
        ((x.astype(np.float64),), {}, TypeError,
         "input has dtype float64, but the parameters are float32"),
        ((x, (h, h[:, :1])), {}, ValueError, r"hx\[1\] \(c\) has shape \(2, 1, 4\), expected "
         r"\(2, 2, 4\)"),
        ((x, h), {}, TypeError, r"hx must be None or a tuple \(h, c\)"),
        ((x,), {"lengths": np.array([6, 1])}, ValueError, r"lengths must be in \[0, 5\]"),
        ((x,), {"resets": xp.zeros((5, 3), bool)}, ValueError,
         r"resets has shape \(5, 3\), expected \(5, 2\)"),
        ((x,), {"resets": xp.zeros((5, 2))}, ValueError, "resets must be a bool array"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            layer(*args, **kwargs)


def test_cuda_info_reports_cupy(fake_cupy, monkeypatch):
    assert rnnfast.cuda_info()["cupy"] == fake_cupy.__version__
    monkeypatch.setitem(sys.modules, "cupy", None)  # not installed
    info = rnnfast.cuda_info()
    assert info["cupy"] is None and isinstance(info["built"], bool)


def test_layers_and_cells_pickled_before_devices_run_on_the_cpu():
    # An object pickled before layers and cells had a device has no "device" in its state: it
    # is on the CPU (a class attribute), and unpickles and runs there.
    import pickle

    x = np.ones((2, 3), np.float32)  # unbatched for the layer, a batch of 2 for the cell
    for obj, output in ((rnnfast.GRU(3, 4, seed=0), lambda o: o(x)[0]),
                        (rnnfast.GRUCell(3, 4, seed=0), lambda o: o(x))):
        del obj.__dict__["device"]
        again = pickle.loads(pickle.dumps(obj))
        assert again.device == "cpu" and "device" not in repr(again)
        np.testing.assert_array_equal(output(again), output(obj))
