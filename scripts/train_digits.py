"""Train the demo digit classifier on scikit-learn's bundled `load_digits` and export it.

Writes lowprec_core/_demo/digits.onnx plus its calibration and evaluation data. Needs the
`train` extra (torch==2.13.0, the CPU wheel, and scikit-learn); the outputs are committed,
so nothing at run time needs torch.

    .venv/bin/pip install -e '.[train]' && .venv/bin/python scripts/train_digits.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "lowprec_core" / "_demo"
SEED = 0


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def main() -> None:
    torch.manual_seed(SEED)
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8] in [0,1]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(labels))
    train, evaluation = order[:1297], order[1297:]
    calibration = train[:128]

    model = DigitNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(images[train]), torch.from_numpy(labels[train])
    for epoch in range(40):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(images[evaluation])).argmax(1).numpy() == labels[evaluation]).mean()
    print(f"eval accuracy {accuracy:.4f} on {len(evaluation)} images")

    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        OUT / "digits.onnx",
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=13,
        dynamo=False,
    )
    np.savez_compressed(OUT / "digits_calib.npz", image=images[calibration])
    np.savez_compressed(OUT / "digits_eval.npz", image=images[evaluation])
    np.save(OUT / "digits_eval_labels.npy", labels[evaluation])


if __name__ == "__main__":
    main()
