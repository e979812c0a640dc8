"""Where job files live, by key: the `Storage` protocol, `LocalStorage` (local directories, the default) and
`S3Storage` (S3-compatible object storage, `WANSERVE_STORAGE_URL=s3://bucket/prefix`). Knows nothing of jobs."""

from wanserve.storage.base import Storage, StorageKeyNotFound, check_key
from wanserve.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StorageKeyNotFound", "check_key"]
