"""Running FlashVSR on a stream of low-resolution frames: the chunk plan, the bounded input buffer, the one-step
denoise per chunk, decoding (TCDecoder per chunk, TCDecoder once, or the Wan VAE) and the colour fix.

Frame arithmetic (as the official pipeline): the input is padded with 4 copies of its last frame and cut to the
largest 8n+1 frames F; chunk 0 denoises 6 latent frames (input frames 1..24 as six 4-frame LQ clips), every later
chunk c denoises 2 (frames 8c+17..8c+24); the output has F - 4 frames (21 for chunk 0, then 8 per chunk), so a clip
needs at least 21 frames and up to 7 trailing frames are not upscaled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wanserve.models.flashvsr.lq_proj import CLIP_FRAMES, LQProjection
from wanserve.models.flashvsr.sparse_attention import BlockSparseKernel, SparsityConfig
from wanserve.models.flashvsr.streaming_dit import FlashVSRStream
from wanserve.models.flashvsr.tcdecoder import StreamingTCDecoder, TCDecoder

logger = logging.getLogger(__name__)

VARIANTS = ("tiny", "tiny-long", "full")
"""`tiny`: TCDecoder once at the end; `tiny-long`: TCDecoder per chunk (memory bounded); `full`: Wan VAE decode."""
MIN_FRAMES = 21
"""The shortest input: one chunk (6 latent frames) needs 21 frames (padded by 4 to 25 = 8 x 3 + 1)."""
SIZE_MULTIPLE = 128
"""Output width and height are cropped to multiples of this: the (2, 8, 8) token window of the 8x VAE and 2x patch."""
FIRST_LATENTS, NEXT_LATENTS = 6, 2


def output_frames(input_frames: int) -> int:
    """Frames FlashVSR makes from `input_frames` (F - 4 where F is the largest 8n+1 <= input + 4); 0 when too short."""
    chunks = chunk_count(input_frames)
    return 8 * chunks + 13 if chunks else 0


def chunk_count(input_frames: int) -> int:
    """Chunks (one-step denoising forwards) for `input_frames` frames; 0 when the clip is shorter than 21."""
    return max(0, (input_frames + 3) // 8 - 2)


def output_size(width: int, height: int, scale: float) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, output width, output height): the input scaled by `scale` (rounded), then
    centre-cropped to multiples of 128. Raises ValueError when a side would be under 128."""
    sw, sh = int(round(width * scale)), int(round(height * scale))
    tw, th = sw // SIZE_MULTIPLE * SIZE_MULTIPLE, sh // SIZE_MULTIPLE * SIZE_MULTIPLE
    if tw == 0 or th == 0:
        raise ValueError(f"{width}x{height} scaled {scale:g}x is {sw}x{sh}: both sides must reach {SIZE_MULTIPLE} px")
    return sw, sh, tw, th


class FrameBufferFull(RuntimeError):
    """The frames one chunk needs do not fit in the streaming buffer's byte limit."""


class FrameBuffer:
    """Input frames read lazily from an iterator, holding only a window of them (at most `max_bytes`).

    Frame i past the end is the last frame (the 4-frame tail padding)."""

    def __init__(self, frames: Iterable[np.ndarray], max_bytes: int):
        self._source: Iterator[np.ndarray] = iter(frames)
        self.max_bytes = max_bytes
        self._frames: dict[int, np.ndarray] = {}
        self.read = 0
        """Frames read so far."""
        self.ended = False
        self.peak_bytes = 0
        self._last: np.ndarray | None = None

    @property
    def held_bytes(self) -> int:
        return sum(f.nbytes for f in self._frames.values())

    def fill(self, upto: int) -> int:
        """Reads until `upto` frames were read or the input ended; returns the frames read."""
        while self.read < upto and not self.ended:
            try:
                frame = next(self._source)
            except StopIteration:
                self.ended = True
                break
            self._frames[self.read] = frame
            self._last = frame
            self.read += 1
            held = self.held_bytes
            self.peak_bytes = max(self.peak_bytes, held)
            if held > self.max_bytes:
                raise FrameBufferFull(
                    f"the frames one chunk needs take more than `streaming_lq_max_bytes` = {self.max_bytes} bytes "
                    f"(FLASHVSR_STREAMING_LQ_MAX_BYTES); raise it, lower `input_width`, or use the tiny-long variant"
                )
        return self.read

    def get(self, index: int) -> np.ndarray:
        if index < self.read:
            if index not in self._frames:
                raise IndexError(f"frame {index} was already dropped from the buffer")
            return self._frames[index]
        if not self.ended or self._last is None:
            raise IndexError(f"frame {index} was not read yet")
        return self._last

    def drop_before(self, index: int) -> None:
        for i in [i for i in self._frames if i < index]:
            del self._frames[i]


