"""The FlashVSR part of a job: an `upscale` job, or the second part of a chained generate-then-upscale job.

Output frames are written as closed MP4 segments while the engine streams them (memory holds one segment) and joined
at the end with the input's audio. When the run fails or is cancelled, the segments already written are joined into
`<name>_partial.mp4` and its path is put in `partial` for the worker to store and offer on the job.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from wanserve.engine.requests import GenerationRequest, GenerationResult, TaskKind
from wanserve.media.chunked import ChunkedVideoWriter, frame_rate, quality_to_crf
from wanserve.media.images import write_thumbnail
from wanserve.media.outputs import OUTPUT_MEDIA_TYPES, OutputFiles, thumbnail_path_for

logger = logging.getLogger(__name__)


def run_upscale_part(
    engine,
    request: GenerationRequest,
    directory: str | os.PathLike,
    on_progress,
    should_stop,
    partial: dict,
    frames: np.ndarray | None = None,
    name: str = "output",
) -> tuple[GenerationResult, OutputFiles]:
    """Upscales `request.video` (or `frames` at `request.fps`, a chained job's generated video) into
    `<directory>/<name>.mp4` with a thumbnail. On any exception, sets `partial["path"]` to the joined
    `<name>_partial.mp4` of the segments written so far (when there are any) and re-raises."""
    directory = Path(directory)
    audio_from = request.video if request.task == TaskKind.UPSCALE and frames is None else None
    fps = frame_rate(audio_from) if audio_from is not None else Fraction(request.fps)
    writer = ChunkedVideoWriter(directory / f"{name}-segments", fps, quality_to_crf(request.quality))
    try:
        result = engine.generate(
            request, on_progress=on_progress, should_stop=should_stop, sink=writer.write,
            frames=iter(frames) if frames is not None else None,
        )  # fmt: skip
        video = writer.join(directory / f"{name}.mp4", audio_from)
    except BaseException:
        try:
            joined = writer.join(directory / f"{name}_partial.mp4", audio_from)
            if joined is not None:
                partial["path"] = str(joined)
                partial["num_frames"] = writer.frames_written
                logger.info("kept %d upscaled frames in %s", writer.frames_written, joined)
        except Exception:
            logger.exception("could not join the partial upscale")
        raise
    thumb = thumbnail_path_for(video)
    write_thumbnail(writer.first_frame, thumb)
    return result, OutputFiles(str(video), thumb, OUTPUT_MEDIA_TYPES[".mp4"])
