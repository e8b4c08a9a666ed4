"""Language modelling and text generation: a character-level LSTM on Python's documentation.

    python examples/char_lm.py [--quick] [--out DIR]

The text: the documentation topics that ship with Python (the standard library's pydoc_data,
about 440,000 characters of English about Python once runs of spaces are collapsed to one
and the few characters outside ASCII dropped). The
first 90% trains, the last 10% tests. An LSTM reads one character at a time (one-hot) and a
dense layer with a softmax predicts the next; training is truncated backpropagation through
time (rnnfast.training.truncated_bptt) over 32 parallel streams of the text, Adam, gradients
clipped by norm. Then it writes a sample, one character at a time, through rnnfast.LSTMCell
(streaming inference with the trained weights).

Baseline: the unigram model (each character with its frequency in the training text, add-one
smoothed). Metric: bits per character on the test text (the model reads it as one stream,
states carried; with --quick its first 20,000 characters). Passes when the LSTM needs at most
0.75 times the baseline's bits per character (margin 25%).
"""

import re
import textwrap
from pydoc_data.topics import topics

import numpy as np

import rnnfast
from rnnfast.training import Adam, clip_grad_norm, truncated_bptt

from _common import Dense, cross_entropy, figure, parse_args, progress, report

STREAMS, SECTION_CHUNKS = 32, 10


def load_text():
    text = "\n\n".join(topics[key] for key in sorted(topics))
    text = re.sub(r"[ \t]+", " ", text)           # the indentation and the tables' padding
    text = re.sub(r"\n( ?\n)+", "\n\n", text)    # at most one blank line
    return text.encode("ascii", "ignore").decode("ascii")


def one_hot(codes, vocabulary):
    return np.eye(vocabulary, dtype=np.float32)[codes]


def bits_per_char(lstm, head, codes, vocabulary):
    """Bits per character of the model on ``codes``, read as one stream (eval mode)."""
    lstm.eval()
    out, _ = lstm(one_hot(codes[:-1], vocabulary)[:, None])
    nats, _ = cross_entropy(head(out[:, 0]), codes[1:])
    lstm.train()
    return nats / np.log(2)


def sample(lstm, head, alphabet, prompt, length, rng, temperature=0.8):
    """``length`` characters after ``prompt``, drawn one at a time through an LSTMCell that
    has the trained weights (streaming inference, two state buffers, out=)."""
    cell = rnnfast.LSTMCell(lstm.input_size, lstm.hidden_size)
    cell.load_state_dict({name[:-3]: value for name, value in lstm.state_dict().items()})
    index = {c: i for i, c in enumerate(alphabet)}
    eye = np.eye(len(alphabet), dtype=np.float32)
    states = [tuple(np.zeros((1, lstm.hidden_size), np.float32) for _ in "hc") for _ in "ab"]
    text, t = prompt, 0
    for code in [index[c] for c in prompt]:
        h, _ = cell(eye[code][None], states[t % 2], out=states[(t + 1) % 2])
        t += 1
    for _ in range(length):
        logits = head(h)[0] / temperature
        p = np.exp(logits - logits.max())
        code = rng.choice(len(alphabet), p=p / p.sum())
        text += alphabet[code]
        h, _ = cell(eye[code][None], states[t % 2], out=states[(t + 1) % 2])
        t += 1
    return text


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    text = load_text()
    alphabet = sorted(set(text))
    codes = np.searchsorted(alphabet, list(text)).astype(np.int64)
    vocabulary = len(alphabet)
    split = int(0.9 * len(codes))
    train, test = codes[:split], codes[split:]
    if args.quick:
        test = test[:20000]

    counts = np.bincount(train, minlength=vocabulary) + 1.0
    unigram = -np.mean(np.log2(counts / counts.sum())[test[1:]])

    hidden, chunk, chunks = (128, 50, 500) if args.quick else (256, 100, 600)
    lstm = rnnfast.LSTM(vocabulary, hidden, seed=args.seed)
    head = Dense(hidden, vocabulary, rng)
    optimizer = Adam([lstm, head.params], lr=2e-3)
    length = (len(train) - 1) // STREAMS          # the training text as 32 parallel streams
    streams = np.stack([train[b * length:(b + 1) * length + 1] for b in range(STREAMS)], axis=1)
    section = chunk * SECTION_CHUNKS              # one-hot inputs built a section at a time
    sections = chunks // SECTION_CHUNKS
    curve = []

    def loss_and_grad(output, steps):  # the next characters of this section's chunk
        nats, grad_logits = cross_entropy(head(output), targets[steps])
        return nats / np.log(2), head.backward(grad_logits)

    state = None
    with progress(sections * SECTION_CHUNKS, "char LSTM") as bar:
        for i in range(sections):
            start = (i * section) % (length - section)
            if start < section:
                state = None                      # a new pass over the text
            x = one_hot(streams[start:start + section], vocabulary)
            targets = streams[start + 1:start + section + 1]
            for step in truncated_bptt(lstm, x, chunk, loss_and_grad, hx=state):
                clip_grad_norm([lstm.grads, head.grads], 1.0)
                optimizer.step([lstm.grads, head.grads])
                curve.append(step.loss)
                bar.update()
                bar.set_postfix(bits_per_char=f"{step.loss:.3f}")
            state = step.state
    test_bits = bits_per_char(lstm, head, test, vocabulary)
    generated = sample(lstm, head, alphabet, "The ", 300 if not args.quick else 120, rng)
    print(f"--- generated ---\n{generated}\n---")

    fig, axes = figure(1, 2, size=(14, 4.5))
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(curve) + 1) * chunk * STREAMS / 1e6, curve, lw=0.6,
            label="LSTM, training chunks")
    ax.axhline(unigram, color="gray", ls="--", label=f"unigram baseline, test ({unigram:.2f})")
    ax.axhline(test_bits, color="tab:red", label=f"LSTM, test ({test_bits:.2f})")
    ax.set(xlabel="characters trained on (millions)", ylabel="bits per character",
           title=f"char-level LSTM (H={hidden}) on pydoc_data", ylim=(0, None))
    ax.legend()
    axes[0, 1].axis("off")
    wrapped = "\n".join(textwrap.fill(line, 80) for line in generated.splitlines())
    axes[0, 1].text(0, 1, "generated (temperature 0.8):\n\n" + wrapped, va="top",
                    family="monospace", fontsize=7.5)
    report(args, "char_lm", "test bits per character", test_bits, unigram, margin=0.25,
           higher_is_better=False, fig=fig, characters=len(codes), vocabulary=vocabulary,
           training_chunks=len(curve), sample=generated)


if __name__ == "__main__":
    main()
