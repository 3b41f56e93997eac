"""Object stores behind URIs: local paths, file:// and s3://. The only importer of boto3.

Keys are checked before they touch a path: a key from a manifest or a bucket listing is
untrusted text, and `check_key` is the one place that decides whether it may name a file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from ._errors import ConfigError, RegistryError, one_line
from ._struct import Struct, factory

# How long one store (one publish, fetch or gc) may wait on S3; each from the environment.
TIMEOUTS = {
    "LOWPREC_S3_CONNECT_TIMEOUT": 10.0,  # seconds to open a connection
    "LOWPREC_S3_READ_TIMEOUT": 60.0,  # seconds a request may go without a byte
    "LOWPREC_S3_DEADLINE": 0.0,  # seconds for the whole operation, retries included; 0: none
}
_KEY_PART = re.compile(r"[^\x00-\x1f\x7f\\]+")
_DRIVE = re.compile(r"[A-Za-z]:")
TMP_MARK = ".lowprec-tmp-"  # temporary names: a leading dot and this mark


def check_key(key: str, *, what: str = "key") -> str:
    """`key` if it is a plain relative path: '/'-separated, no empty, '.', '..' or hidden part,
    no absolute or drive prefix, no backslash or control character. Else ValueError naming it."""
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ValueError(f"{what} {key!r} must be a relative path of 1 to 1024 characters")
    if key.startswith("/") or _DRIVE.match(key):
        raise ValueError(f"{what} {key!r} is absolute; expected a relative path")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"{what} {key!r} has a {part or 'empty'!r} part; expected a normalised relative path")
        if part.startswith("."):
            raise ValueError(f"{what} {key!r} has a hidden part {part!r}; names starting with '.' are kept for temporary files")
        if not _KEY_PART.fullmatch(part):
            raise ValueError(f"{what} {key!r} holds a backslash or a control character")
    return key


def temp_path(target: Path) -> Path:
    """A fresh temporary name beside `target` (same folder: renaming it over the target is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name[:64]}{TMP_MARK}", dir=target.parent)
    os.close(fd)
    return Path(name)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """A local file written beside its target, then renamed: a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


class ObjectStore(Protocol):
    """Flat keys under one root. put is atomic per object; there are no partial objects."""

    uri: str

    def check(self) -> None: ...
    def put(self, key: str, path: Path) -> None: ...
    def get(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def holds(self, path: Path) -> bool: ...


class FileStore(Struct, frozen=False):
    root: Path

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        """The file for `key`, which must stay under the root once links are resolved."""
        if key:
            try:
                check_key(key)
            except ValueError as err:
                raise RegistryError(f"{self.uri}: {err}") from None
        path = self.root / key
        resolved = path.resolve()
        if resolved != self.root.resolve() and self.root.resolve() not in resolved.parents:
            raise RegistryError(f"{path} resolves to {resolved}, outside the registry folder {self.root}")
        return path

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"cannot create registry folder {self.root}: {err.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise RegistryError(f"registry folder {self.root} is not writable")

    def put(self, key: str, path: Path) -> None:
        target = self._path(key)
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(target)
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as err:
            raise RegistryError(f"cannot write {target}: {err.strerror or err}") from None
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def get(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise RegistryError(f"not found: {source}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
        except OSError as err:
            raise RegistryError(f"cannot copy {source} to {path}: {err.strerror or err}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = (str(p.relative_to(self.root).as_posix()) for p in base.rglob("*") if p.is_file() and not p.is_symlink())
        return sorted(k for k in keys if not any(part.startswith(".") for part in k.split("/")))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            for parent in path.parents:  # folders it leaves empty go too, up to the root
                if parent == self.root or self.root not in parent.parents:
                    break
                parent.rmdir()
        except OSError:
            pass  # a folder that still holds something stays

    def holds(self, path: Path) -> bool:
        resolved, root = path.resolve(), self.root.resolve()
        return resolved == root or root in resolved.parents


class _DeadlinePassed(Exception):
    """Raised from botocore's before-send hook once an operation's deadline has passed."""


class S3Store(Struct, frozen=False):
    """A bucket (and key prefix) on S3 or any S3-compatible server.

    The endpoint comes from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, credentials from the
    standard AWS variables or files, timeouts from LOWPREC_S3_*; nothing is taken from
    pipeline parameters.
    """

    bucket: str
    _client: object = None
    timeouts: dict[str, float] = factory(lambda: s3_timeouts(os.environ))
    started: float = factory(time.monotonic)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            # A fresh session per store: the default one caches credentials for the process.
            self._client = boto3.session.Session().client(
                "s3",
                region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                config=Config(
                    s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=self.timeouts["LOWPREC_S3_CONNECT_TIMEOUT"],
                    read_timeout=self.timeouts["LOWPREC_S3_READ_TIMEOUT"],
                ),
            )
            if self.timeouts["LOWPREC_S3_DEADLINE"] > 0:
                self._client.meta.events.register("before-send.s3", self._before_send)
        return self._client

    def _before_send(self, **_) -> None:
        """Every request, retries included, checks the operation's deadline before it goes out."""
        if time.monotonic() - self.started > self.timeouts["LOWPREC_S3_DEADLINE"]:
            raise _DeadlinePassed()

    def _call(self, what: str, key: str, fn, *args, missing_ok: bool = False, **kwargs):
        """fn(*args, **kwargs), every failure a RegistryError naming `what` and `key`; with
        `missing_ok`, None when the server says the key is not there."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as err:
            if missing_ok and err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise self._error(what, key, err) from None
        except (BotoCoreError, Boto3Error, _DeadlinePassed) as err:
            if isinstance(err.__context__, ClientError):  # boto3's transfer wraps the server's answer
                raise self._error(what, key, err.__context__) from None
            raise RegistryError(f"S3 {what} s3://{self.bucket}/{key} failed: {self._reason(err)}") from None

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, _DeadlinePassed) or isinstance(err.__context__, _DeadlinePassed):
            limit = self.timeouts["LOWPREC_S3_DEADLINE"]
            return f"the {limit:g} s deadline passed (LOWPREC_S3_DEADLINE)"
        return one_line(err, 600)

    def _error(self, what: str, key: str, err) -> RegistryError:
        code = err.response.get("Error", {}).get("Code", "?")
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        return RegistryError(f"S3 {what} {where} failed: {code}{_S3_HINTS.get(code, '')}")

    def check(self) -> None:
        self._call("access to bucket", "", self.client.head_bucket, Bucket=self.bucket)

    def put(self, key: str, path: Path) -> None:
        self._call("upload to", key, self.client.upload_file, str(path), self.bucket, key)

    def get(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
        except OSError as err:
            raise RegistryError(f"cannot write under {path.parent}: {err.strerror or err}") from None
        try:
            self._call("download of", key, self.client.download_file, self.bucket, key, str(tmp))
            os.replace(tmp, path)
        except OSError as err:
            raise RegistryError(f"cannot write {path}: {err.strerror or err}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._call("lookup of", key, self.client.head_object, Bucket=self.bucket, Key=key, missing_ok=True) is not None

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("listing of", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)))
        for page in pages:
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete of", key, self.client.delete_object, Bucket=self.bucket, Key=key)

    def holds(self, path: Path) -> bool:
        return False


_MISSING = ("404", "NoSuchKey", "NotFound")
_S3_HINTS = {
    "NoSuchBucket": " (the bucket does not exist)",
    "404": " (not found: check the bucket and key)",
    "403": " (access denied: check the credentials and the bucket policy)",
    "AccessDenied": " (check the credentials and the bucket policy)",
    "InvalidAccessKeyId": " (unknown access key: check AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": " (wrong secret key: check AWS_SECRET_ACCESS_KEY)",
    "SlowDown": " (the server is throttling: retry later)",
    "ServiceUnavailable": " (the server is unavailable: retry later)",
    "503": " (the server is unavailable: retry later)",
}


def s3_timeouts(environ) -> dict[str, float]:
    """LOWPREC_S3_* timeouts from `environ`, each a non-negative number of seconds."""
    out = {}
    for name, default in TIMEOUTS.items():
        text = environ.get(name, "")
        try:
            value = float(text) if text.strip() else default
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf") or (value == 0 and name != "LOWPREC_S3_DEADLINE"):
            raise ConfigError(f"{name}={text!r}: expected a positive number of seconds")
        out[name] = value
    return out


def open_store(uri: str) -> tuple[ObjectStore, str]:
    """(store, key) for a URI; a plain path is a file:// URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise RegistryError(f"{uri!r}: an s3:// URI needs a bucket, as in s3://bucket/prefix")
        return S3Store(parsed.netloc), parsed.path.lstrip("/")
    if parsed.scheme == "file":
        return FileStore(Path(parsed.path)), ""
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a path (or a Windows drive letter)
        return FileStore(Path(uri).expanduser().resolve()), ""
    raise RegistryError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}; expected a path, file:// or s3://")


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme == "s3"


def localize(uri: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> Path:
    """A local path for `uri`: the path itself, or a download of an s3 object or prefix into workdir."""
    text = os.fspath(uri)
    if not is_remote(text):
        store, _ = open_store(text)
        return store.root  # type: ignore[attr-defined]
    store, key = open_store(text)
    workdir = Path(workdir)
    name = key.rstrip("/").rsplit("/", 1)[-1] or "object"
    if key and not key.endswith("/") and store.exists(key):
        target = workdir / name
        store.get(key, target)
        return target
    prefix = key.rstrip("/") + "/" if key else ""
    keys = store.list(prefix)
    if not keys:
        raise RegistryError(f"nothing found at {text}")
    folder = workdir / name
    for item in keys:
        try:
            relative = check_key(item[len(prefix):], what="object key")
        except ValueError as err:
            raise RegistryError(f"{text}: {err}; refusing to download it") from None
        store.get(item, folder / relative)
    return folder
