"""Statistics as files: stats.json (identity, tensor list) + stats.npz (the arrays)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StatsError

FORMAT = "lowprec-stats/1"


@dataclass(frozen=True)
class TensorStats:
    minimum: float
    maximum: float
    count: int
    nonfinite: int = 0


@dataclass(frozen=True)
class Statistics:
    """Per-tensor statistics of one model (by sha256) over one calibration set."""

    model_sha256: str
    samples: int
    tensors: dict[str, TensorStats] = field(default_factory=dict)

    def require(self, name: str) -> TensorStats:
        try:
            return self.tensors[name]
        except KeyError:
            raise StatsError(f"statistics have no entry for tensor {name!r}; recalibrate this model") from None

    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = sorted(self.tensors)
        meta = {"format": FORMAT, "model_sha256": self.model_sha256, "samples": self.samples, "tensors": names}
        arrays = {
            "min": np.array([self.tensors[n].minimum for n in names], dtype=np.float64),
            "max": np.array([self.tensors[n].maximum for n in names], dtype=np.float64),
            "count": np.array([self.tensors[n].count for n in names], dtype=np.int64),
            "nonfinite": np.array([self.tensors[n].nonfinite for n in names], dtype=np.int64),
        }
        _atomic_write(directory / "stats.npz", lambda h: np.savez(h, **arrays))
        _atomic_write(directory / "stats.json", lambda h: h.write(json.dumps(meta, indent=1).encode()))
        return directory


def load_statistics(directory: str | os.PathLike[str], *, model_sha256: str | None = None) -> Statistics:
    directory = Path(directory)
    meta_path, array_path = directory / "stats.json", directory / "stats.npz"
    if not meta_path.is_file() or not array_path.is_file():
        raise StatsError(f"{directory}: not a statistics folder (expected stats.json and stats.npz)")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(array_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("min", "max", "count", "nonfinite")}
    except (OSError, ValueError, KeyError) as err:
        raise StatsError(f"{directory}: unreadable statistics ({err})") from None
    if meta.get("format") != FORMAT:
        raise StatsError(f"{directory}: statistics format {meta.get('format')!r}; expected {FORMAT!r}")
    if model_sha256 is not None and meta["model_sha256"] != model_sha256:
        raise StatsError(
            f"{directory}: statistics belong to model sha256 {meta['model_sha256'][:12]}…, "
            f"not to this model ({model_sha256[:12]}…)"
        )
    names = meta["tensors"]
    if len(names) != len(arrays["min"]):
        raise StatsError(f"{directory}: stats.json lists {len(names)} tensors but stats.npz has {len(arrays['min'])}")
    tensors = {
        name: TensorStats(float(arrays["min"][i]), float(arrays["max"][i]), int(arrays["count"][i]), int(arrays["nonfinite"][i]))
        for i, name in enumerate(names)
    }
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
