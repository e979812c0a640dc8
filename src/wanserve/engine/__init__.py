"""The engine: model catalog, checkpoint loading, tiny models and `Engine.generate`.

Nothing here knows about jobs, HTTP or SQL.
"""

from wanserve.engine.requests import (
    GenerationRequest,
    GenerationResult,
    MediaInput,
    ProgressEvent,
    Stage,
    TaskKind,
)

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "MediaInput",
    "ProgressEvent",
    "Stage",
    "TaskKind",
]
