"""Plumbing shared by the examples: the command line (--quick, --out), a dense layer and the
losses, a recurrent layer with a dense head trained by minibatches (Adam, clipping, a tqdm
progress bar), and the report: metrics printed and written as JSON, the figure as PNG.

The examples need the extra ``examples``: ``pip install "rnnfast[examples]"``.
"""

import argparse
import json
import os
import pathlib
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rnnfast.training import Adam, clip_grad_norm  # noqa: E402

# NumPy's BLAS on one thread: the examples' small matmuls (dense heads) gain nothing from more,
# and BLAS threads that keep spinning after each call take the cores from rnnfast's kernels
# (10x slower training steps measured on 2 cores).
threadpool_limits(1, user_api="blas")


def parse_args(doc):
    """The examples' command line (--quick, --out DIR, --seed; --help shows ``doc``). Starts
    the example's clock (see ``report``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc)
    parser.add_argument("--quick", action="store_true",
                        help="a CI-sized run (under a minute on 2 cores)")
    parser.add_argument("--out", default="example_output", type=pathlib.Path,
                        help="folder for the PNG figure and the metrics JSON "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    args = parser.parse_args()
    args.started = time.perf_counter()
    return args


def progress(total, desc):
    """A tqdm progress bar on stderr; ``bar.update()`` per step, ``bar.set_postfix(loss=..)``."""
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=0.5)


def figure(rows=1, cols=1, size=(10, 4)):
    """A matplotlib figure and its axes (an array when rows * cols > 1)."""
    return plt.subplots(rows, cols, figsize=size, squeeze=rows * cols == 1)


# ------------------------------------------------------------------ the model


class Dense:
    """y = x W^T + b on the last axis, with its backward. ``params`` and ``grads`` are dicts of
    arrays ("weight" [out, in], "bias" [out]), as rnnfast.training's optimizers take them."""

    def __init__(self, n_in, n_out, rng, dtype=np.float32):
        bound = 1.0 / np.sqrt(n_in)
        self.params = {"weight": rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype),
                       "bias": np.zeros(n_out, dtype)}
        self.grads = None

    def __call__(self, x):
        self._x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, grad_y):
        x = self._x.reshape(-1, self._x.shape[-1])
        g = grad_y.reshape(-1, grad_y.shape[-1])
        self.grads = {"weight": g.T @ x, "bias": g.sum(axis=0)}
        return grad_y @ self.params["weight"]


def mse(prediction, target):
    """Mean squared error and its gradient with respect to the prediction."""
    error = prediction - target
    return float(np.mean(error ** 2)), (2 * error / error.size).astype(prediction.dtype)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy (nats) of integer ``labels`` (logits' shape without the last
    axis) and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_p, labels[..., None], axis=-1)
    grad = np.exp(log_p)
    np.put_along_axis(grad, labels[..., None], np.take_along_axis(grad, labels[..., None], -1) - 1,
                      axis=-1)
    return float(-picked.mean()), (grad / labels.size).astype(logits.dtype)


class Recurrent:
    """A recurrent rnnfast layer (time-major) and a Dense head on its outputs: on the last step
    only (``last_step``: one prediction per sequence) or on every step."""

    def __init__(self, layer, n_out, rng, last_step=True):
        self.layer, self.last_step = layer, last_step
        self.head = Dense(layer.hidden_size * layer.num_directions, n_out, rng, layer.dtype)

    @property
    def params(self):
        return [self.layer, self.head.params]

    @property
    def grads(self):
        return [self.layer.grads, self.head.grads]

    def __call__(self, x, hx=None):
        """(predictions, final states) for x [T, B, I]."""
        out, state = self.layer(x, hx)
        self._shape = out.shape
        return self.head(out[-1] if self.last_step else out), state

    def backward(self, grad_prediction):
        """Sets ``grads`` (the layer's and the head's) from the gradient of the predictions."""
        grad_h = self.head.backward(grad_prediction)
        if self.last_step:
            grad_out = np.zeros(self._shape, grad_h.dtype)
            grad_out[-1] = grad_h
        else:
            grad_out = grad_h
        self.layer.backward(grad_out)


