"""One job on many ranks: the rank group.

Rank 0 lives in the worker's process (the `Worker` claims jobs, heartbeats and writes results as with one device);
its engine is a `GroupEngine`, which hands every `GenerationRequest` to ranks 1..N-1 and keeps them in step:

- every stop check of a generation (after loading, encoding, each denoising step) is a hand-over: each follower
  acknowledges it reached the check (or reports its error), then rank 0 publishes its decision (go, stop, error),
  so all ranks stop at the same step, and an exception on any rank fails the job on every rank with that rank's
  message; the group then takes the next job;
- every wait has a timeout (`ParallelConfig.collective_timeout_s`: the store waits and the process group's own
  timeout), so a rank that hangs becomes `GroupBroken`: the job is left to its lease (it returns to the queue when
  the lease expires) and the supervisor restarts the follower processes and rank 0's engine.

The control messages go through the process group's key-value store (a `TCPStore`), not through collectives: a
rank that failed never leaves the others waiting in a collective of a different kind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from wanserve.engine.requests import GenerationRequest, GenerationResult, ProgressEvent, TaskKind
from wanserve.errors import GroupBroken, RankFailed

logger = logging.getLogger(__name__)

GO, STOP, ERROR = b"go", b"stop", b"error"
IDLE_POLL_S = 1.0
"""Followers waiting for a job look for a shutdown request this often."""


def backend_for(device: str) -> str:
    """The process-group backend of a device type: NCCL on CUDA, HCCL on Ascend NPUs (torch_npu), gloo on the CPU."""
    kind = device.split(":")[0]
    return {"cuda": "nccl", "npu": "hccl"}.get(kind, "gloo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RankChannel:
    """The control messages of one group generation, over a key-value store shared by all ranks."""

    store: Any
    rank: int
    world_size: int
    timeout_s: float

    def _wait(self, keys: list[str], what: str, ranks: list[int]) -> None:
        try:
            self.store.wait(keys, timedelta(seconds=self.timeout_s))
        except Exception as exc:  # DistStoreError / RuntimeError: the store's timeout
            missing = [r for r, k in zip(ranks, keys, strict=True) if not self.store.check([k])]
            raise GroupBroken(
                f"rank(s) {', '.join(map(str, missing)) or '?'} did not reach {what} within "
                f"{self.timeout_s:g} s (`collective_timeout_s`): {type(exc).__name__}"
            ) from None

    def post_job(self, n: int, request: GenerationRequest) -> None:
        self.store.set(f"job/{n}", pickle.dumps(request))

    def next_job(self, n: int, stop: threading.Event) -> GenerationRequest | None:
        """Blocks until rank 0 posts job `n` (None when the group shuts down)."""
        while not stop.is_set():
            if self.store.check(["shutdown"]):
                return None
            try:
                self.store.wait([f"job/{n}"], timedelta(seconds=IDLE_POLL_S))
            except Exception:
                continue
            return pickle.loads(self.store.get(f"job/{n}"))
        return None

    def ack(self, n: int, check: int, error: str | None = None) -> None:
        value = b"ok" if error is None else b"error:" + error.encode()
        self.store.set(f"job/{n}/ack/{check}/{self.rank}", value)

    def collect_acks(self, n: int, check: int) -> str | None:
        """Rank 0: waits for every follower at check `check`; the first follower error, as `rank r: message`."""
        ranks = list(range(1, self.world_size))
        keys = [f"job/{n}/ack/{check}/{r}" for r in ranks]
        self._wait(keys, f"stop check {check}", ranks)
        for r, key in zip(ranks, keys, strict=True):
            value = self.store.get(key)
            if value.startswith(b"error:"):
                return f"rank {r}: {value[6:].decode()}"
        return None

    def decide(self, n: int, check: int, decision: bytes) -> None:
        self.store.set(f"job/{n}/decision/{check}", decision)

    def decision(self, n: int, check: int) -> bytes:
        self._wait([f"job/{n}/decision/{check}"], f"rank 0's decision at stop check {check}", [0])
        return self.store.get(f"job/{n}/decision/{check}")

    def report(self, n: int, outcome: dict[str, Any]) -> None:
        self.store.set(f"job/{n}/result/{self.rank}", pickle.dumps(outcome))

    def outcomes(self, n: int) -> dict[int, dict[str, Any]]:
        ranks = list(range(1, self.world_size))
        keys = [f"job/{n}/result/{r}" for r in ranks]
        self._wait(keys, "the end of the job", ranks)
        return {r: pickle.loads(self.store.get(k)) for r, k in zip(ranks, keys, strict=True)}

    def shutdown(self) -> None:
        self.store.set("shutdown", b"1")


@dataclass
class _Steps:
    """Counts a generation's stop checks and denoising steps on one rank."""

    check: int = 0
    last_step: int = 0

    def on_progress(self, event: ProgressEvent) -> None:
        if event.step_time_s is not None:
            self.last_step = event.step


