"""Statistics as files: stats.json (identity, tensor list) + stats.npz (the arrays)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .._errors import StatsError
from .._struct import Struct, factory

FORMAT = "lowprec-stats/2"
_SCALARS = ("minimum", "maximum", "mean_min", "mean_max", "radius")
_COUNTS = ("count", "nonfinite")
_CHANNEL = ("channel_absmax", "channel_mean", "channel_min", "channel_max")


class TensorStats(Struct):
    minimum: float
    maximum: float
    count: int
    nonfinite: int = 0
    mean_min: float = 0.0
    mean_max: float = 0.0
    radius: float = 0.0
    histogram: np.ndarray | None = None  # bins over [-radius, radius]
    channel_absmax: np.ndarray | None = None
    channel_mean: np.ndarray | None = None
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    rank: int = -1  # the tensor's dimensions in calibration, which shape inference may not know; -1: unknown

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return all(_same(getattr(self, f), getattr(other, f)) for f in self._fields)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return a == b


class Statistics(Struct):
    """Per-tensor statistics of one model (by sha256) over one calibration set."""

    model_sha256: str
    samples: int
    tensors: dict[str, TensorStats] = factory(dict)

    def require(self, name: str) -> TensorStats:
        try:
            return self.tensors[name]
        except KeyError:
            raise StatsError(f"statistics have no entry for tensor {name!r}; recalibrate this model") from None

    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = sorted(self.tensors)
        stats = [self.tensors[n] for n in names]
        meta = {"format": FORMAT, "model_sha256": self.model_sha256, "samples": self.samples, "tensors": names}
        arrays: dict[str, np.ndarray] = {k: np.array([getattr(s, k) for s in stats], dtype=np.float64) for k in _SCALARS}
        arrays.update({k: np.array([getattr(s, k) for s in stats], dtype=np.int64) for k in (*_COUNTS, "rank")})
        bins = max((s.histogram.size for s in stats if s.histogram is not None), default=0)
        arrays["histogram"] = np.array(
            [s.histogram if s.histogram is not None else np.zeros(bins, np.int64) for s in stats], dtype=np.int64
        ).reshape(len(stats), bins)
        for i, s in enumerate(stats):
            for key in _CHANNEL:
                if getattr(s, key) is not None:
                    arrays[f"{key}/{i}"] = getattr(s, key)
        _atomic_write(directory / "stats.npz", lambda h: np.savez_compressed(h, **arrays))
        _atomic_write(directory / "stats.json", lambda h: h.write(json.dumps(meta, indent=1).encode()))
        return directory


def load_statistics(directory: str | os.PathLike[str], *, model_sha256: str | None = None) -> Statistics:
    directory = Path(directory)
    meta_path, array_path = directory / "stats.json", directory / "stats.npz"
    if not meta_path.is_file() or not array_path.is_file():
        raise StatsError(f"{directory}: not a statistics folder (expected stats.json and stats.npz)")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise StatsError(f"{directory}: statistics format {meta.get('format')!r}; expected {FORMAT!r} (recalibrate)")
        with np.load(array_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        names = meta["tensors"]
        tensors = {}
        for i, name in enumerate(names):
            values = {k: float(arrays[k][i]) for k in _SCALARS} | {k: int(arrays[k][i]) for k in _COUNTS}
            values["rank"] = int(arrays["rank"][i]) if "rank" in arrays else -1  # files from before ranks were kept
            histogram = arrays["histogram"][i] if arrays["histogram"].shape[1] and values["radius"] > 0 else None
            extra = {k: arrays[f"{k}/{i}"] for k in _CHANNEL if f"{k}/{i}" in arrays}
            tensors[name] = TensorStats(histogram=histogram, **values, **extra)
    except StatsError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise StatsError(f"{directory}: unreadable statistics ({err.__class__.__name__}: {err})") from None
    if model_sha256 is not None and meta["model_sha256"] != model_sha256:
        raise StatsError(
            f"{directory}: statistics belong to model sha256 {meta['model_sha256'][:12]}…, "
            f"not to this model ({model_sha256[:12]}…)"
        )
    return Statistics(meta["model_sha256"], int(meta["samples"]), tensors)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
