"""The work dir of a resumable accuracy-aware run: which run it belongs to, and what it keeps.

    WORK/run.json            the run's identity: model, config, budget, evaluation data, labels
    WORK/stats/              the calibration statistics (a resumed run skips calibration)
    WORK/tuning.json         with --tune latency: the latency search and the config it chose, where
                             the search over float layers starts (a resumed run does not re-time)
    WORK/reference/          the FP32 reference outputs
    WORK/journal.jsonl       every evaluation, appended as it finishes
    WORK/iterations/NNNN.json  each iteration with the plan it evaluated
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ._config import AccuracyBudget, QuantConfig
from ._errors import ConfigError
from ._model_io import file_sha256
from ._reports import LatencyTuning
from ._storage import write_text

STATS = "stats"
TUNING = "tuning.json"


def claim(work: Path, model_sha256: str, config: QuantConfig, accuracy: AccuracyBudget, eval_data, labels, *, tune: str = "none",
          tune_batch: int = 1) -> None:
    """A work dir serves one run: the same model, config, budget, evaluation data and tuning (the
    latency search's choice is saved for its batch)."""
    identity = {
        "model_sha256": model_sha256,
        "config": config.model_dump(mode="json"),
        "accuracy": accuracy.model_dump(mode="json"),
        "eval_data": identity_of(eval_data),
        "labels": identity_of(labels),
    }
    if tune != "none":  # absent otherwise: work dirs of untuned runs keep their identity
        identity["tune"] = tune
    if tune != "none" and tune_batch != 1:
        identity["tune_batch"] = tune_batch
    marker = work / "run.json"
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded != identity:
            changed = sorted(k for k in {*identity, *recorded} if recorded.get(k) != identity.get(k))
            raise ConfigError(f"work dir {work} belongs to another run (different {', '.join(changed)}); use a new --work-dir or remove it")
        return
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity, indent=1, sort_keys=True))


def saved_stats(work: Path) -> Path | None:
    """The statistics an earlier run of this work dir saved, if it got that far."""
    return work / STATS if (work / STATS / "stats.json").exists() else None


def save_tuning(work: Path, tuning: LatencyTuning, config: QuantConfig) -> None:
    """The latency search's result and the config it chose, written once it is complete."""
    write_text(work / TUNING, json.dumps({"tuning": tuning.model_dump(mode="json"), "config": config.model_dump(mode="json")}, indent=1))


def saved_tuning(work: Path) -> tuple[LatencyTuning, QuantConfig] | None:
    """What an earlier run of this work dir chose, if its latency search finished."""
    path = work / TUNING
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return LatencyTuning.model_validate(saved["tuning"]), QuantConfig.model_validate(saved["config"])


def identity_of(value) -> str | None:
    """What names a data source across runs: a file's sha256, a folder's file list, else its repr."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and not str(value).startswith(("s3://", "file://")):
        path = Path(value)
        if path.is_file():
            return file_sha256(path)
        if path.is_dir():
            return json.dumps(sorted((p.name, p.stat().st_size) for p in path.iterdir()))
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return str(value)
