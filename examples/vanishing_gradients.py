"""Vanishing and exploding gradients, measured: vanilla RNN, LSTM and GRU on the adding problem.

    python examples/vanishing_gradients.py [--quick] [--out DIR]

The adding problem (Hochreiter & Schmidhuber 1997): each step carries a random number in [0, 1]
and a marker; two steps are marked, one in the first half of the sequence, one in the second,
and the target, read after the last step, is the sum of the two marked numbers. To solve it a
network must carry a number across up to T steps: a long dependency. (The task is synthetic by
design: its dependency length is what is measured.)

1. For each cell, the size of the gradient of the loss that reaches step T - k (the gradient
   with respect to the input there, averaged over a batch) against k, at initialisation and
   after training: at initialisation all three decay geometrically with k (vanishing
   gradients); after training the LSTM's and GRU's reach back across the whole sequence, the
   vanilla RNN's do not (and it does not learn the task). An RNN whose recurrent weights are
   scaled up shows the opposite, a gradient that grows with k (exploding gradients).
2. What clipping by norm (rnnfast.training.clip_grad_norm) does to an exploding RNN (recurrent
   weights scaled up, spectral radius 1.5 in its tanh's linear range): SGD with and without
   clipping, same start, same batches.

Baseline: predicting the mean target (1.0), test MSE 1/6. Metric: the test MSE of the better
gated network (LSTM or GRU) after training. Passes when it is at most 0.3 times the baseline's
(margin 70%).
"""

import numpy as np

import rnnfast
from rnnfast.training import SGD

from _common import Recurrent, figure, fit, mse, parse_args, report

CELLS = {"RNN (tanh)": rnnfast.RNN, "LSTM": rnnfast.LSTM, "GRU": rnnfast.GRU}
COLORS = {"RNN (tanh)": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}


def adding_problem(count, steps, rng):
    """Inputs [T, N, 2] (value, marker) and targets [N, 1]."""
    values = rng.random((steps, count))
    first = rng.integers(0, steps // 2, count)
    second = rng.integers(steps // 2, steps, count)
    markers = np.zeros((steps, count))
    markers[first, np.arange(count)] = markers[second, np.arange(count)] = 1
    target = values[first, np.arange(count)] + values[second, np.arange(count)]
    return (np.stack([values, markers], axis=2).astype(np.float32),
            target[:, None].astype(np.float32))


def gradient_by_distance(model, x, y):
    """The mean over the batch of |dL/dx_{T-k}| for k = 0 .. T-1 (L: the MSE)."""
    prediction, _ = model(x)
    _, grad = mse(prediction, y)
    grad_h = model.head.backward(grad)
    grad_out = np.zeros((x.shape[0],) + grad_h.shape, np.float32)
    grad_out[-1] = grad_h
    grad_x, _ = model.layer.backward(grad_out)
    return np.linalg.norm(grad_x, axis=2).mean(axis=1)[::-1]


def exploding_rnn(hidden, seed):
    """A tanh RNN whose recurrent matrix is orthogonal times 1.5 (every singular value 1.5)."""
    layer = rnnfast.RNN(2, hidden, seed=seed)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((hidden, hidden)))
    params = layer.state_dict()
    params["weight_hh_l0"] = 1.5 * q
    layer.load_state_dict(params)
    return layer


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    steps, hidden, count, epochs = (30, 32, 2000, 12) if args.quick else (60, 64, 4000, 25)
    x_train, y_train = adding_problem(count, steps, rng)
    x_test, y_test = adding_problem(1000, steps, rng)
    baseline = float(np.mean((y_test - 1.0) ** 2))

    grads, test_mse, curves = {}, {}, {}
    for name, make in CELLS.items():
        model = Recurrent(make(2, hidden, seed=args.seed), 1, np.random.default_rng(args.seed))
        grads[name] = [gradient_by_distance(model, x_test[:, :256], y_test[:256])]
        trace = fit(model, x_train, y_train, mse, epochs=epochs, batch_size=50, rng=rng, lr=3e-3,
                    desc=f"adding problem, {name}")
        curves[name] = trace["step_loss"]
        grads[name].append(gradient_by_distance(model, x_test[:, :256], y_test[:256]))
        model.layer.eval()
        test_mse[name] = mse(model(x_test)[0], y_test)[0]
        model.layer.train()

    exploding = Recurrent(exploding_rnn(hidden, args.seed), 1, np.random.default_rng(args.seed))
    grads["RNN, recurrent x 1.5"] = [gradient_by_distance(exploding, x_test[:, :256],
                                                          y_test[:256])]
    clipping = {}
    for label, max_norm in (("no clipping", float("inf")), ("clipped at norm 1", 1.0)):
        model = Recurrent(exploding_rnn(hidden, args.seed), 1, np.random.default_rng(args.seed))
        with np.errstate(all="ignore"):  # without clipping the weights may overflow to NaN
            clipping[label] = fit(model, x_train, y_train, mse, epochs=2, batch_size=50,
                                  rng=np.random.default_rng(args.seed), max_norm=max_norm,
                                  optimizer=SGD(model.params, lr=0.05),
                                  desc=f"exploding RNN, {label}")

    fig, axes = figure(2, 2, size=(13, 8))
    k = np.arange(steps)
    for col, when in enumerate(("at initialisation", "after training")):
        ax = axes[0, col]
        for name in grads:
            if col < len(grads[name]):
                ax.semilogy(k, grads[name][col], color=COLORS.get(name, "gray"), label=name)
        ax.set(xlabel="k (steps back from the last)", ylabel="mean |dL/dx| at step T-k",
               title=f"gradient reaching step T-k, {when}")
        ax.legend()
    ax = axes[1, 0]
    for name in CELLS:
        ax.semilogy(curves[name], color=COLORS[name], lw=0.7,
                    label=f"{name}: test MSE {test_mse[name]:.4f}")
    ax.axhline(baseline, color="gray", ls="--", label=f"baseline (predict 1.0): {baseline:.3f}")
    ax.set(xlabel="training step", ylabel="training MSE", title=f"adding problem, T={steps}")
    ax.legend()
    ax = axes[1, 1]
    for label, trace in clipping.items():
        loss = np.asarray(trace["step_loss"])
        broken = np.flatnonzero(~np.isfinite(loss))
        if len(broken):
            label += f": NaN from step {broken[0]}"
        ax.semilogy(loss, label=label + " (loss)")
    ax.semilogy(clipping["no clipping"]["grad_norm"], color="gray", lw=0.5,
                label="gradient norm without clipping")
    ax.set(xlabel="SGD step", title="exploding RNN (recurrent singular values 1.5), lr 0.05")
    ax.legend()

    gated = min(test_mse["LSTM"], test_mse["GRU"])
    finals = {label: trace["step_loss"][-1] for label, trace in clipping.items()}
    report(args, "vanishing_gradients", "test MSE of the better gated network", gated, baseline,
           margin=0.7, higher_is_better=False, fig=fig, steps=steps, test_mse=test_mse,
           gradient_ratio_last_to_first={name: [float(g[-1] / g[0]) for g in pair]
                                         for name, pair in grads.items()},
           exploding_rnn_final_loss=finals,
           exploding_rnn_max_grad_norm=float(np.nanmax(clipping["no clipping"]["grad_norm"])))


if __name__ == "__main__":
    main()
