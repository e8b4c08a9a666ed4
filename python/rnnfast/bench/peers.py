"""What a row computes (a Problem), and the implementations that compute it: rnnfast and its
peers, all behind one interface.

``peer.build(problem)`` prepares everything outside the timed region (weights loaded, inputs
converted, sessions created) and returns ``run(collect=False)``: one call computes the row
(inference, training forward + backward, or T single steps); with ``collect=True`` it returns
the outputs as a dict of NumPy arrays, named alike for every implementation, so that the
runner can check them against rnnfast's. A peer that cannot compute a row raises Unsupported
with the reason, at build time or from a call (the first, checked one).

On the GPU rnnfast is timed once per CUDA recurrence path (``RnnfastPeer.path``, see
``rnnfast.backends.cuda_recurrence``); the other peers have no path (None).

Outputs, in the layers' shapes: "y" [T, B, D*H], "h_n" (and "c_n") [L*D, B, H]; in training
also "grad_input" and "grad_<parameter>" for every parameter (PyTorch's names); in mode "step"
"h_T" (and "c_T") [B, H], the state after T steps.
"""

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import pathlib
import sys
from dataclasses import dataclass

import numpy as np

import rnnfast

from ..cell_registry import SPECS


class Unsupported(Exception):
    """The implementation cannot compute this row; the message says why."""


@dataclass
class Problem:
    """A row's data, the same for every implementation (NumPy arrays on the host)."""

    row: object  # grids.Row
    dtype: np.dtype
    device: str
    threads: int
    weights: dict  # PyTorch's state_dict names -> arrays
    x: np.ndarray  # [T, B, I]
    h0: np.ndarray  # [L*D, B, H]
    c0: np.ndarray  # [L*D, B, H] for the LSTM, else None
    dy: np.ndarray  # [T, B, D*H], the output gradient in training

    @property
    def lstm(self):
        return self.row.cell == "lstm"


def make_problem(row, dtype, device="cpu", threads=1, seed=0):
    """Weights initialised as PyTorch does (uniform in +-1/sqrt(H)), random input, states and
    output gradient."""
    dtype = rnnfast._dtypes.resolve(dtype)
    rng = np.random.default_rng(seed)
    gh = SPECS[row.cell].gate_count * row.H
    bound = 1 / np.sqrt(row.H)
    weights = {}
    for layer in range(row.layers):
        inputs = row.I if layer == 0 else row.directions * row.H
        for suffix in ("", "_reverse")[:row.directions]:
            for name, shape in (("weight_ih", (gh, inputs)), ("weight_hh", (gh, row.H)),
                                ("bias_ih", (gh,)), ("bias_hh", (gh,))):
                weights[f"{name}_l{layer}{suffix}"] = \
                    rng.uniform(-bound, bound, shape).astype(dtype)
    states = (row.layers * row.directions, row.B, row.H)
    return Problem(
        row=row, dtype=dtype, device=device, threads=threads, weights=weights,
        x=rng.standard_normal((row.T, row.B, row.I)).astype(dtype),
        h0=rng.standard_normal(states).astype(dtype),
        c0=rng.standard_normal(states).astype(dtype) if row.cell == "lstm" else None,
        dy=rng.standard_normal((row.T, row.B, row.directions * row.H)).astype(dtype))


def _states(names, values):
    """{"h_n": h, "c_n": c} from an LSTM's (h, c), or {"h_n": h} from a single state."""
    values = values if isinstance(values, tuple) else (values,)
    return dict(zip(names, values))


def _constructor(cell, module, suffix=""):
    """The class of ``module`` (rnnfast or torch.nn) that builds the named cell, with the
    arguments that select it (the RNN's nonlinearity); suffix "Cell": its single-step cell."""
    cell_spec = SPECS[cell]
    return functools.partial(getattr(module, cell_spec.torch_class + suffix),
                             **dict(cell_spec.torch_options))


