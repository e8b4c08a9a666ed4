"""Sequence classification: handwritten digits read row by row by a GRU.

    python examples/classify_digits.py [--quick] [--out DIR]

scikit-learn's digits (1797 images of 8x8 pixels, shipped with scikit-learn) are read as
sequences of 8 steps, one row of 8 pixels per step; a GRU reads them and a dense layer on its
last state names the digit. Baseline: logistic regression on the 64 pixels at once (the
classifier that sees the whole image). Both train on the same 75% of the images and are
tested on the other 25%.

Metric: the test error rate (1 - accuracy). Passes when the GRU's error is at most 0.8 times
the baseline's (margin 20%).
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import rnnfast

from _common import Recurrent, cross_entropy, figure, fit, parse_args, predict, report


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # pixels in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target)

    baseline = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1), y_train)
    baseline_error = 1 - baseline.score(x_test.reshape(len(x_test), -1), y_test)

    hidden, epochs, lr = (128, 30, 3e-3) if args.quick else (256, 40, 2e-3)
    model = Recurrent(rnnfast.GRU(8, hidden, seed=args.seed), 10, rng)
    rows = lambda images: images.transpose(1, 0, 2)  # noqa: E731  [N, 8, 8] -> [8 steps, N, 8]
    history = fit(model, rows(x_train), y_train, cross_entropy, epochs=epochs, batch_size=32,
                  rng=rng, lr=lr, desc="GRU on digits")["epoch_loss"]
    predicted = predict(model, rows(x_test)).argmax(axis=1)
    error = float(np.mean(predicted != y_test))

    fig, axes = figure(1, 3, size=(13, 4))
    axes[0, 0].plot(np.arange(1, len(history) + 1), history)
    axes[0, 0].set(xlabel="epoch", ylabel="training cross-entropy (nats)", yscale="log",
                   title="training")
    axes[0, 1].bar(["logistic regression\n(64 pixels)", "GRU\n(8 rows)"],
                   [100 * baseline_error, 100 * error], color=["gray", "tab:blue"])
    axes[0, 1].set(ylabel="test error (%)", title=f"{len(y_test)} test images")
    wrong = np.flatnonzero(predicted != y_test)[:8]
    strip = np.concatenate([x_test[i] for i in wrong], axis=1) if len(wrong) else np.zeros((8, 8))
    axes[0, 2].imshow(strip, cmap="gray_r")
    axes[0, 2].set(title="GRU's mistakes (true -> predicted)", yticks=[],
                   xticks=8 * np.arange(len(wrong)) + 3.5,
                   xticklabels=[f"{y_test[i]}->{predicted[i]}" for i in wrong])
    report(args, "classify_digits", "test error rate", error, baseline_error, margin=0.2,
           higher_is_better=False, fig=fig, accuracy=1 - error,
           baseline_accuracy=1 - baseline_error,
           test_images=len(y_test), epochs=len(history))


if __name__ == "__main__":
    main()
