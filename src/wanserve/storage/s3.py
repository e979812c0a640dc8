"""`S3Storage`: objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through boto3.

`WANSERVE_STORAGE_URL=s3://bucket/prefix` puts every key under `prefix/`. Uploads use boto3's managed transfer
(multipart for large files; an object appears whole or not at all). Reads are ranged GETs, so the API can answer a
browser's range request without fetching the whole video, and `url()` hands out presigned GET URLs.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any, BinaryIO
from urllib.parse import urlparse

from wanserve.storage.base import FileSource, StorageKeyNotFound, check_key

logger = logging.getLogger(__name__)

READ_BUFFER_BYTES = 1 << 20
"""Bytes fetched per ranged GET when a reader reads less than this."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` as (`bucket`, `some/prefix`); `ValueError` naming the URL otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"`WANSERVE_STORAGE_URL` must look like s3://bucket/prefix, got {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def _missing(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class _RangeReader(io.RawIOBase):
    """A seekable reader of one object: each `readinto` is one ranged GET."""

    def __init__(self, client: Any, bucket: str, name: str, key: str, size: int):
        self._client, self._bucket, self._name, self._key = client, bucket, name, key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        end = self._pos + want - 1
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=self._name, Range=f"bytes={self._pos}-{end}")
        except Exception as exc:
            if _missing(exc):
                raise StorageKeyNotFound(f"no object {self._key!r}") from None
            raise
        data = body["Body"].read()
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


class S3Storage:
    """Objects in one bucket under one prefix."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, url_expiry_s: int = 3600):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url_expiry_s = url_expiry_s
        self.client = client

    @classmethod
    def from_url(
        cls,
        url: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        url_expiry_s: int = 3600,
    ) -> S3Storage:
        """A store for `s3://bucket/prefix`; unset credentials fall back to boto3's own chain."""
        import boto3
        from botocore.config import Config

        bucket, prefix = parse_s3_url(url)
        # S3-compatible servers (MinIO, moto) want path-style addressing; AWS accepts both.
        config = Config(
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
            retries={"mode": "standard"},
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        return cls(bucket, prefix, client, url_expiry_s)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, file: FileSource) -> None:
        name = self._name(key)
        if isinstance(file, str | os.PathLike):
            self.client.upload_file(os.fspath(file), self.bucket, name)
        else:
            self.client.upload_fileobj(file, self.bucket, name)
        logger.debug("stored s3://%s/%s", self.bucket, name)

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._name(key))["ContentLength"])
        except Exception as exc:
            if _missing(exc):
                raise StorageKeyNotFound(f"no object {key!r}") from None
            raise

    def open(self, key: str) -> BinaryIO:
        reader = _RangeReader(self.client, self.bucket, self._name(key), key, self.size(key))
        return io.BufferedReader(reader, READ_BUFFER_BYTES)  # type: ignore[return-value]

    def url(self, key: str) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=self.url_expiry_s
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> None:
        start = self._name(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            names = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if names:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": names, "Quiet": True})

    def describe(self) -> str:
        where = self.client.meta.endpoint_url if self.client is not None else "AWS"
        return f"s3://{self.bucket}/{self.prefix} at {where}"