@dataclass
class FlashVSRModel:
    """A loaded FlashVSR: the DiT (a diffusers `WanTransformer3DModel`), the LQ projection, the TCDecoder, the Wan VAE
    (for `full`), and the fixed text context (`posi_prompt.pth`)."""

    transformer: Any
    lq_proj: LQProjection
    tcdecoder: TCDecoder | None
    vae: Any | None
    context: torch.Tensor
    variant: str = "tiny"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "full" and self.vae is None:
            raise ValueError("variant 'full' needs the Wan VAE (`Wan2.1_VAE.pth`)")
        if self.variant != "full" and self.tcdecoder is None:
            raise ValueError(f"variant {self.variant!r} needs the TCDecoder (`TCDecoder.ckpt`)")

    def modules(self) -> dict[str, torch.nn.Module]:
        out = {"transformer": self.transformer, "lq_proj": self.lq_proj}
        if self.tcdecoder is not None:
            out["tcdecoder"] = self.tcdecoder
        if self.vae is not None:
            out["vae"] = self.vae
        return out


@dataclass(frozen=True)
class UpscaleOptions:
    """How one video is upscaled."""

    scale: float = 4.0
    seed: int = 0
    sparsity: SparsityConfig = SparsityConfig()
    kernel: str = "dense"
    """`dense` (any device) or `flex` (FlexAttention, CUDA): the same output."""
    cache_offload: bool = False
    """Keep each block's KV cache on the CPU between chunks (FLASHVSR_CACHE_OFFLOAD)."""
    max_buffer_bytes: int = 2 << 30
    """Bytes of input frames the streaming buffer may hold (FLASHVSR_STREAMING_LQ_MAX_BYTES)."""
    color_fix: bool = True
    """Match each output frame's per-channel mean and spread to its upscaled input frame (official AdaIN fix)."""


