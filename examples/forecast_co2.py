"""Time-series forecasting: a GRU forecasts the next 12 months of atmospheric CO2.

    python examples/forecast_co2.py [--quick] [--out DIR]

The Mauna Loa CO2 record shipped with statsmodels (weekly, 1958-2001; monthly means here, gaps
interpolated). From the last 36 months the GRU forecasts the next 12, as differences from the
last month seen (so that the rising level does not matter). It trains on forecasts that end
before the last 5 years and is tested on every 12-month forecast made within them. Baseline:
the seasonal-naive forecast (each month as the same month a year before), the standard one for
a seasonal series.

Metric: the mean absolute error (ppm) over the test forecasts and all 12 horizons. Passes when
the GRU's MAE is at most half the baseline's (margin 50%).

The same model is also trained in PyTorch (if installed), once with torch.nn.GRU and once
converted to rnnfast's kernels with rnnfast.torch.convert, timing an epoch of each.
"""

import copy
import time

import numpy as np
import statsmodels.api as sm

import rnnfast

from _common import Recurrent, figure, fit, mse, parse_args, predict, progress, report

WINDOW, HORIZON, TEST_MONTHS, SCALE = 36, 12, 60, 5.0


def load_monthly_co2():
    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate()
    return monthly.index, monthly.to_numpy(np.float64)


def make_windows(series, origins):
    """Inputs [WINDOW, N, 1] and targets [N, HORIZON] for forecasts made after month
    ``origin`` (the last month seen), both relative to that month's value, / SCALE."""
    past = origins[None, :] + np.arange(-WINDOW + 1, 1)[:, None]
    future = origins[:, None] + np.arange(1, HORIZON + 1)[None, :]
    last = series[origins]
    x = (series[past] - last) / SCALE
    y = (series[future] - last[:, None]) / SCALE
    return x[:, :, None].astype(np.float32), y.astype(np.float32)


def seasonal_naive(series, origins):
    """Each forecast month as the same month a year before (known at the origin)."""
    future = origins[:, None] + np.arange(1, HORIZON + 1)[None, :]
    return series[future - 12]


def torch_epoch_times(model, x, y, epochs, batch_size, lr, seed):
    """Seconds per epoch of the same model and training in PyTorch, with torch.nn.GRU and with
    the module converted to rnnfast (rnnfast.torch.convert), from the same initial weights;
    and the loss of each one's last batch. None if PyTorch is not installed."""
    try:
        import torch

        import rnnfast.torch
    except ImportError:
        return None
    torch.manual_seed(seed)
    reference = torch.nn.ModuleDict({"gru": torch.nn.GRU(1, model.layer.hidden_size),
                                     "head": torch.nn.Linear(model.layer.hidden_size, HORIZON)})
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    results = {}
    for name in ("torch.nn", "rnnfast.torch"):
        net = copy.deepcopy(reference)
        if name == "rnnfast.torch":
            rnnfast.torch.convert(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        times = []
        with progress(epochs, f"PyTorch, {name}") as bar:
            for _ in range(epochs):
                start = time.perf_counter()
                for idx in torch.randperm(x_t.shape[1], generator=generator).split(batch_size):
                    out, _ = net["gru"](x_t[:, idx])
                    loss = torch.nn.functional.mse_loss(net["head"](out[-1]), y_t[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    optimizer.step()
                times.append(time.perf_counter() - start)
                bar.update()
        results[name] = {"seconds_per_epoch": float(np.median(times)),
                         "last_batch_loss": loss.item()}
    return results


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    dates, series = load_monthly_co2()
    first_test = len(series) - TEST_MONTHS
    train_origins = np.arange(WINDOW - 1, first_test - HORIZON)
    test_origins = np.arange(first_test, len(series) - HORIZON)
    x_train, y_train = make_windows(series, train_origins)
    x_test, y_test = make_windows(series, test_origins)

    hidden, epochs = (32, 30) if args.quick else (64, 80)
    model = Recurrent(rnnfast.GRU(1, hidden, seed=args.seed), HORIZON, rng)
    start = time.perf_counter()
    history = fit(model, x_train, y_train, mse, epochs=epochs, batch_size=32, rng=rng, lr=3e-3,
                  desc="GRU on CO2")["epoch_loss"]
    numpy_epoch = (time.perf_counter() - start) / epochs
    forecast = series[test_origins][:, None] + SCALE * predict(model, x_test)
    truth = series[test_origins][:, None] + SCALE * y_test
    naive = seasonal_naive(series, test_origins)
    mae, naive_mae = np.mean(np.abs(forecast - truth)), np.mean(np.abs(naive - truth))
    torch_times = torch_epoch_times(model, x_train, y_train, 3 if args.quick else 5, 32, 3e-3,
                                    args.seed)

    fig, axes = figure(1, 3, size=(15, 4.2))
    ax = axes[0, 0]
    last = test_origins[-1]
    months = dates[last + 1:last + 1 + HORIZON]
    ax.plot(dates[last - 48:last + 1 + HORIZON], series[last - 48:last + 1 + HORIZON], "k",
            label="measured")
    ax.plot(months, forecast[-1], "o-", color="tab:blue", label=f"GRU (MAE {mae:.2f} ppm)")
    ax.plot(months, naive[-1], "s--", color="gray", label=f"seasonal naive ({naive_mae:.2f})")
    ax.set(ylabel="CO2 (ppm)", title="the last 12-month forecast of the test period")
    ax.legend()
    ax = axes[0, 1]
    steps = np.arange(1, HORIZON + 1)
    ax.plot(steps, np.mean(np.abs(forecast - truth), axis=0), "o-", label="GRU")
    ax.plot(steps, np.mean(np.abs(naive - truth), axis=0), "s--", color="gray",
            label="seasonal naive")
    ax.set(xlabel="months ahead", ylabel="test MAE (ppm)", ylim=(0, None),
           title=f"error by horizon ({len(test_origins)} forecasts)")
    ax.legend()
    ax = axes[0, 2]
    names, seconds = ["rnnfast (NumPy)"], [numpy_epoch]
    if torch_times:
        names += list(torch_times)
        seconds += [t["seconds_per_epoch"] for t in torch_times.values()]
    ax.bar(names, seconds, color=["tab:blue", "tab:orange", "tab:green"][:len(names)])
    ax.set(ylabel="seconds per epoch",
           title=f"training time per epoch ({x_train.shape[1]} windows)")
    report(args, "forecast_co2", "test MAE (ppm)", mae, naive_mae, margin=0.5,
           higher_is_better=False, fig=fig, training_loss=history,
           numpy_seconds_per_epoch=numpy_epoch, torch=torch_times,
           test_forecasts=len(test_origins))


if __name__ == "__main__":
    main()
