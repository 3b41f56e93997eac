"""Train a MobileNetV2-style classifier of handwritten digits and export it.

The MobileNet family the benchmark set lacked: inverted residual blocks (1x1 expand, 3x3
depthwise, 1x1 linear projection, residual sums), ReLU6, BatchNorm folded at export; width 0.5
(channels rounded to multiples of 8, the last conv 640 wide). Each image is one of scikit-learn's
bundled `load_digits` images (real handwriting, 8x8) scaled 8x to 64 x 64 and placed at a random
offset in a 96 x 96 frame. Evaluation images use only the held-out digits of
scripts/train_digit_strips.py's split.

Writes examples/data/digit_mobilenet.onnx (opset 17, dynamic batch; input `image` [N,1,96,96]
in [0, 1], output `logits` [N,10]) and examples/data/digit_mobilenet.npz: `calib_x` [64,1,96,96]
from training digits, `eval_x` [400,1,96,96] and `eval_y`, the images stored as uint8 sixteenths
(scikit-learn's own levels). Needs the `train` extra (torch==2.13.0, the CPU wheel, and
scikit-learn); the outputs are committed, so nothing at run time needs torch.

    .venv/bin/pip install -e '.[train]' && .venv/bin/python scripts/train_digit_mobilenet.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digit_strips import OUT, seeded_digits  # noqa: E402

SCALE, FRAME = 8, 96
# (expansion, channels, repeats, stride) of MobileNetV2 at width 0.5.
BLOCKS = ((1, 8, 1, 1), (6, 16, 2, 2), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1), (6, 80, 3, 2), (6, 160, 1, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if relu6 else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        expand = [conv_bn(cin, hidden, 1, 1)] if expansion != 1 else []
        self.body = nn.Sequential(*expand, conv_bn(hidden, hidden, 3, stride, hidden), conv_bn(hidden, cout, 1, 1, relu6=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class DigitMobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(1, 16, 3, 2)]
        channels = 16
        for expansion, out, repeats, stride in BLOCKS:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
        layers += [conv_bn(channels, 640, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(640, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def framed(images: np.ndarray, picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The picked digits scaled SCALE times at random offsets in FRAME x FRAME, as uint8 sixteenths."""
    size = 8 * SCALE
    out = np.zeros((len(picks), 1, FRAME, FRAME), np.uint8)
    for i, pick in enumerate(picks):
        y, x = rng.integers(0, FRAME - size + 1, 2)
        out[i, 0, y : y + size, x : x + size] = np.kron(np.rint(images[pick] * 16), np.ones((SCALE, SCALE))).astype(np.uint8)
    return out


def train_and_export(network: Callable[[], nn.Module], stem: str, steps: int = 1500) -> None:
    """Train the model `network` builds (once the seeds are set) on framed training digits (AdamW,
    one-cycle, batch 64), report its top-1 on 400 framed held-out digits, and write
    examples/data/<stem>.onnx and <stem>.npz."""
    rng, images, labels, train, held_out = seeded_digits()
    model = network()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        picks = rng.choice(train, 64)
        x = torch.from_numpy(framed(images, picks, rng).astype(np.float32) / 16)
        loss = loss_fn(model(x), torch.from_numpy(labels[picks]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    model.eval()

    calib_x = framed(images, rng.choice(train, 64, replace=False), rng)
    eval_picks = rng.choice(held_out, 400, replace=False)
    eval_x, eval_y = framed(images, eval_picks, rng), labels[eval_picks]
    with torch.no_grad():
        pred = model(torch.from_numpy(eval_x.astype(np.float32) / 16)).argmax(1).numpy()
    print(f"eval top-1 {np.mean(pred == eval_y):.4f} on {len(eval_y)} held-out digits")

    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, FRAME, FRAME),), OUT / f"{stem}.onnx", input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    np.savez_compressed(OUT / f"{stem}.npz", calib_x=calib_x, eval_x=eval_x, eval_y=eval_y)


def main() -> None:
    train_and_export(DigitMobileNet, "digit_mobilenet")


if __name__ == "__main__":
    main()
