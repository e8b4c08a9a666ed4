"""Truncated backpropagation through time on one long sequence, then streaming inference.

    python examples/streaming.py [--quick] [--out DIR]

The sequence: 2284 weeks of CO2 measured at Mauna Loa, 1958-2001 (statsmodels' co2 data set,
gaps interpolated), read as one sequence of weekly changes. A GRU learns to predict next week's
change on the first 80%. The whole training part is far too long to backpropagate through at
once, so training is truncated BPTT (rnnfast.training.truncated_bptt): chunks of 52 weeks, the
state carried from one chunk to the next, the gradient cut at each chunk's start.

Then streaming: a deployed model sees one week at a time. rnnfast.GRUCell, loaded with the
trained weights, runs the whole record step by step on two preallocated state buffers
(``out=``: no allocation per step), and its states must equal those of one call of the layer
on the whole sequence (float32 rounding only: max difference at most 1e-4 of the largest
state, as the per-step and the whole-sequence input projections round differently and that is
carried through 2284 steps).

Baseline: persistence (next week as this week, a change of 0). Metric: mean absolute error of
next week's CO2 on the last 20% (ppm). Passes when the GRU's MAE is at most 0.85 times the
baseline's (margin 15%) and streaming equals the whole-sequence run.
"""

import time

import numpy as np
import statsmodels.api as sm

import rnnfast
from rnnfast.training import Adam, clip_grad_norm, truncated_bptt

from _common import Dense, figure, mse, parse_args, progress, report

CHUNK, SCALE, TOLERANCE = 52, 0.5, 1e-4


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    weekly = sm.datasets.co2.load_pandas().data["co2"].interpolate()
    level = weekly.to_numpy(np.float64)
    change = np.diff(level)                   # change[t] = level[t + 1] - level[t]
    inputs = (change[:-1] / SCALE).astype(np.float32)[:, None]   # [T, 1], unbatched
    targets = (change[1:] / SCALE).astype(np.float32)[:, None]   # the next week's change
    split = int(0.8 * len(inputs))

    hidden, epochs = (32, 6) if args.quick else (64, 30)
    gru = rnnfast.GRU(1, hidden, seed=args.seed)
    head = Dense(hidden, 1, rng)
    optimizer = Adam([gru, head.params], lr=3e-3)

    def loss_and_grad(output, steps):
        loss, grad = mse(head(output), targets[steps])
        return loss, head.backward(grad)

    chunks = -(-split // CHUNK)
    curve = []
    with progress(epochs * chunks, "GRU, truncated BPTT") as bar:
        for _ in range(epochs):
            for chunk in truncated_bptt(gru, inputs[:split], CHUNK, loss_and_grad):
                clip_grad_norm([gru.grads, head.grads], 1.0)
                optimizer.step([gru.grads, head.grads])
                curve.append(chunk.loss)
                bar.update()
                bar.set_postfix(loss=f"{chunk.loss:.4f}")

    gru.eval()
    whole, _ = gru(inputs)                    # [T, H]: one call on the whole record
    predicted = level[1:-1] + SCALE * head(whole)[:, 0]   # level[t + 2], known: level[t + 1]
    truth, naive = level[2:][split:], level[1:-1][split:]
    mae, naive_mae = np.mean(np.abs(predicted[split:] - truth)), np.mean(np.abs(naive - truth))

    cell = rnnfast.GRUCell(1, hidden)
    cell.load_state_dict({name[:-3]: value for name, value in gru.state_dict().items()})
    buffers = [np.zeros((1, hidden), np.float32) for _ in range(2)]
    streamed = np.empty_like(whole)
    start = time.perf_counter()
    for t in range(len(inputs)):              # one week at a time, as a deployed model
        h = cell(inputs[t][None], buffers[t % 2], out=buffers[(t + 1) % 2])
        streamed[t] = h[0]
    per_step_us = (time.perf_counter() - start) / len(inputs) * 1e6
    difference = np.max(np.abs(streamed - whole), axis=1) / np.max(np.abs(whole))
    streaming_equal = bool(np.max(difference) <= TOLERANCE)

    fig, axes = figure(1, 3, size=(16, 4.2))
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(curve) + 1) / chunks, curve, lw=0.5, color="lightgray",
            label="per chunk")
    ax.plot(np.arange(1, epochs + 1), np.reshape(curve, (epochs, chunks)).mean(axis=1), "o-",
            label="mean per epoch")
    ax.set(xlabel="epoch (passes over the training part)", ylabel="MSE (scaled changes)",
           yscale="log", title=f"truncated BPTT, chunks of {CHUNK} weeks")
    ax.legend()
    ax = axes[0, 1]
    last = slice(-104, None)                  # the last two years of the test part
    dates = weekly.index[2:][split:][last]
    ax.plot(dates, truth[last], "k", lw=1, label="measured")
    ax.plot(dates, predicted[split:][last], color="tab:blue", lw=1,
            label=f"GRU (test MAE {mae:.3f} ppm)")
    ax.plot(dates, naive[last], color="gray", lw=0.7, ls="--",
            label=f"persistence (test MAE {naive_mae:.3f})")
    ax.set(ylabel="CO2 (ppm)", title="next week's CO2, the last two years")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(weekly.index[1:-1], difference, lw=0.7, label="streamed vs one call")
    ax.axhline(TOLERANCE, color="tab:red", ls="--", label="tolerance")
    ax.set(ylabel="max |streamed - whole| / max |whole|", ylim=(-0.1 * TOLERANCE, 1.5 * TOLERANCE),
           title=f"GRUCell streaming ({per_step_us:.1f} us/step) vs one call\n"
                 f"max difference {np.max(difference):.1e}")
    ax.legend()
    report(args, "streaming", "test MAE (ppm)", mae, naive_mae, margin=0.15,
           higher_is_better=False, fig=fig, checks={"streaming equals whole": streaming_equal},
           streaming_max_relative_difference=float(np.max(difference)),
           streaming_microseconds_per_step=per_step_us, chunks_trained=len(curve))


if __name__ == "__main__":
    main()
