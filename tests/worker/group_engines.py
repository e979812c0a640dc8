"""Engines for the rank-group tests, built in each rank's process (module-level, so spawned ranks unpickle them).

`ScriptedEngine` is the worker tests' `FakeEngine` on one rank; the job's prompt scripts a fault, so the injection
lives here and not in the production code: `fail:<rank>:<step>` raises on that rank after that step;
`hang:<rank>:<step>` blocks that rank there forever, the first time only (a marker file in the data directory).
"""

from __future__ import annotations

import threading

from tests.conftest import FakeEngine


class ScriptedEngine(FakeEngine):
    def __init__(self, device: str, settings):
        super().__init__(device, settings)
        import torch.distributed as dist

        self.rank = dist.get_rank()
        self.marker = settings.data_dir / "hung-once"
        self.after_step = None
        """Set by a test on rank 0's engine: called with each step number (to cancel a job at a known step)."""

    def generate(self, request, on_progress=None, should_stop=None, write_video=None):
        kind, _, rest = request.prompt.partition(":")
        fault = None
        if kind in ("fail", "hang") and int(rest.split(":")[0]) == self.rank:
            fault = (kind, int(rest.split(":")[1]))

        def on_step(step: int) -> None:
            if self.after_step is not None:
                self.after_step(step)
            if fault is not None:
                self._fault(fault[0], step, fault[1])

        self.on_step = on_step
        return super().generate(request, on_progress, should_stop, write_video)

    def _fault(self, kind: str, step: int, at: int) -> None:
        if step != at:
            return
        if kind == "fail":
            raise RuntimeError(f"injected failure on rank {self.rank} at step {step}")
        if not self.marker.exists():
            self.marker.touch()
            threading.Event().wait()  # a rank that never answers again


def scripted_engine(device: str, settings) -> ScriptedEngine:
    return ScriptedEngine(device, settings)
