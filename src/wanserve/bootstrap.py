"""The one place that builds a process from `Settings`: database, storage, dispatcher, job service, engines and the
worker group. `wanserve serve` (API, optionally with workers), `wanserve worker` (workers only) and the tests all
build through here, so two processes configured alike see the same jobs, files and weights.

Business logic lives elsewhere; this module only chooses and wires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Engine as DBEngine

from wanserve.config import Settings
from wanserve.dispatch.base import Dispatcher
from wanserve.engine.registry import get_spec, tiny_models
from wanserve.jobs.db import create_db_engine, run_migrations
from wanserve.jobs.events import EventHub
from wanserve.jobs.keys import KeyRing, KeyStore
from wanserve.jobs.media_inputs import MediaLimits
from wanserve.jobs.service import JobService, JobServiceConfig
from wanserve.jobs.store import JobStore
from wanserve.jobs.workers import WorkerRegistry
from wanserve.storage.base import Storage
from wanserve.storage.local import LocalStorage
from wanserve.worker.identity import owner_id
from wanserve.worker.loop import EngineLike, Worker, WorkerConfig
from wanserve.worker.pool import WorkerPool
from wanserve.worker.process import WorkerProcess
from wanserve.worker.runtime import Runtime
from wanserve.worker.status import PoolServingStatus
from wanserve.worker.sweeper import Sweeper

logger = logging.getLogger(__name__)

EngineFactory = Callable[[str, Settings], EngineLike]
"""`(device, settings) -> engine`: tests pass a fake; processes use `build_engine`."""

POLL_WITHOUT_PUSH_S = 1.0
"""Event streams re-read the database this often when nothing pushes other processes' events."""
POLL_WITH_PUSH_S = 15.0
"""... and this often, as a safety net, when a push (LISTEN/NOTIFY, Redis pub/sub) wakes them."""


def served_models(settings: Settings) -> tuple[list[str], bool]:
    """(models to load, whether they are the tiny fallback because no weights are configured)."""
    settings.parallel_config()  # conflicting group settings fail at start-up, naming both
    if settings.models:
        for name in settings.models:
            get_spec(name)  # unknown names fail at start-up, listing the catalog
        return list(dict.fromkeys(settings.models)), False
    if not settings.weights_configured:
        return [spec.name for spec in tiny_models()], True
    raise ValueError("`WANSERVE_MODELS` (or `--model`) must name the models to serve from the configured weights")


def build_database(settings: Settings) -> DBEngine:
    """The job database, migrated to the newest schema."""
    db = create_db_engine(settings.resolved_database_url)
    run_migrations(db)
    return db


def build_key_ring(settings: Settings, db: DBEngine) -> KeyRing:
    """The API keys of the job database (plus `WANSERVE_API_KEY`, an admin key from the environment)."""
    static = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return KeyRing(KeyStore(db), static_admin_token=static)


def build_storage(settings: Settings) -> Storage:
    """Where job files live: S3-compatible object storage for `s3://bucket/prefix`, a local directory for a path
    (`outputs/` and `inputs/` under it), else the data directory (outputs in `WANSERVE_OUTPUT_DIR` when set)."""
    url = settings.storage_url
    if url and url.startswith("s3://"):
        from wanserve.storage.s3 import S3Storage

        secret = settings.s3_secret_access_key
        storage: Storage = S3Storage.from_url(
            url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            url_expiry_s=settings.storage_url_expiry_s,
        )
    elif url:
        storage = LocalStorage.under(Path(url.removeprefix("file://")).expanduser(), "outputs", "inputs")
    else:
        storage = LocalStorage({"outputs": settings.resolved_output_dir, "inputs": settings.input_dir})
    logger.info("job files in %s", storage.describe())
    return storage


def build_dispatcher(settings: Settings, store: JobStore) -> Dispatcher:
    """How workers learn that a job waits: in-process wake-ups plus database polling, or Celery over Redis when
    `WANSERVE_BROKER_URL` is set (the store records which broker holds each queued job's message)."""
    if settings.broker_url:
        try:
            from wanserve.dispatch.celery import CeleryConfig, CeleryDispatcher
        except ImportError as exc:
            raise ValueError(
                f"`WANSERVE_BROKER_URL`={settings.broker_url!r} needs Celery and redis-py: "
                f"pip install 'wanserve[celery]' ({exc})"
            ) from None
        return CeleryDispatcher(CeleryConfig(settings.broker_url), store)
    from wanserve.dispatch.embedded import EmbeddedDispatcher

    return EmbeddedDispatcher()


def build_event_push(settings: Settings, db: DBEngine, hub: EventHub):
    """What carries job events between processes: PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL (the
    store notifies in its transactions; this listens), else Redis pub/sub when a broker is set (publishes this
    process's changes, listens to the others'), else nothing (readers re-read every second)."""
    from wanserve.jobs.event_push import PostgresEventListener, RedisEventBridge

    if db.dialect.name == "postgresql":
        return PostgresEventListener(settings.resolved_database_url, hub)
    if settings.broker_url:
        bridge = RedisEventBridge(settings.broker_url, hub)
        hub.add_publisher(bridge.publish)
        return bridge
    return None


