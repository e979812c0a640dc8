"""Telling workers that a job is waiting. A message only says "job X is waiting"; the job row says everything else.

`Dispatcher` is the interface; `EmbeddedDispatcher` wakes the in-process workers. A Celery/Redis dispatcher can
implement the same two sides later (`notify_job_waiting` publishes, `wait_for_job` consumes).
"""

from wanserve.dispatch.base import Dispatcher
from wanserve.dispatch.embedded import EmbeddedDispatcher

__all__ = ["Dispatcher", "EmbeddedDispatcher"]
