"""A scaled-out deployment for the integration tests: `wanserve serve --no-workers` and `wanserve worker` processes
sharing a PostgreSQL database and an S3 bucket (moto's server), each with its own data directory, as on separate
hosts. `start_cluster(workers=2, env={...})`: extra `env` (a broker URL, say) goes to every process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from tests.conftest import ServerProcess

CLUSTER_ENV = {
    "WANSERVE_MODELS": "tiny-t2v",
    "WANSERVE_POLL_INTERVAL_S": "0.2",
    "WANSERVE_SWEEP_INTERVAL_S": "0.5",
    # Two worker processes share two cores: one thread each (torch's default of one per core makes them fight,
    # several times slower on a busy machine).
    "OMP_NUM_THREADS": "1",
}


@dataclass
class Cluster:
    """The processes of one deployment and what they share."""

    api: ServerProcess
    workers: list[ServerProcess]
    env: dict[str, str]
    start_worker: object = field(repr=False)

    @property
    def url(self) -> str:
        return self.api.url


@pytest.fixture
def start_cluster(postgres_url, s3_settings, tmp_path_factory) -> Iterator:
    """`start_cluster(workers=2, env=None, worker_env=None)` -> a running `Cluster`; stopped after the test.
    `cluster.start_worker(env=None)` adds a worker later."""
    from tests.conftest import new_postgres_database

    processes: list[ServerProcess] = []

    def start(workers: int = 2, env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None):
        shared = {**CLUSTER_ENV, **s3_settings, "WANSERVE_DATABASE_URL": new_postgres_database(postgres_url),
                  **(env or {})}  # fmt: skip

        def start_worker(extra: dict[str, str] | None = None) -> ServerProcess:
            name = f"worker{len(processes)}"
            process = ServerProcess(tmp_path_factory.mktemp(name), {**shared, **(extra or {})}, name,
                                    args=("worker", "--device", "cpu"))  # fmt: skip
            processes.append(process)
            return process.start()

        api = ServerProcess(tmp_path_factory.mktemp("api"), shared, "api", args=("serve", "--no-workers"),
                            ready="listening on")  # fmt: skip
        processes.append(api)
        api.start()
        started = [start_worker(worker_env) for _ in range(workers)]
        return Cluster(api, started, shared, start_worker)

    yield start
    for process in reversed(processes):
        process.stop()