def fit(model, x, y, loss, epochs, batch_size, rng, lr=1e-3, max_norm=1.0, optimizer=None,
        desc="training"):
    """Trains ``model`` (a Recurrent) on sequences x [T, N, I] with targets y [N, ...] (or
    [T, N, ...] when the head reads every step) on shuffled minibatches, clipping the gradient
    norm at ``max_norm`` (inf: no clipping). ``loss``: mse or cross_entropy; ``optimizer``:
    one of rnnfast.training's on model.params (None: Adam with ``lr``). Returns a dict: the
    mean loss of each epoch ("epoch_loss"), the loss and the gradient norm (before clipping)
    of each step ("step_loss", "grad_norm")."""
    optimizer = optimizer or Adam(model.params, lr=lr)
    count = x.shape[1]
    batches = -(-count // batch_size)
    trace = {"epoch_loss": [], "step_loss": [], "grad_norm": []}
    with progress(epochs * batches, desc) as bar:
        for _ in range(epochs):
            order, total = rng.permutation(count), 0.0
            for i in range(batches):
                idx = order[i * batch_size:(i + 1) * batch_size]
                prediction, _ = model(x[:, idx])
                value, grad = loss(prediction, y[idx] if model.last_step else y[:, idx])
                model.backward(grad)
                trace["grad_norm"].append(clip_grad_norm(model.grads, max_norm))
                optimizer.step(model.grads)
                trace["step_loss"].append(value)
                total += value * len(idx)
                bar.update()
                bar.set_postfix(loss=f"{value:.4f}")
            trace["epoch_loss"].append(total / count)
    return trace


def predict(model, x, batch_size=512):
    """The model's predictions for x [T, N, I] in eval mode (then back to training mode)."""
    model.layer.eval()
    parts = [model(x[:, i:i + batch_size])[0] for i in range(0, x.shape[1], batch_size)]
    model.layer.train()
    return np.concatenate(parts, axis=0 if model.last_step else 1)


def windows(series, length):
    """Every window of ``length`` consecutive values of a 1-D series, time-major
    [length, N, 1], and the value after each window [N] (the last window has none: N =
    len(series) - length)."""
    n = len(series) - length
    idx = np.arange(length)[:, None] + np.arange(n)[None, :]
    return series[idx][:, :, None], series[length:]


# ------------------------------------------------------------------ the report


def report(args, name, metric, value, baseline, margin, higher_is_better, fig, checks=None,
           **details):
    """Prints the result, writes ``<out>/<name>.json`` and ``<out>/<name>.png``, returns the
    record (with "seconds": from the command line parsed to now, and the machine's load
    average, as the timings depend on it). passed: value beats baseline by the relative
    margin, i.e. value <= baseline * (1 - margin) for a metric that should be low, value >=
    baseline * (1 + margin) for one that should be high, and every one of ``checks`` (a dict:
    what -> bool) holds."""
    required = baseline * (1 + margin) if higher_is_better else baseline * (1 - margin)
    beaten = bool(value >= required if higher_is_better else value <= required)
    checks = {what: bool(ok) for what, ok in (checks or {}).items()}
    passed = beaten and all(checks.values())
    record = {"example": name, "metric": metric, "value": float(value),
              "baseline": float(baseline), "margin": margin,
              "higher_is_better": higher_is_better, "required": float(required),
              "beats_baseline": beaten, "checks": checks,
              "passed": passed, "quick": args.quick, "seed": args.seed,
              "seconds": round(time.perf_counter() - args.started, 1),
              "load_average": os.getloadavg(), **details}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    fig.tight_layout()
    fig.savefig(args.out / f"{name}.png", dpi=110)
    relation = ">=" if higher_is_better else "<="
    print(f"{name}: {metric} {value:.4g}, baseline {baseline:.4g}; required {relation} "
          f"{required:.4g} (margin {margin:.0%}); "
          + "".join(f"{what}: {ok}; " for what, ok in checks.items())
          + f"{'PASSED' if passed else 'FAILED'} "
          f"in {record['seconds']} s; wrote {args.out / name}.json and .png")
    return record
