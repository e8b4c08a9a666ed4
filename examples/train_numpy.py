"""Train an rnnfast GRU with plain NumPy: learn to output the running mean of a noisy signal.

    python examples/train_numpy.py [steps]

Shows the training API: a training-mode forward, layer.backward for the gradients, and an SGD
update through state_dict / load_state_dict (the parameters keep PyTorch's names).
"""

import sys

import numpy as np

import rnnfast


def make_batch(rng, steps=30, batch=16):
    x = rng.standard_normal((steps, batch, 1)).astype(np.float32)
    target = np.cumsum(x, axis=0) / np.arange(1, steps + 1)[:, None, None]
    return x, target.astype(np.float32)


def main(iterations=300, seed=0):
    rng = np.random.default_rng(seed)
    gru = rnnfast.GRU(input_size=1, hidden_size=16, seed=seed)
    readout = rng.uniform(-0.25, 0.25, (16, 1)).astype(np.float32)
    learning_rate = 0.2
    losses = []
    for _ in range(iterations):
        x, target = make_batch(rng)
        hidden, _ = gru(x)                       # [T, B, 16]
        prediction = hidden @ readout            # [T, B, 1]
        error = prediction - target
        losses.append(float(np.mean(error**2)))
        grad_prediction = 2 * error / error.size
        gru.backward(grad_prediction @ readout.T)
        grad_readout = hidden.reshape(-1, 16).T @ grad_prediction.reshape(-1, 1)
        readout -= learning_rate * grad_readout
        params = gru.state_dict()
        gru.load_state_dict({name: value - learning_rate * gru.grads[name]
                             for name, value in params.items()})
    return losses


if __name__ == "__main__":
    losses = main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    print(f"loss: first 10 steps {np.mean(losses[:10]):.4f}, "
          f"last 10 steps {np.mean(losses[-10:]):.4f}")
