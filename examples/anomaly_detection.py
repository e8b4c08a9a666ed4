"""Anomaly detection: a GRU's prediction error flags the odd months of a real climate series.

    python examples/anomaly_detection.py [--quick] [--out DIR]

The series: monthly sea surface temperature of the El Nino region, 1950-2010 (statsmodels'
elnino data set, 732 months). A GRU learns to predict each month from the 24 before it on the
first 60% of the record. On the remaining 40% the anomaly score of a month is the absolute
error of that prediction. As a real record has no list of its anomalies, 12 are planted at
random months of the test part (a jump of +-0.8 degrees C, about three times the GRU's typical
error, and under a third of the seasonal swing), so that detection can be scored; every month
then gets flagged or not by its score, the 12 highest flagged.

Baseline: the same score from the naive predictors (the month before, or the same month a year
before; the better of the two counts). Metric: average precision of the score at finding the
planted months (1 is perfect, the fraction of planted months is chance). Passes when the GRU's
is at least 1.3 times the baseline's (margin 30%).
"""

import numpy as np
import statsmodels.api as sm
from sklearn.metrics import average_precision_score

import rnnfast

from _common import Recurrent, figure, fit, mse, parse_args, predict, report, windows

WINDOW, PLANTED, JUMP = 24, 12, 1.2


def load_elnino():
    table = sm.datasets.elnino.load_pandas().data
    months = table.drop(columns="YEAR").to_numpy(np.float64).ravel()
    years = np.repeat(table["YEAR"].to_numpy(), 12) + np.tile(np.arange(12) / 12, len(table))
    return years, months


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    years, clean = load_elnino()
    mean, std = clean.mean(), clean.std()
    split = int(0.6 * len(clean))

    series = clean.copy()
    planted = np.sort(rng.choice(np.arange(split, len(series)), PLANTED, replace=False))
    series[planted] += JUMP * rng.choice([-1, 1], PLANTED)
    labels = np.isin(np.arange(split, len(series)), planted)

    x, y = windows(((series - mean) / std).astype(np.float32), WINDOW)  # x: month t - WINDOW ..
    train = slice(0, split - WINDOW)                                     # y: month t
    hidden, epochs = (32, 40) if args.quick else (64, 150)
    model = Recurrent(rnnfast.GRU(1, hidden, seed=args.seed), 1, rng)
    fit(model, x[:, train], y[train, None], mse, epochs=epochs, batch_size=32, rng=rng, lr=3e-3,
        desc="GRU on El Nino")
    prediction = mean + std * predict(model, x[:, split - WINDOW:])[:, 0]
    test = series[split:]
    score = np.abs(test - prediction)
    naive_scores = {"previous month": np.abs(test - series[split - 1:-1]),
                    "same month a year before": np.abs(test - series[split - 12:-12])}
    precision = average_precision_score(labels, score)
    naive_precision = {name: average_precision_score(labels, s) for name, s in naive_scores.items()}
    best_naive = max(naive_precision, key=naive_precision.get)
    flagged = np.argsort(score)[-PLANTED:]
    hits = int(labels[flagged].sum())

    fig, axes = figure(2, 1, size=(13, 7))
    ax = axes[0, 0]
    t = years[split:]
    ax.plot(t, test, "k", lw=1, label="SST with planted anomalies")
    ax.plot(t, prediction, color="tab:blue", lw=1, alpha=0.7, label="GRU's prediction")
    ax.plot(t[labels], test[labels], "o", mfc="none", mec="tab:red", ms=10, label="planted")
    ax.plot(t[flagged], test[flagged], "x", color="tab:blue", ms=8,
            label=f"flagged by the GRU ({hits} of {PLANTED} right)")
    ax.set(ylabel="sea surface temperature (C)", title="El Nino region, test part")
    ax.legend(ncol=2, fontsize=8)
    ax = axes[1, 0]
    ax.plot(t, score, color="tab:blue", label=f"GRU's error (average precision {precision:.2f})")
    ax.plot(t, naive_scores[best_naive], color="gray", lw=0.8,
            label=f"naive: {best_naive} ({naive_precision[best_naive]:.2f})")
    ax.plot(t[labels], score[labels], "o", mfc="none", mec="tab:red", ms=8)
    ax.set(xlabel="year", ylabel="anomaly score (|error|, C)")
    ax.legend(fontsize=8)
    report(args, "anomaly_detection", "average precision", precision,
           naive_precision[best_naive], margin=0.3, higher_is_better=True, fig=fig,
           baseline_name=best_naive, naive_average_precision=naive_precision,
           flagged_hits=hits, planted=PLANTED,
           gru_mae_on_clean_months=float(np.mean(score[~labels])))


if __name__ == "__main__":
    main()