class GroupEngine:
    """Rank 0's engine: runs each generation on every rank of the group (see the module docstring)."""

    def __init__(self, engine: Any, channel: RankChannel, on_broken: Callable[[], None] | None = None):
        self.engine, self.channel, self.on_broken = engine, channel, on_broken
        self._jobs = 0
        self.last_steps: dict[int, int] = {}
        """Rank -> the last denoising step it completed in the latest generation."""

    def load(self, model: str) -> None:
        self.engine.load(model)

    def loaded_models(self) -> list[str]:
        return self.engine.loaded_models()

    def is_random(self, model: str) -> bool:
        return self.engine.is_random(model)

    def generate(
        self, request: GenerationRequest, on_progress=None, should_stop=None, sink=None, frames=None,
        write_video=None,
    ) -> GenerationResult:  # fmt: skip
        if request.task == TaskKind.UPSCALE:
            # FlashVSR has no parallel plan: rank 0 runs it alone (nothing is posted, so the other ranks keep
            # waiting for the next job). `sink` and `frames` are the upscale's (engine.Engine.generate).
            return self.engine.generate(request, on_progress, should_stop, sink=sink, frames=frames)
        channel = self.channel
        self._jobs += 1
        n = self._jobs
        steps = _Steps()
        decided = [0]
        channel.post_job(n, request)

        def progress(event: ProgressEvent) -> None:
            steps.on_progress(event)
            if on_progress is not None:
                on_progress(event)

        def group_should_stop() -> bool:
            steps.check += 1
            error = channel.collect_acks(n, steps.check)
            if error is not None:
                channel.decide(n, steps.check, ERROR)
                decided[0] = steps.check
                raise RankFailed(error)
            stop = bool(should_stop()) if should_stop is not None else False
            channel.decide(n, steps.check, STOP if stop else GO)
            decided[0] = steps.check
            return stop

        try:
            try:
                # Rank 0 writes the video (followers decode too, and drop what they decode).
                result = self.engine.generate(
                    request, on_progress=progress, should_stop=group_should_stop, write_video=write_video
                )
            except Exception as exc:
                if _is_collective_failure(exc):
                    raise GroupBroken(
                        f"a collective failed or timed out on rank 0: {type(exc).__name__}: {exc}"
                    ) from exc
                raise
        except GroupBroken:
            self._broken()
            raise
        except BaseException as exc:
            # Followers waiting at the next check learn that rank 0 gave up (its own error or a stop).
            if decided[0] == steps.check:
                channel.decide(n, steps.check + 1, ERROR)
            outcomes = self._outcomes(n, steps)
            if isinstance(exc, RankFailed):
                raise
            failed = _first_failure(outcomes)
            if failed is not None and not _is_stop(exc):
                logger.warning("job on rank 0 failed (%s); rank %s also failed: %s", exc, *failed)
            raise
        outcomes = self._outcomes(n, steps)
        failed = _first_failure(outcomes)
        if failed is not None:
            raise RankFailed(f"rank {failed[0]}: {failed[1]}")
        return result

    def _outcomes(self, n: int, steps: _Steps) -> dict[int, dict[str, Any]]:
        try:
            outcomes = self.channel.outcomes(n)
        except GroupBroken:
            self._broken()
            raise
        self.last_steps = {0: steps.last_step, **{r: o["last_step"] for r, o in outcomes.items()}}
        return outcomes

    def _broken(self) -> None:
        logger.error("the rank group is broken; restarting it")
        if self.on_broken is not None:
            self.on_broken()


