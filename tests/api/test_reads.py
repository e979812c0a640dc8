"""Status reads run in a limiter of their own (`api/reads.run_read`): at most `READ_THREADS` at once, the others
waiting in order, while the default thread pool stays free for everything else. And `WANSERVE_ACCESS_LOG` reaches
uvicorn."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import anyio.to_thread
import pytest
from typer.testing import CliRunner

from wanserve.api import reads
from wanserve.cli.main import app


def test_reads_run_at_most_read_threads_at_once_and_leave_the_default_pool_free():
    entered, release = threading.Semaphore(0), threading.Event()

    def blocked_read(i: int) -> int:
        entered.release()
        assert release.wait(30)
        return i

    async def main() -> None:
        results = []

        async def one(i: int) -> None:
            results.append(await reads.run_read(blocked_read, i))

        async with anyio.create_task_group() as group:
            for i in range(3 * reads.READ_THREADS):
                group.start_soon(one, i)
            for _ in range(reads.READ_THREADS):  # these many reads start ...
                assert await anyio.to_thread.run_sync(entered.acquire, True, 30)
            limiter = reads._limiters[asyncio.get_running_loop()]
            # ... and the rest wait for the limiter, not for a thread:
            deadline = time.monotonic() + 30
            while limiter.statistics().tasks_waiting < 2 * reads.READ_THREADS and time.monotonic() < deadline:
                await anyio.sleep(0.01)  # a poll interval: the tasks reach the limiter at their own pace
            assert limiter.borrowed_tokens == reads.READ_THREADS
            assert limiter.statistics().tasks_waiting == 2 * reads.READ_THREADS
            # the default pool still runs other work while the reads are blocked
            assert await anyio.to_thread.run_sync(lambda: "free") == "free"
            release.set()
        assert sorted(results) == list(range(3 * reads.READ_THREADS))

    anyio.run(main)


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("true", True)])
def test_access_log_setting_reaches_uvicorn(tmp_path, monkeypatch, value, expected):
    import uvicorn

    seen = {}

    def run(server, sockets=None) -> None:  # instead of serving: what the server was configured with
        seen["access_log"] = server.config.access_log

    monkeypatch.setattr(uvicorn.Server, "run", run)
    env = {"WANSERVE_ACCESS_LOG": value, "WANSERVE_DATA_DIR": str(tmp_path), "WANSERVE_PORT": "0",
           "WANSERVE_MODELS": "tiny-t2v"}  # fmt: skip
    result = CliRunner().invoke(app, ["serve", "--no-workers"], env=env)
    assert result.exit_code == 0, result.output
    assert seen == {"access_log": expected}
    bad = CliRunner().invoke(app, ["serve", "--no-workers"], env={**env, "WANSERVE_ACCESS_LOG": "sometimes"})
    assert bad.exit_code == 2 and "WANSERVE_ACCESS_LOG" in bad.output and "sometimes" in bad.output
