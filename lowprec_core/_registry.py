"""Publish a version to a registry URI, fetch one back verified, and collect what failed publishes left.

Layout under REGISTRY/NAME/VERSION/ (VERSION: the content address of source model + config):
    revisions/REV/KEY            the files of one publish, REV unique to it (UTC time + random)
    revisions/REV/manifest.json  written once every file of REV is in: REV is complete
    manifest.json                a copy of the newest complete revision's manifest: the version

A publish writes only under its own REV until its last step replaces manifest.json, so a
version is never without a complete revision, publishers never touch each other's objects, and
a publish that fails (or is killed) leaves at most an incomplete REV that no manifest names:
invisible to fetch and versions, and removed by `gc`. Earlier revisions are kept.
Format 1 versions (files beside manifest.json, no revisions/) are still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import secrets
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._errors import ConfigError, IntegrityError, RegistryError
from ._model_io import file_sha256
from ._records import Record, ValidationError, check
from ._storage import ObjectStore, check_key, open_store, temp_path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REVISIONS = "revisions"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[0-9a-f]{16}")
_REVISION = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}")
_PACKAGES = ("lowprec", "onnx", "onnxruntime", "numpy", "kfp")
_MANIFEST_LIMIT = 16 << 20  # bytes: a manifest lists files, it is never this large


class FileEntry(Record):
    sha256: str
    bytes: int

    @check("sha256")
    def _hex(value: str, field: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"sha256 {value[:80]!r} is not 64 lowercase hex digits")
        return value

    @check("bytes")
    def _size(value: int, field: str) -> int:
        if value < 0:
            raise ValueError(f"bytes {value} is negative")
        return value


class Manifest(Record):
    format: str = "lowprec-manifest/2"
    name: str
    version: str
    revision: str | None = None  # format 2: the files live under revisions/REVISION/; None: format 1, beside the manifest
    created: str
    source: dict[str, str | None]
    config: dict
    files: dict[str, FileEntry]
    packages: dict[str, str]

    @check("name")
    def _name(value: str, field: str) -> str:
        check_name(value, error=ValueError)
        return value

    @check("revision")
    def _revision(value: str | None, field: str) -> str | None:
        if value is not None and not _REVISION.fullmatch(value):
            raise ValueError(f"revision {value[:80]!r} is not of the form YYYYMMDDTHHMMSSZ-xxxxxxxx")
        return value

    @check("files")
    def _paths(files: dict[str, FileEntry], field: str) -> dict[str, FileEntry]:
        for key in files:
            check_key(key, what="file path")
            if key == MANIFEST:
                raise ValueError(f"file path {key!r} would overwrite the manifest")
        folders = {str(parent) for key in files for parent in Path(key).parents}
        clash = sorted(set(files) & folders)
        if clash:
            raise ValueError(f"file path {clash[0]!r} is also a folder of another file")
        return files

    def same_content(self, other: Manifest) -> bool:
        keys = ("source", "config", "files")
        return self.model_dump(include=set(keys)) == other.model_dump(include=set(keys))


def check_name(name: str, *, error: type[Exception] = ConfigError) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise error(f"invalid model name {name!r}; expected 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


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
    """Upload `files` (registry key -> local path) as a new revision of the version, then make
    it the version's manifest; return (version URI, manifest).

    The same files, source and config as the version's current manifest publish nothing. On
    failure this revision's objects are removed again; an interrupted publish leaves them to `gc`.
    """
    check_name(name)
    for key, path in files.items():
        try:
            check_key(key, what="registry path")
        except ValueError as err:
            raise ConfigError(f"cannot publish {path}: {err}") from None
        if key == MANIFEST:
            raise ConfigError(f"cannot publish {path} as {key!r}: that name is the version's manifest")
        if not Path(path).is_file():
            raise ConfigError(f"cannot publish {key!r}: {path} is not a file")
    store, prefix = open_store(registry)
    store.check()
    version = version_id(source_sha256, config)
    base = _join(prefix.strip("/"), name, version)
    uri = f"{store.uri.rstrip('/')}/{base}"
    now = datetime.now(timezone.utc)
    revision = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    manifest = Manifest(
        name=name,
        version=version,
        revision=revision,
        created=now.isoformat(timespec="seconds"),
        source={"uri": source_uri, "sha256": source_sha256},
        config=config,
        files={key: FileEntry(sha256=file_sha256(path), bytes=Path(path).stat().st_size) for key, path in sorted(files.items())},
        packages={"python": platform.python_version(), **{pkg: _version(pkg) for pkg in _PACKAGES}},
    )
    current = _current(store, base, uri)
    if current is not None and current.same_content(manifest):
        log.info("%s already holds these files (revision %s): nothing to publish", uri, current.revision)
        return uri, current
    own = _join(base, REVISIONS, revision)
    written: list[str] = []
    try:
        for key, path in sorted(files.items()):
            written.append(f"{own}/{key}")
            store.put(f"{own}/{key}", Path(path))
        with tempfile.TemporaryDirectory(prefix="lowprec-manifest-") as tmp:
            manifest_path = Path(tmp) / MANIFEST
            manifest_path.write_text(manifest.model_dump_json(indent=1))
            written.append(f"{own}/{MANIFEST}")
            store.put(f"{own}/{MANIFEST}", manifest_path)  # the revision is complete
            written = []  # from here on a manifest may name it: it is never removed
            store.put(f"{base}/{MANIFEST}", manifest_path)  # the version now shows it
    except BaseException:
        _remove(store, written)
        raise
    if current is not None:
        log.warning("%s: revision %s replaces %s as the version's manifest (%s/%s/%s kept)",
                    uri, revision, current.revision or "1", uri, REVISIONS, current.revision or "")
    log.info("published %s (revision %s)", uri, revision)
    return uri, manifest


def fetch(version_uri: str, destination: str | os.PathLike[str], *, revision: str | None = None) -> Manifest:
    """Download a published version (its current manifest, or `revision`) into `destination`
    and verify every file's sha256 and size. Files are written to temporary names and renamed
    only once all of them verified, manifest.json last; a failed fetch leaves `destination`
    as it found it."""
    store, base = open_store(version_uri)
    base = base.strip("/")
    destination = Path(destination)
    if revision is not None and not _REVISION.fullmatch(revision):
        raise ConfigError(f"revision {revision!r} is not of the form YYYYMMDDTHHMMSSZ-xxxxxxxx")
    if store.holds(destination):
        raise ConfigError(f"--out {destination} is inside the registry folder {version_uri}; fetch into a folder outside it")
    manifest_key = _join(base, REVISIONS, revision, MANIFEST) if revision else _join(base, MANIFEST)
    found = _read_manifest(store, manifest_key, f"{version_uri}/{manifest_key[len(base):].lstrip('/')}")
    if found is None:
        what = f"revision {revision}" if revision else MANIFEST
        raise RegistryError(f"no {what} at {version_uri}: not a published version")
    manifest, raw = found
    if revision is not None and manifest.revision != revision:
        raise IntegrityError(f"{version_uri}: the manifest of revision {revision} names revision {manifest.revision}")
    objects = _join(base, REVISIONS, manifest.revision) if manifest.revision else base
    targets = {rel: _target(destination, rel) for rel in manifest.files}
    _target(destination, MANIFEST)
    staged: dict[Path, Path] = {}
    made: list[Path] = []
    try:
        for rel, entry in manifest.files.items():
            target = targets[rel]
            made += _make_folders(target.parent)
            staged[target] = temp_path(target)
            store.get(_join(objects, rel), staged[target])
            _verify(staged[target], entry, f"{version_uri}/{rel}")
        made += _make_folders(destination)
        manifest_target = destination / MANIFEST
        staged[manifest_target] = temp_path(manifest_target)
        staged[manifest_target].write_bytes(raw)
        for target, tmp in staged.items():  # manifest.json last: it says the folder is complete
            os.replace(tmp, target)
    except OSError as err:
        _unstage(staged, made)
        raise RegistryError(f"cannot write under {destination}: {err.strerror or err}") from None
    except BaseException:
        _unstage(staged, made)
        raise
    return manifest


def file_uri(version_uri: str, manifest: Manifest, rel: str) -> str:
    """Where one file of a published version lives (under its revision, or beside a format 1 manifest)."""
    if rel not in manifest.files:
        raise ConfigError(f"{version_uri} has no file {rel!r}; it holds {sorted(manifest.files)}")
    return _join(version_uri.rstrip("/"), REVISIONS if manifest.revision else None, manifest.revision, rel)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """A manifest from untrusted bytes, or IntegrityError naming what is wrong with it."""
    if len(raw) > _MANIFEST_LIMIT:
        raise IntegrityError(f"{where}: {len(raw)} bytes is not a manifest (limit {_MANIFEST_LIMIT})")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as err:
        place = ".".join(str(p) for p in err.loc)
        raise IntegrityError(f"{where}: manifest refused at {place or 'top level'}: {err.msg}") from None


def versions(registry: str, name: str) -> list[tuple[str, Manifest]]:
    """Every published version of `name` as (URI, current manifest), oldest first."""
    check_name(name)
    store, prefix = open_store(registry)
    base = _join(prefix.strip("/"), name)
    found = []
    for key in store.list(base + "/"):
        if key.endswith(f"/{MANIFEST}") and key.count("/") == base.count("/") + 2:
            uri = f"{store.uri.rstrip('/')}/{key.rsplit('/', 1)[0]}"
            found.append((uri, _current(store, key.rsplit("/", 1)[0], uri)))
    return sorted(found, key=lambda item: (item[1].created, item[1].version))


def gc(registry: str, name: str | None = None, *, dry_run: bool = False, min_age_s: float = 3600.0,
       now: datetime | None = None) -> list[str]:
    """Objects of revisions that never completed (no revisions/REV/manifest.json), older than
    `min_age_s` (younger ones may belong to a publish still running): removed, or only listed
    with `dry_run`. Complete revisions and current manifests are never touched."""
    if name is not None:
        check_name(name)
    if min_age_s < 0:
        raise ConfigError(f"--min-age {min_age_s:g}: expected a number of seconds >= 0")
    store, prefix = open_store(registry)
    root = _join(prefix.strip("/"), name or "")
    keys = store.list(f"{root}/" if root else "")
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=min_age_s)
    revisions: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        for i in range(len(parts) - 2):
            if parts[i] == REVISIONS and _REVISION.fullmatch(parts[i + 1]) and _VERSION.fullmatch(parts[i - 1] if i else ""):
                revisions.setdefault("/".join(parts[: i + 2]), []).append(key)
                break
    orphans = []
    for folder, members in sorted(revisions.items()):
        stamp = datetime.strptime(_REVISION.fullmatch(folder.rsplit("/", 1)[1]).group(1), "%Y%m%dT%H%M%SZ")
        if f"{folder}/{MANIFEST}" in members or stamp.replace(tzinfo=timezone.utc) > cutoff:
            continue
        orphans += sorted(members)
    if not dry_run:
        for key in orphans:
            store.delete(key)
    log.info("%s %d objects of incomplete revisions under %s", "would remove" if dry_run else "removed", len(orphans), registry)
    return [f"{store.uri.rstrip('/')}/{key}" for key in orphans]


def _current(store: ObjectStore, base: str, uri: str) -> Manifest | None:
    found = _read_manifest(store, _join(base, MANIFEST), f"{uri}/{MANIFEST}")
    return None if found is None else found[0]


def _read_manifest(store: ObjectStore, key: str, where: str) -> tuple[Manifest, bytes] | None:
    """The manifest at `key` and its bytes, None where there is none."""
    if not store.exists(key):
        return None
    with tempfile.TemporaryDirectory(prefix="lowprec-manifest-") as tmp:
        store.get(key, Path(tmp) / MANIFEST)
        raw = (Path(tmp) / MANIFEST).read_bytes()
    return parse_manifest(raw, where), raw


def _target(destination: Path, rel: str) -> Path:
    """destination/rel, refused when anything on the way is a symbolic link."""
    target = destination / rel
    for path in [target, *target.parents]:
        if path.is_symlink() and path != destination:
            raise IntegrityError(f"{rel}: {path} is a symbolic link; fetch does not write through links")
        if path == destination:
            break
    return target


def _verify(path: Path, entry: FileEntry, where: str) -> None:
    size = path.stat().st_size
    if size != entry.bytes:
        raise IntegrityError(f"{where}: {size} bytes, but the manifest records {entry.bytes}")
    digest = file_sha256(path)
    if digest != entry.sha256:
        raise IntegrityError(f"{where}: sha256 {digest[:12]}… does not match the manifest's {entry.sha256[:12]}…")


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those it created, deepest first."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _unstage(staged: dict[Path, Path], made: list[Path]) -> None:
    for tmp in staged.values():
        tmp.unlink(missing_ok=True)
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):  # each was created by this fetch
        try:
            folder.rmdir()
        except OSError:
            pass


def _remove(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except RegistryError as err:  # keep the original error; `gc` removes the leftover
            log.error("could not remove %s after a failed publish: %s", key, err)


def _join(*parts: str | None) -> str:
    return "/".join(p for p in parts if p)


def _version(package: str) -> str:
    from importlib import metadata  # only a publish needs it; importing it costs every command ~10 ms

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


__all__ = ["MANIFEST", "FileEntry", "Manifest", "check_name", "fetch", "file_uri", "gc", "parse_manifest", "publish",
           "version_id", "versions"]
