"""The object store: where uploads, extracted images and heatmaps live, for every node.

Two kinds behind one small interface, chosen by the configuration (``store_for(config)``):

* ``LocalStore``: a directory (``DERMSCREEN_STORE_DIR``, by default ``$DERMSCREEN_HOME/store``).
  Embedded mode, or several nodes that mount one filesystem.
* ``S3Store``: a bucket of S3-compatible object storage (``DERMSCREEN_STORE_URL=s3://bucket/prefix``
  with ``DERMSCREEN_S3_*`` for the endpoint and credentials): AWS S3, MinIO, Ceph... Nodes share
  nothing but the bucket.

An object is written under a key (``images/ab/ab12....png``) and named afterwards by the reference
the store returns, which is what database rows hold: an absolute path for the local store, an
``s3://bucket/key`` URL for S3. A reference keeps naming its object when the settings change::

    store = store_for(config)
    ref = store.put("heatmaps/x.png", data)
    store.read(ref) == data
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from dermscreen.config import Config

COPY_BLOCK = 1 << 20


class ObjectMissing(FileNotFoundError):
    """No object under this reference."""


class Store(ABC):
    """What every store does. ``key`` is a relative, '/'-separated name; ``ref`` a reference."""

    @abstractmethod
    def create(self) -> str:
        """Make the directory or bucket when it is missing (idempotent); say what it is."""

    @abstractmethod
    def ref(self, key: str) -> str:
        """The reference an object under ``key`` has (or would have)."""

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO) -> str:
        """Write the stream's bytes under ``key`` (readers never see a partial object)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is under ``key``."""

    @abstractmethod
    def read(self, ref: str) -> bytes:
        """The object's bytes; ObjectMissing when there is none."""

    @abstractmethod
    def delete_tree(self, ref: str) -> None:
        """Delete every object under the reference ``ref`` (a "folder"); nothing when empty."""

    def put(self, key: str, data: bytes) -> str:
        return self.put_stream(key, io.BytesIO(data))

    def download(self, ref: str, destination: Path) -> Path:
        """Copy the object to a local file (for readers that need a path, like archives)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(self.read(ref))
        return destination


class LocalStore(Store):
    """A directory. References are absolute paths (relative ones are read under the root)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def _path(self, ref: str) -> Path:
        path = Path(ref)
        return path if path.is_absolute() else self.root / path

    def create(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        return str(self.root)

    def ref(self, key: str) -> str:
        return str(self.root / key)

    def put_stream(self, key: str, stream: BinaryIO) -> str:
        destination = self.root / key
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(stream, out, COPY_BLOCK)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(destination)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, ref: str) -> bytes:
        try:
            return self._path(ref).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise ObjectMissing(ref) from error

    def delete_tree(self, ref: str) -> None:
        shutil.rmtree(self._path(ref), ignore_errors=True)


class S3Store(Store):
    """A bucket (and key prefix) of S3-compatible storage, through boto3."""

    def __init__(self, url: str, endpoint_url: str = "", region: str = "",
                 access_key_id: str = "", secret_access_key: str = ""):
        import boto3
        from botocore.config import Config as BotoConfig

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        # Path-style addressing: MinIO and other self-hosted servers have no per-bucket hostnames.
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            aws_access_key_id=access_key_id or None, aws_secret_access_key=secret_access_key or None,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"mode": "standard"}))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _split(self, ref: str) -> tuple[str, str]:
        parsed = urlparse(ref)
        if parsed.scheme != "s3":  # a key relative to this store
            return self.bucket, self._key(ref)
        return parsed.netloc, parsed.path.lstrip("/")

    def create(self) -> str:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            self.client.create_bucket(Bucket=self.bucket)
        return f"s3://{self.bucket}/{self.prefix}"

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_stream(self, key: str, stream: BinaryIO) -> str:
        self.client.upload_fileobj(stream, self.bucket, self._key(key))
        return self.ref(key)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def read(self, ref: str) -> bytes:
        bucket, key = self._split(ref)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey as error:
            raise ObjectMissing(ref) from error

    def delete_tree(self, ref: str) -> None:
        bucket, prefix = self._split(ref)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


@lru_cache(maxsize=8)
def _cached_store(store_url: str, store_dir: str, endpoint_url: str, region: str,
                  access_key_id: str, secret_access_key: str) -> Store:
    if store_url:
        return S3Store(store_url, endpoint_url, region, access_key_id, secret_access_key)
    return LocalStore(store_dir)


def store_for(config: Config) -> Store:
    """The configured store (one per process and settings: boto3 clients are thread-safe)."""
    return _cached_store(config.store_url, config.store_dir, config.s3_endpoint_url,
                         config.s3_region, config.s3_access_key_id, config.s3_secret_access_key)
