"""Calibration and evaluation data: .npz and .npz-folder readers, batching, feed checks."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .errors import DataError

Feed = dict[str, np.ndarray]
DataSource = str | os.PathLike[str] | Iterable[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return specs


def check_feed(feed: Mapping[str, np.ndarray], specs: list[InputSpec], where: str) -> Feed:
    """Return the feed as arrays, or raise DataError naming the first mismatch."""
    expected = {spec.name for spec in specs}
    missing = sorted(expected - set(feed))
    if missing:
        raise DataError(f"{where}: missing model input {missing[0]!r}; the model expects {sorted(expected)}")
    extra = sorted(set(feed) - expected)
    if extra:
        raise DataError(f"{where}: {extra[0]!r} is not a model input; the model expects {sorted(expected)}")
    out: Feed = {}
    for spec in specs:
        array = np.asarray(feed[spec.name])
        if array.dtype != spec.dtype:
            raise DataError(f"{where}: input {spec.name!r} has dtype {array.dtype}; the model expects {spec.dtype}")
        if array.ndim != len(spec.shape):
            raise DataError(
                f"{where}: input {spec.name!r} has rank {array.ndim} (shape {list(array.shape)}); "
                f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                raise DataError(
                    f"{where}: input {spec.name!r} has size {got} on axis {axis}; the model expects {want}"
                )
        out[spec.name] = array
    return out


def iter_feeds(
    source: DataSource,
    specs: list[InputSpec],
    *,
    batch_size: int = 16,
    max_samples: int | None = None,
) -> Iterator[Feed]:
    """Yield checked feeds from an .npz (sliced along axis 0), a folder of .npz, or dicts."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            feeds: Iterable[Mapping[str, np.ndarray]] = _folder_feeds(path)
        elif path.is_file():
            fixed = _fixed_batch(specs)
            feeds = _sliced_feeds(path, fixed or batch_size)
        else:
            raise DataError(f"data not found: {path}; expected an .npz file or a folder of .npz files")
        label = str(path)
    else:
        feeds, label = source, "data"
    seen = 0
    for index, feed in enumerate(feeds):
        checked = check_feed(feed, specs, f"{label} (feed {index})")
        if max_samples is not None:
            remaining = max_samples - seen
            if remaining <= 0:
                return
            n = _batch_len(checked)
            if n > remaining:
                checked = {k: v[:remaining] for k, v in checked.items()}
        seen += _batch_len(checked)
        yield checked
    if seen == 0:
        raise DataError(f"{label}: holds no samples")


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    path = Path(path)
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read labels ({err}); expected a .npy array, one label per sample") from None
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iuUS":
        raise DataError(
            f"{path}: labels must be a 1-D array of integers or strings, got shape {getattr(labels, 'shape', '?')} "
            f"dtype {getattr(labels, 'dtype', '?')}"
        )
    return labels


def _batch_len(feed: Feed) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def _fixed_batch(specs: list[InputSpec]) -> int | None:
    dims = {spec.shape[0] for spec in specs if spec.shape}
    if len(dims) == 1:
        (dim,) = dims
        if isinstance(dim, int) and dim > 0:
            return dim
    return None


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


def _sliced_feeds(path: Path, batch_size: int) -> Iterator[Feed]:
    with _open_npz(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if not arrays:
        raise DataError(f"{path}: the .npz holds no arrays")
    lengths = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise DataError(f"{path}: arrays must share a leading batch axis; got lengths {lengths}")
    total = next(iter(lengths.values()))
    for start in range(0, total, batch_size):
        yield {name: a[start : start + batch_size] for name, a in arrays.items()}


def _folder_feeds(path: Path) -> Iterator[Feed]:
    files = sorted(p for p in path.iterdir() if p.suffix == ".npz")
    if not files:
        raise DataError(f"{path}: folder holds no .npz files")
    for file in files:
        with _open_npz(file) as archive:
            yield {name: archive[name] for name in archive.files}