def build_job_service(
    settings: Settings,
    store: JobStore,
    storage: Storage,
    dispatcher: Dispatcher,
    models: Sequence[str],
    concurrency: int,
    hub: EventHub | None = None,
    pushed: bool = False,
) -> JobService:
    """The job service over `store`, telling `dispatcher` about queued jobs and waking readers through `hub`
    (`pushed`: other processes' events reach `hub` by a push, so readers re-read only as a safety net)."""
    config = JobServiceConfig(
        served_models=tuple(models),
        max_queue=settings.max_queue,
        max_attempts=settings.max_attempts,
        retention_s=settings.retention_s,
        lease_s=settings.lease_s,
        concurrency=concurrency,
        media=MediaLimits(max_bytes=settings.max_upload_bytes, allow_private_urls=settings.allow_private_urls),
        event_poll_s=POLL_WITH_PUSH_S if pushed else POLL_WITHOUT_PUSH_S,
        lora=settings.lora_config(),
        memory=settings.engine_config(None).memory,
    )
    return JobService(store, storage, config, hub=hub, notify_waiting=dispatcher.notify_job_waiting)


def build_engine(device: str, settings: Settings) -> EngineLike:
    """A real `Engine` on `device` with the configured weight locations and memory options."""
    from wanserve.engine.engine import Engine

    return Engine(settings.engine_config(device))


def build_worker_group(
    settings: Settings,
    service: JobService,
    dispatcher: Dispatcher,
    models: Sequence[str],
    devices: Sequence[str],
    engine_factory: EngineFactory | None = None,
    concurrency: int | None = None,
    registry: WorkerRegistry | None = None,
) -> WorkerPool:
    """One worker per device (or `concurrency` workers spread over the devices), each with its own engine,
    registered in `registry`."""
    factory = engine_factory or build_engine
    warmup = warmup_plan(settings, models)
    if settings.world_size > 1:
        return _build_rank_group(settings, service, dispatcher, models, devices, factory, registry, warmup)
    workers = []
    for slot in range(concurrency or len(devices)):
        device = devices[slot % len(devices)]
        config = WorkerConfig(
            worker_id=owner_id(slot),
            task_timeout_s=settings.task_timeout_s,
            heartbeat_s=settings.lease_s / 3,
            poll_interval_s=settings.poll_interval_s,
            hold_dir=settings.hold_dir,
            hold_step=settings.hold_step,
            warmup=warmup,
        )
        workers.append((Worker(service, factory(device, settings), dispatcher, config, models), device))
    return WorkerPool(service, dispatcher, workers, registry, heartbeat_s=settings.lease_s / 3)


def group_devices(settings: Settings, devices: Sequence[str]) -> list[str]:
    """The device of each rank of one group: the first `world_size` accelerators, or the CPU once per rank."""
    world = settings.world_size
    if settings.device == "cpu" or all(d == "cpu" for d in devices):
        return ["cpu"] * world
    devices = list(devices)[:world]
    if len(devices) != world:
        raise ValueError(
            f"a worker group of `WANSERVE_WORLD_SIZE`={world} ranks needs {world} devices, got {len(devices)} "
            f"({', '.join(devices)}); run one `wanserve worker --gpus ... --gpus-per-job {world}` per group"
        )
    return list(devices)


def warmup_plan(settings: Settings, models: Sequence[str]):
    """The warm-up requests `WANSERVE_WARMUP` asks of each served model; `ConfigError` naming the setting and the
    entry a model cannot run (checked before any model loads)."""
    from wanserve.engine.warmup import parse_warmup, warmup_requests

    return warmup_requests(models, parse_warmup(settings.warmup))


def _build_rank_group(settings, service, dispatcher, models, devices, factory, registry, warmup=()) -> WorkerPool:
    """One worker whose engine is a rank group over `devices`: this process is rank 0 (it claims, heartbeats and
    writes results); ranks 1..N-1 are spawned processes, restarted together when the group breaks."""
    from wanserve.worker.group import GroupSpec, RankGroup, torchrun_spec

    launched = torchrun_spec(settings, factory)
    if launched is not None:
        spec, rank = launched
        if rank != 0:
            raise ValueError(f"rank {rank} of a torchrun group follows rank 0; it builds no workers")
    else:
        spec = GroupSpec(group_devices(settings, devices), settings, factory)
    ranks = spec.devices
    group = RankGroup(spec)
    config = WorkerConfig(
        worker_id=owner_id(0),
        task_timeout_s=settings.task_timeout_s,
        heartbeat_s=settings.lease_s / 3,
        poll_interval_s=settings.poll_interval_s,
        hold_dir=settings.hold_dir,
        hold_step=settings.hold_step,
        warmup=warmup,
    )
    worker = Worker(service, group, dispatcher, config, models)
    return WorkerPool(service, dispatcher, [(worker, ",".join(ranks))], registry, heartbeat_s=settings.lease_s / 3)