def _adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per frame and channel, `content` [N, C, H, W] with the mean and standard deviation of `style`."""

    def stats(x):
        flat = x.flatten(2)
        return flat.mean(-1)[..., None, None], (flat.var(-1, unbiased=False) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class FlashVSRRun:
    """Upscales one stream of uint8 RGB frames [H, W, 3]; output frames go to `emit` as uint8 [n, H', W', 3]."""

    def __init__(self, model: FlashVSRModel, options: UpscaleOptions, device: torch.device, dtype: torch.dtype):
        self.model, self.options, self.device, self.dtype = model, options, device, dtype
        self.chunks_done = 0
        self.frames_out = 0
        self.peak_cache_bytes = 0
        self.buffer: FrameBuffer | None = None
        self.cache_devices: set[str] = set()
        """Where the KV caches were kept between chunks (`cpu` with `cache_offload`)."""
        self.out_size: tuple[int, int] = (0, 0)
        """(height, width) of the output frames, known once the first input frame was read."""

    # -- input -------------------------------------------------------------------------------------------------
    def _lq(self, start: int, stop: int, size: tuple[int, int, int, int]) -> torch.Tensor:
        """Padded input frames [start, stop) upscaled and cropped: [1, 3, n, H', W'] in [-1, 1]."""
        sw, sh, tw, th = size
        frames = np.stack([self.buffer.get(i) for i in range(start, stop)])
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(sh, sw), mode="bicubic", align_corners=False)
        top, left = (sh - th) // 2, (sw - tw) // 2
        x = x[:, :, top : top + th, left : left + tw].clamp(0, 255) / 127.5 - 1.0
        return x.transpose(0, 1).unsqueeze(0).to(self.dtype)

    def _emit(self, frames: torch.Tensor, lq: torch.Tensor, emit: Callable[[np.ndarray], None]) -> None:
        """[1, 3, n, H, W] decoded frames in [-1, 1] -> colour fix -> uint8 -> `emit`."""
        x = frames[0].transpose(0, 1).float()
        if self.options.color_fix:
            x = _adain(x, lq[0, :, : x.shape[0]].transpose(0, 1).float())
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        emit(x.permute(0, 2, 3, 1).cpu().numpy())
        self.frames_out += x.shape[0]

    # -- the run -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        frames: Iterable[np.ndarray],
        emit: Callable[[np.ndarray], None],
        on_chunk: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Upscales every frame of `frames`; returns the frames emitted. `on_chunk(chunks_done)` after each chunk;
        `should_stop()` is asked before each chunk (a True stops with `InterruptedError`)."""
        model, options = self.model, self.options
        streaming_decode = model.variant == "tiny-long"
        self.buffer = buffer = FrameBuffer(frames, options.max_buffer_bytes)
        buffer.fill(1)
        if buffer.read == 0:
            raise ValueError("the video has no frames")
        h0, w0 = buffer.get(0).shape[:2]
        size = output_size(w0, h0, options.scale)
        th, tw = size[3], size[2]
        self.out_size = (th, tw)
        lat_h, lat_w = th // 8, tw // 8
        kernel = BlockSparseKernel(options.kernel)
        stream = FlashVSRStream(model.transformer, model.context, options.sparsity, kernel, options.cache_offload)
        decoder = StreamingTCDecoder(model.tcdecoder) if model.tcdecoder is not None else None
        generator = torch.Generator("cpu").manual_seed(options.seed)
        channels = model.transformer.config.in_channels
        kept_latents: list[torch.Tensor] = []
        try:
            chunk = 0
            while True:
                # 1. Is there a chunk `chunk`? (the input must have at least 8c + 21 frames)
                need = 8 * chunk + MIN_FRAMES
                if buffer.fill(need + 4) < need:
                    break
                if should_stop is not None and should_stop():
                    raise InterruptedError("upscale stopped by request")
                # 2. LQ tokens of its 4-frame clips, and its noise
                clip_start = 1 if chunk == 0 else 8 * chunk + 17
                latent_frames = FIRST_LATENTS if chunk == 0 else NEXT_LATENTS
                lq = self._lq(clip_start, clip_start + latent_frames * CLIP_FRAMES, size)
                tokens = model.lq_proj(lq.to(next(model.lq_proj.parameters()).dtype))
                noise = torch.randn((1, channels, latent_frames, lat_h, lat_w), generator=generator)
                noise = noise.to(self.device, self.dtype)
                # 3. One denoising step (t = 1000): x0 = noise - velocity
                offset = 0 if chunk == 0 else 4 + 2 * chunk
                velocity = stream.forward_chunk(noise, tokens, offset, (th, tw))
                latents = noise - velocity.to(noise.dtype)
                self.peak_cache_bytes = max(self.peak_cache_bytes, stream.state.cache_bytes())
                self.cache_devices = {t.device.type for t in stream.state.cache_k.values()}
                # 4. Decode this chunk now (tiny-long) or keep its latents for the end
                cond_start = 0 if chunk == 0 else 8 * chunk + 13
                cond_stop = 8 * chunk + 21
                if streaming_decode:
                    cond = self._lq(cond_start, cond_stop, size)
                    self._emit(decoder.decode(latents, cond), cond, emit)
                    buffer.drop_before(cond_stop)
                else:
                    kept_latents.append(latents)
                chunk += 1
                self.chunks_done = chunk
                if on_chunk is not None:
                    on_chunk(chunk)
            if chunk == 0:
                raise ValueError(f"the video has {buffer.read} frames; FlashVSR needs at least {MIN_FRAMES}")
            if not streaming_decode:
                self._decode_all(torch.cat(kept_latents, dim=2), 8 * chunk + 13, size, decoder, emit)
        finally:
            stream.detach()
        return self.frames_out

    def _decode_all(self, latents, frames: int, size, decoder: StreamingTCDecoder | None, emit) -> None:
        """Tiny and Full, after the last chunk. Tiny: the TCDecoder over every latent frame, 8 latent frames at a
        time (its memory carries across, so the frames are those of one call over all of them, with activations of
        8 latent frames held at a time); Full: the Wan VAE over every latent frame at once."""
        if self.model.variant == "full":
            lq = self._lq(0, frames, size)
            vae = self.model.vae
            config = vae.config
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
            video = vae.decode((latents * std + mean).to(next(vae.parameters()).dtype), return_dict=False)[0]
            for start in range(0, video.shape[2], 16):
                self._emit(video[:, :, start : start + 16], lq[:, :, start : start + 16], emit)
            return
        step = 8
        for first in range(0, latents.shape[2], step):
            last = min(first + step, latents.shape[2])
            start, stop = max(0, 4 * first - 3), 4 * last - 3
            lq = self._lq(start, stop, size)
            self._emit(decoder.decode(latents[:, :, first:last], lq), lq, emit)
