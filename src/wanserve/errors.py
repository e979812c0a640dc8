"""The project's exception types. One handler in `api/` maps them to HTTP status codes."""

from __future__ import annotations

import errno
import re


class WanserveError(Exception):
    """Base class for every error wanserve raises on purpose."""

    http_status = 500
    error_type = "internal_error"


class InvalidRequestError(WanserveError, ValueError):
    """A request field is invalid. The message names the field and the bad value."""

    http_status = 422
    error_type = "invalid_request"

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class UnknownModelError(InvalidRequestError):
    """The request names a model that is not in the catalog."""

    error_type = "unknown_model"

    def __init__(self, name: str, known: list[str] | tuple[str, ...]):
        super().__init__("model", f"`model` {name!r} is not a known model; known models: {', '.join(known)}")


class WeightsNotFoundError(WanserveError):
    """A model's weights are not on disk where wanserve looked."""

    http_status = 503
    error_type = "weights_not_found"


class CheckpointError(WanserveError):
    """A checkpoint is present but malformed: missing files, unexpected keys, wrong shapes."""

    error_type = "checkpoint_error"


class DownloadError(WanserveError):
    """A model download failed or is impossible (offline)."""

    error_type = "download_failed"


class GenerationCancelled(WanserveError):
    """`should_stop` asked the engine to stop between denoising steps."""

    http_status = 409
    error_type = "cancelled"


class RankFailed(WanserveError):
    """A rank of a worker group raised: the job fails on every rank with that rank's message."""

    http_status = 500
    error_type = "rank_failed"


class GroupBroken(WanserveError):
    """A rank of a worker group did not answer within the collective timeout: the group restarts and the job goes
    back to the queue when its lease expires."""

    http_status = 503
    error_type = "group_broken"


class DeviceError(WanserveError):
    """A requested device is not available or ran out of memory."""

    error_type = "device_error"


class InsufficientMemoryError(InvalidRequestError):
    """The request cannot fit the workers' accelerator memory (by the memory estimate); the message says what would."""

    error_type = "insufficient_memory"


class OutOfMemoryError(DeviceError):
    """The accelerator ran out of memory during a generation; the memory was released and the worker goes on."""

    error_type = "out_of_memory"


class JobNotFoundError(WanserveError):
    http_status = 404
    error_type = "not_found"


class JobStateError(WanserveError):
    """The job is in a state that does not allow the operation (for example cancelling a finished job)."""

    http_status = 409
    error_type = "invalid_state"


class PayloadTooLargeError(InvalidRequestError):
    http_status = 413
    error_type = "payload_too_large"


class QueueFullError(WanserveError):
    http_status = 429
    error_type = "queue_full"

    def __init__(self, message: str, retry_after_s: int = 5):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class JobFailedError(WanserveError):
    """A job a synchronous route waited for ended without its output (the OpenAI images route)."""

    http_status = 500
    error_type = "job_failed"


class StorageFullError(WanserveError):
    """The disk (or quota) holding the job database, inputs or outputs is full."""

    http_status = 507
    error_type = "storage_full"


_STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_STORAGE_FULL_TEXT = ("database or disk is full", "no space left on device", "could not extend file", "disk quota")


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the disk is full: `OSError` ENOSPC / EDQUOT / EFBIG, SQLite's
    "database or disk is full", PostgreSQL's "could not extend file"."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StorageFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _STORAGE_FULL_ERRNOS:
            return True
        if any(text in str(exc).lower() for text in _STORAGE_FULL_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.+@-]+/)+([\w.+@-]*)")


def redact_paths(message: str) -> str:
    """`message` with absolute file paths cut to their last part (`/srv/data/outputs/x/output.mp4` ->
    `.../output.mp4`): errors shown to clients never reveal the server's directory layout. URLs are left alone."""
    return _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", message)
