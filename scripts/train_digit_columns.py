"""Train a 1-D U-Net that labels every column of a handwritten digit strip, and export it.

The segmentation family the benchmark set lacked, shaped like an EEG U-Net: the strip's 24 pixel
rows are the channels of a 136-step sequence; strided 1-D convolutions go down twice, 1-D
transposed convolutions come back up, skip connections join each level, GELU between (exported
as ONNX's Erf form). Each column is classed 0 (no digit) or digit + 1 over the middle half of a
digit's columns, so neighbouring digits stay apart and the runs of a column labelling read as
the strip's digits.

It reads the same strips as the CRNN reader (scripts/train_digit_strips.py, whose strip maker it
imports, with the same split of scikit-learn's digits): it trains on fresh strips of the training
digits, and is evaluated and calibrated on the strips committed in examples/data/digit_strips.npz
(the evaluation strips use held-out digits only). Writes examples/data/digit_columns.onnx
(opset 17, dynamic batch). Needs the `train` extra (torch==2.13.0, the CPU wheel, and
scikit-learn); the model is committed, so nothing at run time needs torch.

    .venv/bin/pip install -e '.[train]' && .venv/bin/python scripts/train_digit_columns.py
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from train_digit_strips import HEIGHT, OUT, export, greedy, seeded_digits, strips

CLASSES = 11  # no digit + 0..9


def block(channels_in: int, channels_out: int, kernel: int = 5) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(channels_in, channels_out, kernel, padding=kernel // 2), nn.GELU())


class ColumnSegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(block(HEIGHT, 32), block(32, 32))
        self.down1 = nn.Sequential(nn.Conv1d(32, 64, 4, stride=2, padding=1), nn.GELU())
        self.enc2 = block(64, 64)
        self.down2 = nn.Sequential(nn.Conv1d(64, 96, 4, stride=2, padding=1), nn.GELU())
        self.bottom = block(96, 96, 3)
        self.up2 = nn.ConvTranspose1d(96, 64, 4, stride=2, padding=1)
        self.dec2 = block(128, 64, 3)
        self.up1 = nn.ConvTranspose1d(64, 32, 4, stride=2, padding=1)
        self.dec1 = block(64, 32, 3)
        self.head = nn.Conv1d(32, CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x.squeeze(1))  # [N,32,136]
        s2 = self.enc2(self.down1(s1))  # [N,64,68]
        b = self.bottom(self.down2(s2))  # [N,96,34]
        d2 = self.dec2(torch.cat([self.up2(b), s2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], 1))
        return self.head(d1).softmax(1)  # [N,11,136] per-column class probabilities


def main() -> None:
    rng, images, labels, train, _ = seeded_digits()  # the CRNN reader's split: its evaluation strips hold the rest

    model = ColumnSegmenter()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_of = nn.NLLLoss()
    for step in range(2500):
        x, _, columns = strips(images, labels, train, 64, rng)
        loss = loss_of(model(torch.from_numpy(x)).clamp_min(1e-8).log(), torch.from_numpy(columns))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 500 == 0:
            print(f"step {step} nll {loss.item():.3f}")
    model.eval()

    with np.load(OUT / "digit_strips.npz") as data:
        eval_x, eval_y = data["eval_x"], data["eval_y"]
    with torch.no_grad():
        pred = greedy(np.moveaxis(model(torch.from_numpy(eval_x)).numpy(), 1, -1))  # columns for time steps
    print(f"eval exact match {np.mean([p == t for p, t in zip(pred, eval_y)]):.4f} on {len(eval_y)} strips")
    export(model, "digit_columns.onnx")


if __name__ == "__main__":
    main()
