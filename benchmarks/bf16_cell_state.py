"""Why the bfloat16 LSTM keeps its cell state c in float32 through the sequence.

The NumPy reference LSTM on bfloat16 inputs and weights (T=300, B=16, I=H=128), float32
arithmetic, h rounded to bfloat16 after every step, and c either rounded too or kept float32;
errors of y and c_n against float64 on the same inputs (max |error| / max |float64 value|).
With a forget gate near 1 (forget bias 3 in both biases) c sums hundreds of steps, and a
bfloat16 c loses what each step adds below its 8 significant bits.

    python benchmarks/bf16_cell_state.py
"""

import ml_dtypes
import numpy as np

from rnnfast import reference as ref


def bf16(a):
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def run(x, w_ih, w_hh, b, round_c):
    h = c = np.zeros((x.shape[1], w_hh.shape[1]), np.float32)
    ys = []
    for x_t in x:
        h, c, _ = ref.lstm_step(x_t @ w_ih.T + b, h @ w_hh.T + b, h, c)
        h, c = bf16(h), (bf16(c) if round_c else c)
        ys.append(h)
    return np.stack(ys), c


def main(T=300, B=16, I=128, H=128):
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)
    x = bf16(rng.standard_normal((T, B, I)))
    w_ih, w_hh = bf16(rng.uniform(-k, k, (4 * H, I))), bf16(rng.uniform(-k, k, (4 * H, H)))
    for forget_bias in (0.0, 3.0):
        b = bf16(rng.uniform(-k, k, 4 * H) + np.repeat([0, forget_bias, 0, 0], H))
        f64 = [a.astype(np.float64) for a in (x, w_ih, w_hh, b)]
        y64, _, c64, _ = ref.forward("lstm", f64[0], np.zeros((B, H)), f64[1], f64[2],
                                     b_ih=f64[3], b_hh=f64[3], c0=np.zeros((B, H)))
        for what, round_c in (("c bfloat16", True), ("c float32", False)):
            y, c = run(x, w_ih, w_hh, b, round_c)
            err = [float(np.abs(a - o).max() / np.abs(o).max()) for a, o in ((y, y64), (c, c64))]
            print(f"forget bias {forget_bias}: {what:<10}  y {err[0]:.2e}  c_n {err[1]:.2e}  "
                  f"(max |c| {np.abs(c64).max():.1f})")


if __name__ == "__main__":
    main()