def _is_collective_failure(exc: BaseException) -> bool:
    """A timed-out or broken collective (gloo, NCCL, HCCL): the group cannot be trusted any more."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "HCCL", "Timed out", "Connection closed", "timed out")
    )


def _is_stop(exc: BaseException) -> bool:
    from wanserve.errors import GenerationCancelled

    return isinstance(exc, GenerationCancelled)


def _first_failure(outcomes: dict[int, dict[str, Any]]) -> tuple[int, str] | None:
    for rank in sorted(outcomes):
        if outcomes[rank]["error"] is not None:
            return rank, outcomes[rank]["error"]
    return None


def follow(engine: Any, channel: RankChannel, stop: threading.Event | None = None) -> None:
    """A follower rank's loop: run every job rank 0 posts, in step with it, until the group shuts down."""
    stop = stop or threading.Event()
    n = 0
    while True:
        n += 1
        request = channel.next_job(n, stop)
        if request is None:
            return
        _follow_job(engine, channel, n, request)


def _follow_job(engine: Any, channel: RankChannel, n: int, request: GenerationRequest) -> None:
    from wanserve.errors import GenerationCancelled

    steps = _Steps()
    stopped = False

    def should_stop() -> bool:
        nonlocal stopped
        steps.check += 1
        channel.ack(n, steps.check)
        stopped = channel.decision(n, steps.check) != GO
        return stopped

    error = None
    try:
        engine.generate(request, on_progress=steps.on_progress, should_stop=should_stop)
    except GenerationCancelled:
        pass
    except GroupBroken as exc:
        logger.error("rank %d: %s", channel.rank, exc)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        logger.exception("rank %d: job %d failed", channel.rank, n)
        if not stopped:
            # Rank 0 waits at the next check for this rank: tell it why this rank will not come.
            channel.ack(n, steps.check + 1, error)
    channel.report(n, {"error": error, "last_step": steps.last_step})


# -- processes ------------------------------------------------------------------------------------------------------
@dataclass
class GroupSpec:
    """What every rank of a group needs to start: picklable, sent to spawned followers."""

    devices: list[str]
    """Device of each rank (rank r uses devices[r])."""
    settings: Any
    """`wanserve.config.Settings` of the deployment."""
    engine_factory: Callable[[str, Any], Any]
    """`(device, settings) -> engine`, module-level so spawned ranks can unpickle it."""
    host: str = "127.0.0.1"
    port: int = 0
    generation: int = 0
    env: dict[str, str] = field(default_factory=dict)
    start_method: str = "spawn"
    """How followers start (`spawn`; tests use `forkserver` to import torch once)."""
    torchrun: bool = False
    """The ranks were launched by torchrun (`MASTER_ADDR`, `RANK`, ...): nothing is spawned, and a broken group
    ends this process so that torchrun (`--max-restarts`) restarts every rank."""

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def timeout_s(self) -> float:
        return float(self.settings.collective_timeout_s)


def init_rank(spec: GroupSpec, rank: int):
    """Joins rank `rank` to the group's process group and returns its control channel."""
    import torch
    import torch.distributed as dist

    if spec.torchrun:
        device = spec.devices[rank]
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=spec.timeout_s))
        store = dist.distributed_c10d._get_default_store()
        return RankChannel(dist.PrefixStore("wanserve-ctl", store), rank, spec.world_size, spec.timeout_s)

    is_master = rank == 0
    store = dist.TCPStore(
        spec.host, spec.port, spec.world_size, is_master, timedelta(seconds=max(spec.timeout_s, 30.0))
    )
    device = spec.devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(
        backend_for(device),
        store=dist.PrefixStore(f"pg{spec.generation}", store),
        rank=rank,
        world_size=spec.world_size,
        timeout=timedelta(seconds=spec.timeout_s),
    )
    return RankChannel(dist.PrefixStore(f"ctl{spec.generation}", store), rank, spec.world_size, spec.timeout_s)


def follower_main(spec: GroupSpec, rank: int) -> None:
    """Entry point of a spawned follower process."""
    os.environ.update(spec.env)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    run_torchrun_follower(spec, rank)


