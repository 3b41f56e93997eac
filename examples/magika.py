"""Magika (Google's file-type classifier), a byte-sequence model, on real files.

The model is the `magika` PyPI package's `standard_v3_3`: it reads the first and the last 1,024
bytes of a file (whitespace stripped, padded with token 256) as int32 `bytes` [N, 2048], embeds
them, runs a convolution and two dense layers, and scores 214 content types. The files are the
running Python's standard library (sources, test data: XML, PEM, images, audio, archives,
shared objects), grouped by suffix so that no one type dominates, in a seeded order.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import json
import sysconfig
from pathlib import Path

import numpy as np

MODEL = "models/standard_v3_3"
PADDING = 256
BLOCK, BEG, END = 4096, 1024, 1024  # the model's config.min.json


def model_path() -> Path:
    spec = importlib.util.find_spec("magika")  # found without importing it
    if spec is None or spec.origin is None:
        raise FileNotFoundError("magika is not installed: make venv (pip install --no-deps magika)")
    return Path(spec.origin).parent / MODEL / "model.onnx"


def labels() -> list[str]:
    return json.loads((model_path().parent / "config.min.json").read_text())["target_labels_space"]


def features(data: bytes) -> np.ndarray:
    """Magika's v2 features: up to BEG bytes from the start of the first block after leading
    whitespace, padded after; up to END bytes from the end of the last block before trailing
    whitespace, padded before."""
    head = data[:BLOCK].lstrip()[:BEG]
    tail = data[-BLOCK:].rstrip()[-END:] if data else b""
    row = np.full(BEG + END, PADDING, dtype=np.int32)
    row[: len(head)] = np.frombuffer(head, np.uint8)
    row[BEG + END - len(tail) :] = np.frombuffer(tail, np.uint8)
    return row


@functools.cache
def corpus(per_suffix: int = 40, seed: int = 0) -> tuple[Path, ...]:
    """Files of the standard library, at most `per_suffix` of each suffix, in a seeded order.
    Files under 64 bytes are left out: Magika decides those without the model."""
    root = Path(sysconfig.get_paths()["stdlib"])
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or "site-packages" in path.parts or not path.is_file() or path.is_symlink():
            continue
        if path.stat().st_size >= 64:
            groups[path.suffix].append(path)
    rng = np.random.default_rng(seed)
    chosen = []
    for suffix in sorted(groups):
        files = groups[suffix]
        chosen += [files[i] for i in sorted(rng.choice(len(files), min(per_suffix, len(files)), replace=False))]
    return tuple(chosen[i] for i in rng.permutation(len(chosen)))


def split(calibration: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, evaluation rows): the first `calibration` files, then the rest."""
    rows = np.stack([features(path.read_bytes()) for path in corpus()])
    return rows[:calibration], rows[calibration:]