def _device_option(device, make):
    """The device argument of ``make`` (a layer's or cell's class): none on the CPU, so that a
    baseline package from before ``device=`` can be timed there; on the GPU, Unsupported where
    ``make`` has no ``device=``."""
    if device == "cpu":
        return {}
    if "device" not in inspect.signature(make).parameters:
        raise Unsupported("this rnnfast's layers take no device= (they came before the GPU "
                          "front ends)")
    return {"device": device}


def _host_copier(xp):
    """A function copying an array of the array library xp (NumPy or CuPy) to a NumPy array."""
    return xp.asnumpy if xp is not np else np.array


class Peer:
    """An implementation. ``module`` names the package whose presence makes it available;
    ``devices`` the devices it runs on."""

    name = ""
    module = None
    devices = ("cpu",)
    path = None

    def version(self):
        """The installed version, or None when the peer is not installed."""
        if importlib.util.find_spec(self.module) is None:
            return None
        try:
            return importlib.metadata.version(self.module)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def available(self, device):
        return device in self.devices and self.version() is not None

    def build(self, problem):
        raise NotImplementedError


class RnnfastPeer(Peer):
    """rnnfast itself, through its public layers (and cells in mode "step"): the baseline every
    peer is compared with. ``package``: the rnnfast package to time (another build of it, for
    baseline_peer); ``path``: on the GPU, the CUDA recurrence path its calls run on ("standard"
    or "persistent"; a call the persistent path cannot run is Unsupported, with its reason)."""

    module = "rnnfast"
    devices = ("cpu", "cuda")

    def __init__(self, package=rnnfast, name="rnnfast", path=None):
        self.package, self.name, self.path = package, name, path

    def on_path(self, path):
        """This implementation on the CUDA recurrence path ``path``."""
        return RnnfastPeer(self.package, self.name, path)

    def version(self):
        return self.package.__version__

    def build(self, p):
        # On the GPU the layers take and return CuPy arrays (ARCHITECTURE.md, One orchestration).
        xp = importlib.import_module("cupy") if p.device == "cuda" else np
        contexts, refused = [], ()
        if self.path is not None:
            if not hasattr(self.package.backends, "cuda_recurrence"):
                raise Unsupported("this rnnfast has no CUDA recurrence paths")
            contexts.append(functools.partial(self.package.backends.cuda_recurrence, self.path))
            # The persistent path's refusal (an older baseline build has no type for it)
            refused = getattr(self.package.backends.cuda_backend(xp), "path_refused", ())
        dtype = p.dtype
        if p.device == "cuda" and dtype.name == "bfloat16":
            # CuPy has no bfloat16: the values go as float32 copies, computed as bfloat16
            # arrays are (as rnnfast.torch hands over bfloat16 CUDA tensors).
            dtype = np.dtype(np.float32)
            contexts.append(self.package._dtypes.bfloat16_in_float32)

        def to_device(a):
            return xp.asarray(a.astype(dtype))

        run = (self._build_step if p.row.mode == "step" else self._build_layers)(
            p, xp, dtype, to_device)
        if not contexts:
            return run

        def run_in_contexts(collect=False):
            with contextlib.ExitStack() as stack:
                for context in contexts:
                    stack.enter_context(context())
                try:
                    return run(collect)
                except refused as error:  # saying why
                    raise Unsupported(str(error)) from None
        return run_in_contexts

    def _build_layers(self, p, xp, dtype, to_device):
        r = p.row
        host = _host_copier(xp)
        make = _constructor(r.cell, self.package)
        try:
            layer = make(r.I, r.H, num_layers=r.layers, bidirectional=r.directions == 2,
                         dtype=dtype.name, **_device_option(p.device, make))
        except NotImplementedError as error:
            raise Unsupported(str(error)) from None
        layer.load_state_dict(p.weights)
        layer.train(r.mode == "train")
        x, dy = to_device(p.x), to_device(p.dy)
        hx = (to_device(p.h0), to_device(p.c0)) if p.lstm else to_device(p.h0)
        state_names = ("h_n", "c_n")

        def run(collect=False):
            y, h_n = layer(x, hx)
            if r.mode == "train":
                grad_x, _ = layer.backward(dy)
            if collect:
                out = {"y": y, **_states(state_names, h_n)}
                if r.mode == "train":
                    out["grad_input"] = grad_x
                    out.update({f"grad_{k}": v for k, v in layer.grads.items()})
                return {k: host(v) for k, v in out.items()}
        return run

    def _build_step(self, p, xp, dtype, to_device):
        r = p.row
        if not hasattr(self.package, "LSTMCell"):
            raise Unsupported("rnnfast cells not available in this version")
        make = _constructor(r.cell, self.package, "Cell")
        cell = make(r.I, r.H, dtype=dtype.name, **_device_option(p.device, make))
        cell.load_state_dict({k: p.weights[f"{k}_l0"]
                              for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        x, host = to_device(p.x), _host_copier(xp)
        first = (to_device(p.h0[0]), to_device(p.c0[0])) if p.lstm else to_device(p.h0[0])

        def buffer():
            return (xp.empty_like(first[0]), xp.empty_like(first[1])) if p.lstm \
                else xp.empty_like(first)
        buffers = (buffer(), buffer())  # out= alternates between two, so steps allocate nothing

        def run(collect=False):
            state = first
            for t in range(r.T):
                state = cell(x[t], state, out=buffers[t % 2])
            if collect:  # copies: the buffers are overwritten by the next call
                return {k: host(v) for k, v in _states(("h_T", "c_T"), state).items()}
        return run


def baseline_peer(directory):
    """The peer "rnnfast@baseline": the rnnfast package in ``directory``/rnnfast (a copy of an
    earlier build's installed package), imported under another name, so that a change is timed
    against the code before it in the same run."""
    init = pathlib.Path(directory) / "rnnfast" / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(init)
    spec = importlib.util.spec_from_file_location(
        "rnnfast_baseline", init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package  # its relative imports resolve through sys.modules
    spec.loader.exec_module(package)
    return RnnfastPeer(package, "rnnfast@baseline")


class NumpyReferencePeer(Peer):
    """rnnfast.reference: the plain NumPy implementation that is the tests' oracle. One layer,
    one direction."""

    name = "numpy"
    module = "numpy"

    def build(self, p):
        from .. import reference

        r = p.row
        if (r.layers, r.directions) != (1, 1):
            raise Unsupported("the reference runs one layer in one direction")
        if p.dtype.name == "bfloat16":
            raise Unsupported("the reference computes in float32 or float64")
        w = [p.weights[f"{n}_l0"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0, c0 = p.h0[0], (p.c0[0] if p.lstm else None)

        if r.mode == "step":
            step = reference.STEPS[r.cell][0]

            def run(collect=False):
                h, c = h0, c0
                for t in range(r.T):
                    zx, zh = p.x[t] @ w[0].T + w[2], h @ w[1].T + w[3]
                    h, c, _ = step(zx, zh, h, c)
                if collect:
                    return {"h_T": h, **({"c_T": c} if p.lstm else {})}
            return run

        def run(collect=False):
            y, h_n, c_n, cache = reference.forward(r.cell, p.x, h0, w[0], w[1], b_ih=w[2],
                                                   b_hh=w[3], c0=c0)
            if r.mode == "train":
                g = reference.backward(cache, p.dy)
            if collect:
                out = {"y": y, "h_n": h_n[None], **({"c_n": c_n[None]} if p.lstm else {})}
                if r.mode == "train":
                    out["grad_input"] = g["x"]
                    out.update({f"grad_{n}_l0": g[k] for n, k in (
                        ("weight_ih", "w_ih"), ("weight_hh", "w_hh"), ("bias_ih", "b_ih"),
                        ("bias_hh", "b_hh"))})
                return out
        return run


class TorchPeer(Peer):
    """PyTorch's torch.nn modules (CPU: its default oneDNN path; CUDA: cuDNN), with rnnfast's
    weights copied in; inference under no_grad, training with gradients for the input and all
    weights."""

    name = "torch"
    module = "torch"
    devices = ("cpu", "cuda")

    def available(self, device):
        if not super().available(device):
            return False
        return device == "cpu" or importlib.import_module("torch").cuda.is_available()

    def build(self, p):
        import torch

        r = p.row
        dtype = getattr(torch, p.dtype.name)  # float32, float64, float16, bfloat16

        def tensor(a):  # bfloat16: the same bits, NumPy's ml_dtypes.bfloat16 as torch's
            if a.dtype.name == "bfloat16":
                return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(p.device)
            return torch.from_numpy(a).to(p.device)

        def numpy(t):  # bfloat16 to float32, exactly (NumPy has no torch.bfloat16)
            t = t.detach().cpu()
            return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

        x, dy = tensor(p.x), tensor(p.dy)
        hx = (tensor(p.h0), tensor(p.c0)) if p.lstm else tensor(p.h0)
        if r.mode == "step":
            if (r.layers, r.directions) != (1, 1):
                raise Unsupported("mode step runs one cell")
            cell = _constructor(r.cell, torch.nn, "Cell")(r.I, r.H, dtype=dtype,
                                                         device=p.device)
            cell.load_state_dict({k: tensor(p.weights[f"{k}_l0"]) for k in cell.state_dict()})
            first = (hx[0][0], hx[1][0]) if p.lstm else hx[0]

            @torch.no_grad()
            def run(collect=False):
                state = first
                for t in range(r.T):
                    state = cell(x[t], state)
                if collect:
                    return _states(("h_T", "c_T"), tuple(numpy(s) for s in state)
                                   if p.lstm else numpy(state))
            return run

        module = _constructor(r.cell, torch.nn)(r.I, r.H, num_layers=r.layers,
                                                bidirectional=r.directions == 2, dtype=dtype,
                                                device=p.device)
        module.load_state_dict({k: tensor(v) for k, v in p.weights.items()})
        module.train(r.mode == "train")
        x.requires_grad_(r.mode == "train")

        def run(collect=False):
            with torch.set_grad_enabled(r.mode == "train"):
                if r.mode == "train":
                    x.grad = None
                    module.zero_grad(set_to_none=True)
                y, h_n = module(x, hx)
                if r.mode == "train":
                    y.backward(dy)
            if collect:
                h_n = tuple(numpy(h) for h in h_n) if p.lstm else numpy(h_n)
                out = {"y": numpy(y), **_states(("h_n", "c_n"), h_n)}
                if r.mode == "train":
                    out["grad_input"] = numpy(x.grad)
                    out.update({f"grad_{k}": numpy(v.grad) for k, v in module.named_parameters()})
                return out
        return run




def onnx_model(p):
    """The row's network as an ONNX model built with onnx.helper: one ONNX LSTM/GRU/RNN node per
    layer (both directions in one node), weights as initializers in ONNX's gate order. Inputs
    "X" and per layer "h0_l<k>" (and "c0_l<k>") [D, B, H]; outputs "y", "h_n" (and "c_n")."""
    import onnx
    from onnx import helper, numpy_helper

    r = p.row
    elem = helper.np_dtype_to_tensor_dtype(p.dtype)
    cell_spec = SPECS[r.cell]
    op = cell_spec.onnx_op
    attrs = {"hidden_size": r.H, "direction": "bidirectional" if r.directions == 2 else "forward"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1  # PyTorch's GRU: reset gate after the recurrent matmul
    if cell_spec.onnx_activations:
        attrs["activations"] = list(cell_spec.onnx_activations) * r.directions

    def onnx_order(a):
        g = cell_spec.gate_count
        return a.reshape(g, r.H, *a.shape[1:])[list(cell_spec.onnx_gates)].reshape(a.shape)

    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("X", elem, list(p.x.shape))]
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "merge_directions"))
    state_shape = [r.directions, r.B, r.H]
    seq, finals = "X", {"h": [], "c": []}
    for layer in range(r.layers):
        sfx = [f"_l{layer}", f"_l{layer}_reverse"][:r.directions]
        w = {n: np.stack([onnx_order(p.weights[n + s]) for s in sfx])
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        names = {n: f"{n}_{layer}" for n in ("W", "R", "B", "Y", "Yh", "Yc", "Yt", "h0", "c0")}
        inits += [numpy_helper.from_array(w["weight_ih"], names["W"]),
                  numpy_helper.from_array(w["weight_hh"], names["R"]),
                  numpy_helper.from_array(np.concatenate([w["bias_ih"], w["bias_hh"]], 1),
                                          names["B"])]
        node_in = [seq, names["W"], names["R"], names["B"], "", f"h0_l{layer}"]
        node_out = [names["Y"], names["Yh"]]
        inputs.append(helper.make_tensor_value_info(f"h0_l{layer}", elem, state_shape))
        if p.lstm:
            node_in.append(f"c0_l{layer}")
            node_out.append(names["Yc"])
            inputs.append(helper.make_tensor_value_info(f"c0_l{layer}", elem, state_shape))
            finals["c"].append(names["Yc"])
        finals["h"].append(names["Yh"])
        nodes.append(helper.make_node(op, node_in, node_out, **attrs))
        # Y is [T, D, B, H]; the next layer and the output want [T, B, D*H].
        nodes.append(helper.make_node("Transpose", [names["Y"]], [names["Yt"]], perm=[0, 2, 1, 3]))
        seq = "y" if layer == r.layers - 1 else f"seq_{layer}"
        nodes.append(helper.make_node("Reshape", [names["Yt"], "merge_directions"], [seq]))
    outputs = [helper.make_tensor_value_info("y", elem, list(p.dy.shape))]
    for part in ("h", "c") if p.lstm else ("h",):
        nodes.append(helper.make_node("Concat", finals[part], [f"{part}_n"], axis=0))
        outputs.append(helper.make_tensor_value_info(f"{part}_n", elem, list(p.h0.shape)))
    graph = helper.make_graph(nodes, "rnnfast_bench", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(model)
    return model


class OnnxRuntimePeer(Peer):
    """ONNX Runtime on the CPU, inference in float32 only: the ONNX model built by onnx_model,
    with intra_op_num_threads = the run's thread count."""

    name = "onnxruntime"
    module = "onnxruntime"

    def available(self, device):
        return super().available(device) and importlib.util.find_spec("onnx") is not None

    def build(self, p):
        import onnxruntime as ort

        r = p.row
        if r.mode != "inference":
            raise Unsupported("ONNX Runtime peer: inference only")
        if p.dtype != np.float32:
            raise Unsupported("ONNX Runtime's CPU LSTM, GRU and RNN compute in float32 only")
        options = ort.SessionOptions()
        options.intra_op_num_threads = p.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_model(p).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        d = r.directions
        feeds = {"X": p.x}
        for layer in range(r.layers):
            feeds[f"h0_l{layer}"] = np.ascontiguousarray(p.h0[layer * d:(layer + 1) * d])
            if p.lstm:
                feeds[f"c0_l{layer}"] = np.ascontiguousarray(p.c0[layer * d:(layer + 1) * d])
        names = [o.name for o in session.get_outputs()]

        def run(collect=False):
            out = session.run(names, feeds)
            if collect:
                return dict(zip(names, out))
        return run


# Every implementation the suite knows, rnnfast first. A peer that is not installed (or not
# for the device) is not listed in the results.
PEERS = [RnnfastPeer(), NumpyReferencePeer(), TorchPeer(), OnnxRuntimePeer()]
PEER_NAMES = [p.name for p in PEERS[1:]]