def torchrun_spec(settings: Any, engine_factory: Callable[[str, Any], Any]) -> tuple[GroupSpec, int] | None:
    """(the group, this process's rank) when torchrun started this process (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`),
    else None. Each rank uses the accelerator numbered by its `LOCAL_RANK` (the CPU when there is none)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    from wanserve.worker.devices import detect_devices

    world = int(os.environ["WORLD_SIZE"])
    found = detect_devices()
    kind = found[0].split(":")[0] if found != ["cpu"] else "cpu"
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    devices = ["cpu"] * world if kind == "cpu" else [f"{kind}:{r % local_world}" for r in range(world)]
    settings = settings.model_copy(update={"world_size": world})
    return GroupSpec(devices, settings, engine_factory, torchrun=True), int(os.environ["RANK"])


def run_torchrun_follower(spec: GroupSpec, rank: int) -> None:
    """Ranks 1..N-1 (spawned, or under torchrun): join the group and follow rank 0 (which serves the API) until it
    shuts the group down."""
    import torch.distributed as dist

    channel = init_rank(spec, rank)
    engine = spec.engine_factory(spec.devices[rank], spec.settings)
    try:
        follow(engine, channel)
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class RankGroup:
    """Rank 0's side of a group it spawned, and the worker's engine: starts the followers at the first `load`, and
    restarts them all (and rank 0's engine) when the group breaks."""

    def __init__(self, spec: GroupSpec):
        self.spec = spec
        self.generation = 0
        """How many times the group was started (1 after the first start; each restart adds one)."""
        self.engine: GroupEngine | None = None
        self._processes: list[Any] = []
        self._lock = threading.Lock()

    # -- the worker's engine ------------------------------------------------------------------------------------
    def _started(self) -> GroupEngine:
        with self._lock:
            if self.engine is None:
                self.start()
            return self.engine

    def load(self, model: str) -> None:
        self._started().load(model)

    def loaded_models(self) -> list[str]:
        return self.engine.loaded_models() if self.engine is not None else []

    def is_random(self, model: str) -> bool:
        if self.engine is not None and hasattr(self.engine.engine, "is_random"):
            return self.engine.is_random(model)
        from wanserve.engine.registry import get_spec

        return get_spec(model).random_weights

    def generate(
        self, request: GenerationRequest, on_progress=None, should_stop=None, sink=None, frames=None,
        write_video=None,
    ) -> GenerationResult:  # fmt: skip
        if request.task == TaskKind.UPSCALE:
            return self._started().generate(request, on_progress, should_stop, sink=sink, frames=frames)
        return self._started().generate(request, on_progress, should_stop, write_video=write_video)

    @property
    def last_steps(self) -> dict[int, int]:
        return self.engine.last_steps if self.engine is not None else {}

    def close(self) -> None:
        self.stop()

    def start(self) -> GroupEngine:
        import torch.multiprocessing as mp

        self.generation += 1
        self.spec.generation = self.generation
        self.spec.port = free_port()
        ctx = mp.get_context(self.spec.start_method)
        self._processes = [
            ctx.Process(target=follower_main, args=(self.spec, rank), name=f"wanserve-rank{rank}", daemon=True)
            for rank in range(1, self.spec.world_size)
            if not self.spec.torchrun
        ]
        for process in self._processes:
            process.start()
        channel = init_rank(self.spec, 0)
        engine = self.spec.engine_factory(self.spec.devices[0], self.spec.settings)
        if self.engine is None:
            self.engine = GroupEngine(engine, channel, on_broken=self.restart)
        else:
            models = self.engine.loaded_models()
            self.engine.engine, self.engine.channel, self.engine._jobs = engine, channel, 0
            for model in models:
                engine.load(model)
        logger.info("rank group %d of %d ranks started on %s", self.generation, self.spec.world_size,
                    ", ".join(self.spec.devices))  # fmt: skip
        return self.engine

    def restart(self) -> None:
        if self.spec.torchrun:
            logger.critical("the rank group is broken; exiting so that torchrun restarts every rank")
            os._exit(70)
        self._stop_processes()
        self.start()

    def _stop_processes(self) -> None:
        import torch.distributed as dist

        for process in self._processes:
            if process.is_alive():
                process.kill()
        for process in self._processes:
            process.join(10)
        try:
            dist.destroy_process_group()
        except Exception:
            logger.exception("destroying the broken process group failed")

    def stop(self) -> None:
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.channel.shutdown()
        for process in self._processes:
            process.join(10)
        self._stop_processes()
