"""Lineage that travels inside an INT8 model: the source it came from and the config that made it."""

from __future__ import annotations

import json

import onnx

from ._version import __version__
from ._config import QuantConfig

META_PREFIX = "lowprec."


def stamp(model: onnx.ModelProto, source_sha256: str, config: QuantConfig) -> None:
    """Replace the model's lowprec metadata with its source's sha256, the config and this version."""
    entries = {
        "source_sha256": source_sha256,
        "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "version": __version__,
    }
    kept = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in sorted(entries.items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = f"{META_PREFIX}{key}", value


def read(model: onnx.ModelProto) -> tuple[str | None, dict]:
    """(source sha256 or None, config as a dict) from a stamped model; (None, {}) if unstamped."""
    meta = {p.key: p.value for p in model.metadata_props}
    return meta.get(f"{META_PREFIX}source_sha256"), json.loads(meta.get(f"{META_PREFIX}config", "{}"))
