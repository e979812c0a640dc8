"""`run_read(fn, *args)`: a short job read (a status poll, a list page) in a thread of a small limiter of its own.

The routes are coroutines, and the database work of a read runs in a thread. Starlette's default limiter lets 40
threads run at once: under 200 concurrent pollers, 40 threads and the event loop then take turns on the GIL, each
switch costs, and the loop (which reads requests and writes answers) waits behind them. `benchmarks/bench_load.py` on
the 2-core machine (SQLite, two API processes, same load): with reads limited to 4 threads an API process spent
1.46 ms of CPU per request instead of 2.84 ms, and answered 1118 polls/s (p99 0.60 s) instead of 537 (p99 1.09 s).
Writes, uploads, URL fetches and downloads keep the default limiter: they may wait on the network for long, and
must not hold up the reads.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

READ_THREADS = 4
"""Reads run at once in one API process (the others wait, in order)."""

T = TypeVar("T")
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


async def run_read(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a worker thread, at most `READ_THREADS` at once (per event loop: tests run several)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(READ_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)