def build_registry(settings: Settings, db: DBEngine) -> WorkerRegistry:
    """The `workers` table; a worker silent for one lease is `lost` (its jobs come back when their leases expire)."""
    return WorkerRegistry(db, lost_after_s=settings.lease_s)


def build_runtime(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    start_workers: bool = True,
    devices: list[str] | None = None,
) -> Runtime:
    """Builds (but does not start) a server process: migrated database, storage, dispatcher, job service, and the
    in-process workers unless `start_workers` is False (`wanserve serve --no-workers`)."""
    models, tiny_fallback = served_models(settings)
    if tiny_fallback:
        logger.warning(
            "no weights configured (WANSERVE_MODELS, WANSERVE_MODELS_DIR, WANSERVE_CHECKPOINT_DIR unset): serving "
            "the tiny models, which have RANDOM weights and draw noise: %s",
            ", ".join(models),
        )
    db = build_database(settings)
    storage = build_storage(settings)
    store = JobStore.for_engine(db)
    dispatcher = build_dispatcher(settings, store)
    hub = EventHub()
    push = build_event_push(settings, db, hub)
    if devices is None:
        from wanserve.worker.devices import detect_devices

        devices = ([settings.device] if settings.device else detect_devices()) if start_workers else ["cpu"]
    concurrency = 1 if settings.world_size > 1 else settings.concurrency or len(devices)
    service = build_job_service(settings, store, storage, dispatcher, models, concurrency, hub, push is not None)
    runtime = Runtime(settings, db, service, storage, dispatcher, models, tiny_fallback, devices)
    if push is not None:
        runtime.extras["event_push"] = push
    runtime.registry = build_registry(settings, db)
    service.memory_budget = runtime.registry.memory_budget_gib
    runtime.sweeper = Sweeper(service, settings.sweep_interval_s, runtime.registry, dispatcher)
    if start_workers:
        runtime.pool = build_worker_group(
            settings, service, dispatcher, models, devices, engine_factory, concurrency, runtime.registry
        )
        runtime.serving = service.serving = PoolServingStatus(runtime.pool, models)
    return runtime


def worker_devices(gpus: Sequence[int] | None = None, device: str | None = None) -> list[str]:
    """The devices a worker process uses: `device` alone, the accelerators numbered `gpus`, or every accelerator
    found (the CPU when there is none)."""
    from wanserve.worker.devices import detect_devices

    if device:
        from wanserve.engine.config import parse_device_string

        parse_device_string(device, "device")
        return [device]
    found = detect_devices()
    if gpus is None:
        return found
    kind = found[0].split(":")[0] if found != ["cpu"] else "cuda"
    return [f"{kind}:{index}" for index in gpus]


def build_worker_process(
    settings: Settings,
    devices: Sequence[str],
    gpus_per_job: int = 1,
    engine_factory: EngineFactory | None = None,
) -> WorkerProcess:
    """A `wanserve worker` process: one worker per set of `gpus_per_job` devices, over the shared database, storage
    and dispatcher."""
    if gpus_per_job < 1 or len(devices) % gpus_per_job:
        raise ValueError(
            f"`--gpus-per-job` {gpus_per_job} must divide the {len(devices)} devices ({', '.join(devices)})"
        )
    if gpus_per_job > 1:
        if len(devices) != gpus_per_job:
            raise ValueError(
                f"`--gpus-per-job` {gpus_per_job} with {len(devices)} GPUs ({', '.join(devices)}): a process runs one "
                "group (its rank 0 holds the process group); start one `wanserve worker` per group of GPUs"
            )
        settings = settings.model_copy(update={"world_size": gpus_per_job})
        settings.parallel_config()
    models, tiny_fallback = served_models(settings)
    if tiny_fallback:
        logger.warning("no weights configured: this worker serves the tiny models (RANDOM weights): %s", models)
    db = build_database(settings)
    storage = build_storage(settings)
    store = JobStore.for_engine(db)
    dispatcher = build_dispatcher(settings, store)
    hub = EventHub()
    build_event_push(settings, db, hub)  # on Redis: publishes this process's job events (nobody reads SSE here)
    concurrency = len(devices) // gpus_per_job
    service = build_job_service(settings, store, storage, dispatcher, models, concurrency, hub)
    registry = build_registry(settings, db)
    service.memory_budget = registry.memory_budget_gib
    pool = build_worker_group(settings, service, dispatcher, models, devices, engine_factory, None, registry)
    sweeper = Sweeper(service, settings.sweep_interval_s, registry, dispatcher)
    return WorkerProcess(db, service, dispatcher, pool, sweeper, stop_timeout_s=settings.task_timeout_s)
