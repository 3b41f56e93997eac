"""Many models under one prefix: which of them still lack an INT8 version for a config.

Layout of a models prefix, one folder a model (the folder's name is the registry name):
    PREFIX/NAME/model.onnx     the FP32 model
    PREFIX/NAME/calib.npz      calibration data
    PREFIX/NAME/eval.npz       evaluation data
    PREFIX/NAME/labels.npy     optional: labels for the evaluation data
A version's address is the source model's sha256 plus the config (registry.version_id), so a
model is done exactly when REGISTRY/NAME/<that address>/manifest.json exists.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._config import QuantConfig
from ._errors import ConfigError
from ._model_io import file_sha256
from ._records import Record
from ._registry import MANIFEST, check_name, version_id
from ._storage import open_store

MODEL, CALIB, EVAL, LABELS = "model.onnx", "calib.npz", "eval.npz", "labels.npy"


class FleetModel(Record):
    model_name: str  # its name in the registry (the folder's name); not `name`, which kfp loop items reserve
    model_uri: str
    calib_uri: str
    eval_uri: str
    labels_uri: str  # "" when the model has none
    source_sha256: str
    version: str  # the version this config gives it


def scan(models_prefix: str, config: QuantConfig) -> list[FleetModel]:
    """Every model folder under the prefix, with the version address `config` gives it."""
    store, key = open_store(models_prefix)
    base = key.strip("/")
    start = f"{base}/" if base else ""
    keys = set(store.list(start))
    names = sorted({k[len(start):].split("/")[0] for k in keys if k[len(start):].count("/") == 1 and k.endswith(f"/{MODEL}")})
    if not names:
        raise ConfigError(f"no models under {models_prefix}: expected NAME/{MODEL} folders (with {CALIB} and {EVAL})")
    for name in names:  # a folder's name becomes a registry name: refuse a bad one before any work
        check_name(name)
    root = models_prefix.rstrip("/")
    found = []
    with tempfile.TemporaryDirectory(prefix="lowprec-fleet-") as tmp:
        for name in names:
            missing = [f for f in (CALIB, EVAL) if f"{start}{name}/{f}" not in keys]
            if missing:
                raise ConfigError(f"{root}/{name}/ has no {' or '.join(missing)}: every model folder needs {CALIB} and {EVAL}")
            local = Path(tmp) / f"{name}.onnx"
            store.get(f"{start}{name}/{MODEL}", local)
            sha = file_sha256(local)
            found.append(FleetModel(
                model_name=name,
                model_uri=f"{root}/{name}/{MODEL}",
                calib_uri=f"{root}/{name}/{CALIB}",
                eval_uri=f"{root}/{name}/{EVAL}",
                labels_uri=f"{root}/{name}/{LABELS}" if f"{start}{name}/{LABELS}" in keys else "",
                source_sha256=sha,
                version=version_id(sha, config.model_dump(mode="json")),
            ))
    return found


def pending(models_prefix: str, registry_uri: str, config: QuantConfig) -> list[FleetModel]:
    """The models under the prefix with no published version for `config` in the registry."""
    store, key = open_store(registry_uri)
    base = key.strip("/")
    todo = []
    for model in scan(models_prefix, config):
        manifest = "/".join(p for p in (base, model.model_name, model.version, MANIFEST) if p)
        if not store.exists(manifest):
            todo.append(model)
    return todo
