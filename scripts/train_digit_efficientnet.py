"""Train an EfficientNet-B0-style classifier of handwritten digits and export it.

The EfficientNet family (and MobileNetV3's squeeze-excite blocks) as the benchmark set lacked
them: MBConv blocks (1x1 expand, 3x3 or 5x5 depthwise, squeeze-excite on the pooled tensor,
1x1 linear projection, residual sums), SiLU everywhere (x * sigmoid(x), exported as a Sigmoid and
a Mul), BatchNorm folded at export. B0's stages at width 0.5 (channels rounded to multiples of
8, the last conv 640 wide). The images are scripts/train_digit_mobilenet.py's: scikit-learn's
bundled digits scaled to 64 x 64 at a random offset in a 96 x 96 frame, the same split.

Writes examples/data/digit_efficientnet.onnx (opset 17, dynamic batch; input `image`
[N,1,96,96] in [0, 1], output `logits` [N,10]) and examples/data/digit_efficientnet.npz
(`calib_x` [64,1,96,96], `eval_x` [400,1,96,96], `eval_y`, uint8 sixteenths). Needs the `train`
extra (torch==2.13.0, the CPU wheel, and scikit-learn); the outputs are committed.

    .venv/bin/pip install -e '.[train]' && .venv/bin/python scripts/train_digit_efficientnet.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digit_mobilenet import train_and_export  # noqa: E402

# (expansion, channels, repeats, stride, kernel) of EfficientNet-B0 at width 0.5.
BLOCKS = ((1, 8, 1, 1, 3), (6, 16, 2, 2, 3), (6, 24, 2, 2, 5), (6, 40, 3, 2, 3), (6, 56, 3, 1, 5), (6, 96, 4, 2, 5), (6, 160, 1, 1, 3))


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, silu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if silu else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel weights from the pooled tensor: 1x1 reduce (to a quarter of the block's input
    channels), SiLU, 1x1 expand, sigmoid, times the input."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(pooled))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        expand = [conv_bn(cin, hidden, 1, 1)] if expansion != 1 else []
        self.body = nn.Sequential(*expand, conv_bn(hidden, hidden, kernel, stride, hidden), SqueezeExcite(hidden, max(1, cin // 4)),
                                  conv_bn(hidden, cout, 1, 1, silu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class DigitEfficientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(1, 16, 3, 2)]
        channels = 16
        for expansion, out, repeats, stride, kernel in BLOCKS:
            for i in range(repeats):
                layers.append(MBConv(channels, out, stride if i == 0 else 1, expansion, kernel))
                channels = out
        layers += [conv_bn(channels, 640, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(640, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


if __name__ == "__main__":
    train_and_export(DigitEfficientNet, "digit_efficientnet")
