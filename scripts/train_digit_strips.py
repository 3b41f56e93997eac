"""Train a CRNN + BiLSTM reader of handwritten digit strips and export it (a captcha-style reader).

The recurrent family the benchmark set lacked: two convolution blocks, a dense projection, two
bidirectional LSTMs and a CTC head, the layout of Keras's captcha OCR example. Each strip is
five of scikit-learn's bundled `load_digits` images (real handwriting, 8x8, scaled 3x) side by
side with random gaps. Strips for evaluation use only held-out digit images.

Writes examples/data/digit_strips.onnx (ONNX LSTM ops, opset 17, dynamic batch) and
examples/data/digit_strips.npz: `calib_x` [64,1,24,136] from training digits, `eval_x`
[400,1,24,136] and `eval_y` (the five-digit strings). Needs the `train` extra (torch==2.13.0,
the CPU wheel, and scikit-learn); the outputs are committed, so nothing at run time needs torch.

    .venv/bin/pip install -e '.[train]' && .venv/bin/python scripts/train_digit_strips.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "examples" / "data"
SEED = 0
DIGITS, SCALE, HEIGHT, WIDTH = 5, 3, 24, 136
CLASSES = 11  # blank + 0..9


class StripReader(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.project = nn.Sequential(nn.Linear(64 * HEIGHT // 4, 64), nn.ReLU())
        self.rnn1 = nn.LSTM(64, 64, batch_first=True, bidirectional=True)
        self.rnn2 = nn.LSTM(128, 48, batch_first=True, bidirectional=True)
        self.head = nn.Linear(96, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # [N,64,H/4,W/4]
        n, c, h, w = f.shape
        seq = self.project(f.permute(0, 3, 1, 2).reshape(n, w, c * h))  # [N,T,64]
        seq, _ = self.rnn1(seq)
        seq, _ = self.rnn2(seq)
        return self.head(seq).softmax(-1)  # [N,T,11] CTC probabilities


def strips(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """`count` strips of DIGITS images drawn from `pool`, each scaled SCALE times, left to right
    with random gaps and a random start; values in [0, 1]. Also each column's class (for the
    column segmenter, scripts/train_digit_columns.py): the middle half of each digit's columns
    its digit + 1, every other column 0, so that neighbouring digits stay apart."""
    size = 8 * SCALE
    out = np.zeros((count, 1, HEIGHT, WIDTH), np.float32)
    columns = np.zeros((count, WIDTH), np.int64)
    texts = []
    for i in range(count):
        picks = rng.choice(pool, DIGITS)
        gaps = rng.integers(0, 3, DIGITS)
        x = int(rng.integers(0, WIDTH - DIGITS * size - gaps.sum() + 1))
        for pick, gap in zip(picks, gaps):
            x += int(gap)
            out[i, 0, :, x : x + size] = np.kron(images[pick], np.ones((SCALE, SCALE), np.float32))
            columns[i, x + size // 4 : x + 3 * size // 4] = labels[pick] + 1
            x += size
        texts.append("".join(str(labels[p]) for p in picks))
    return out, texts, columns


def greedy(probs: np.ndarray) -> list[str]:
    best = probs.argmax(-1)
    return ["".join(str(k - 1) for j, k in enumerate(row) if k and (j == 0 or k != row[j - 1])) for row in best]


def export(model: nn.Module, name: str) -> None:
    """The model as ONNX under OUT: input `image` [N,1,HEIGHT,WIDTH], output `probs`, the batch
    dynamic, opset 17 (the TorchScript exporter)."""
    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, HEIGHT, WIDTH),),
        OUT / name,
        input_names=["image"],
        output_names=["probs"],
        dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def seeded_digits() -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch and numpy seeded, and scikit-learn's digits in [0, 1] with their labels, split into
    the training digits and the held-out ones the evaluation strips use: (rng, images, labels,
    train, held_out). The split is the rng's first draw, so each script that trains on these
    strips holds out the same digits."""
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    order = rng.permutation(len(labels))
    return rng, images, labels, order[:1297], order[1297:]


def main() -> None:
    rng, images, labels, train, held_out = seeded_digits()

    model = StripReader()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    for step in range(3000):
        x, texts, _ = strips(images, labels, train, 64, rng)
        target = torch.tensor([[int(ch) + 1 for ch in t] for t in texts])
        logp = model(torch.from_numpy(x)).clamp_min(1e-8).log().permute(1, 0, 2)  # [T,N,C]
        loss = ctc(logp, target, torch.full((64,), logp.shape[0]), torch.full((64,), DIGITS))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 500 == 0:
            print(f"step {step} ctc {loss.item():.3f}")
    model.eval()

    calib_x, _, _ = strips(images, labels, train, 64, rng)
    eval_x, eval_y, _ = strips(images, labels, held_out, 400, rng)
    with torch.no_grad():
        pred = greedy(model(torch.from_numpy(eval_x)).numpy())
    print(f"eval exact match {np.mean([p == t for p, t in zip(pred, eval_y)]):.4f} on {len(eval_y)} strips")

    export(model, "digit_strips.onnx")
    np.savez_compressed(OUT / "digit_strips.npz", calib_x=calib_x, eval_x=eval_x, eval_y=np.array(eval_y))


if __name__ == "__main__":
    main()
