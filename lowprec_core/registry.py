"""Publish a version (files, then manifest last) to a registry URI, and fetch one back verified."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from .errors import ConfigError, IntegrityError, RegistryError
from .model_io import file_sha256
from .storage import open_store

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PACKAGES = ("lowprec", "onnx", "onnxruntime", "numpy", "kfp")


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    format: str = "lowprec-manifest/1"
    name: str
    version: str
    created: str
    source: dict[str, str | None]
    config: dict
    files: dict[str, FileEntry]
    packages: dict[str, str]


def version_id(source_sha256: str, config: dict) -> str:
    """Content address of a version: the source model plus the config that quantized it."""
    blob = json.dumps({"source": source_sha256, "config": config}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def publish(
    files: dict[str, Path],
    registry: str,
    name: str,
    *,
    source_uri: str | None,
    source_sha256: str,
    config: dict,
) -> tuple[str, Manifest]:
    """Upload `files` (registry key -> local path) and then manifest.json; return (URI, manifest).

    Nothing is visible as a version until the manifest lands. On any failure the objects
    already uploaded are removed again.
    """
    if not _NAME.match(name):
        raise ConfigError(f"invalid model name {name!r}; expected letters, digits, '.', '_' or '-'")
    for key, path in files.items():
        if not Path(path).is_file():
            raise ConfigError(f"cannot publish {key!r}: {path} is not a file")
    store, prefix = open_store(registry)
    store.check()
    version = version_id(source_sha256, config)
    base = "/".join(p for p in (prefix.strip("/"), name, version) if p)
    manifest = Manifest(
        name=name,
        version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source={"uri": source_uri, "sha256": source_sha256},
        config=config,
        files={key: FileEntry(sha256=file_sha256(path), bytes=Path(path).stat().st_size) for key, path in sorted(files.items())},
        packages={"python": platform.python_version(), **{pkg: _version(pkg) for pkg in _PACKAGES}},
    )
    # An older manifest at this address would vouch for files being replaced: hide it first.
    store.delete(f"{base}/{MANIFEST}")
    uploaded: list[str] = []
    try:
        for key, path in sorted(files.items()):
            store.put(f"{base}/{key}", Path(path))
            uploaded.append(f"{base}/{key}")
        with tempfile.TemporaryDirectory(prefix="lowprec-manifest-") as tmp:
            manifest_path = Path(tmp) / MANIFEST
            manifest_path.write_text(manifest.model_dump_json(indent=1))
            store.put(f"{base}/{MANIFEST}", manifest_path)
    except BaseException:
        for key in uploaded:
            try:
                store.delete(key)
            except RegistryError as err:  # keep the original error; report the leftover
                log.error("could not remove %s after a failed publish: %s", key, err)
        raise
    uri = f"{store.uri.rstrip('/')}/{base}"
    log.info("published %s", uri)
    return uri, manifest


def fetch(version_uri: str, destination: str | os.PathLike[str]) -> Manifest:
    """Download a published version and verify every file against its manifest."""
    store, base = open_store(version_uri)
    base = base.strip("/")
    destination = Path(destination)
    key = f"{base}/{MANIFEST}" if base else MANIFEST
    if not store.exists(key):
        raise RegistryError(f"no {MANIFEST} at {version_uri}: not a published version")
    store.get(key, destination / MANIFEST)
    try:
        manifest = Manifest.model_validate_json((destination / MANIFEST).read_text())
    except ValueError as err:
        raise IntegrityError(f"{version_uri}: manifest is not valid ({str(err).splitlines()[0]})") from None
    for rel, entry in manifest.files.items():
        target = destination / rel
        store.get(f"{base}/{rel}" if base else rel, target)
        digest = file_sha256(target)
        if digest != entry.sha256:
            raise IntegrityError(f"{version_uri}/{rel}: sha256 {digest[:12]}… does not match the manifest's {entry.sha256[:12]}…")
    return manifest


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(registry: str, name: str) -> list[tuple[str, Manifest]]:
    """Every published version of `name` as (URI, manifest), oldest first."""
    store, prefix = open_store(registry)
    base = "/".join(p for p in (prefix.strip("/"), name) if p)
    found = []
    with tempfile.TemporaryDirectory(prefix="lowprec-manifests-") as tmp:
        for key in store.list(base + "/"):
            if key.endswith(f"/{MANIFEST}") and key.count("/") == base.count("/") + 2:
                local = Path(tmp) / f"{len(found)}.json"
                store.get(key, local)
                manifest = Manifest.model_validate_json(local.read_text())
                found.append((f"{store.uri.rstrip('/')}/{key.rsplit('/', 1)[0]}", manifest))
    return sorted(found, key=lambda item: (item[1].created, item[1].version))
