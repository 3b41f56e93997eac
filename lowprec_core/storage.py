"""Object stores behind URIs: local paths, file:// and s3://. The only importer of boto3."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from .errors import RegistryError


class ObjectStore(Protocol):
    """Flat keys under one root. put is atomic per object; there are no partial objects."""

    uri: str

    def check(self) -> None: ...
    def put(self, key: str, path: Path) -> None: ...
    def get(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


@dataclass
class FileStore:
    root: Path

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"cannot create registry folder {self.root}: {err.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise RegistryError(f"registry folder {self.root} is not writable")

    def put(self, key: str, path: Path) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str, path: Path) -> None:
        source = self.root / key
        if not source.is_file():
            raise RegistryError(f"not found: {source}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Store:
    """A bucket (and key prefix) on S3 or any S3-compatible server.

    The endpoint comes from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, credentials from the
    standard AWS variables or files; nothing is taken from pipeline parameters.
    """

    def __init__(self, bucket: str, client=None) -> None:
        self.bucket = bucket
        self.uri = f"s3://{bucket}"
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            # A fresh session per store: the default one caches credentials for the process.
            self._client = boto3.session.Session().client(
                "s3",
                region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def _call(self, what: str, key: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as err:
            raise self._error(what, key, err) from None
        except BotoCoreError as err:
            raise RegistryError(f"S3 {what} s3://{self.bucket}/{key} failed: {err}") from None

    def _error(self, what: str, key: str, err) -> RegistryError:
        code = err.response.get("Error", {}).get("Code", "?")
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        return RegistryError(f"S3 {what} {where} failed: {code}{_S3_HINTS.get(code, '')}")

    def check(self) -> None:
        self._call("access to bucket", "", self.client.head_bucket, Bucket=self.bucket)

    def put(self, key: str, path: Path) -> None:
        self._call("upload to", key, self.client.upload_file, str(path), self.bucket, key)

    def get(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            self._call("download of", key, self.client.download_file, self.bucket, key, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except BotoCoreError as err:
            raise RegistryError(f"S3 lookup of s3://{self.bucket}/{key} failed: {err}") from None
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("lookup of", key, err) from None

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("listing of", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)))
        for page in pages:
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete of", key, self.client.delete_object, Bucket=self.bucket, Key=key)


_S3_HINTS = {
    "NoSuchBucket": " (the bucket does not exist)",
    "404": " (not found: check the bucket and key)",
    "403": " (access denied: check the credentials and the bucket policy)",
    "AccessDenied": " (check the credentials and the bucket policy)",
    "InvalidAccessKeyId": " (unknown access key: check AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": " (wrong secret key: check AWS_SECRET_ACCESS_KEY)",
}


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
        store.get(item, folder / item[len(prefix):])
    return folder
