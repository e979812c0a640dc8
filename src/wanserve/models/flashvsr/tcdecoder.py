"""FlashVSR's TCDecoder: a TAEHV-style streaming decoder from latents (conditioned on the LQ frames) to pixels.

Each latent frame, concatenated with the pixel-unshuffled (4 frames x 8 x 8) LQ video, is decoded by 2-D convs with
memory blocks (each reads its own input of the previous frame) and grows 8x in space and 4x in time. Module indices
match the official `TAEHV` decoder with its built-in identity deepening, so `TCDecoder.ckpt` loads by its own keys
(`decoder.N.conv.M.weight`, ...).

`StreamingTCDecoder` decodes chunk by chunk: the memory carried between chunks is each memory block's last input,
so decoding a video in chunks gives the same frames as decoding it at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wanserve.models.flashvsr.lq_proj import pixel_unshuffle_3d

COND_FRAMES, COND_PATCH = 4, 8
"""The LQ condition is unshuffled 4 frames x 8 x 8 pixels per latent position."""


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """A residual block that also reads its input of the previous frame (`past`)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal upsampling: a 1x1 conv to `stride` x channels, split into `stride` frames."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, c, h, w = x.shape
        return self.conv(x).reshape(t * self.stride, c, h, w)


def build_decoder_layers(channels: tuple[int, ...], latent_channels: int) -> nn.Sequential:
    """The official layer sequence: after every top-level ReLU that follows a conv, an identity-initialised 3x3
    conv and another ReLU (so the indices match `TCDecoder.ckpt`)."""
    c0, c1, c2, c3 = channels

    def deepen(n: int) -> list[nn.Module]:
        conv = nn.Conv2d(n, n, 3, padding=1, bias=False)
        nn.init.dirac_(conv.weight)
        return [conv, nn.ReLU()]

    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, c0), nn.ReLU(), *deepen(c0)]
    layers += [MemBlock(c0, c0) for _ in range(3)] + [nn.Upsample(scale_factor=2), TGrow(c0, 1)]
    layers += [_conv(c0, c1, bias=False)] + [MemBlock(c1, c1) for _ in range(3)]
    layers += [nn.Upsample(scale_factor=2), TGrow(c1, 2), _conv(c1, c2, bias=False)]
    layers += [MemBlock(c2, c2) for _ in range(3)] + [nn.Upsample(scale_factor=2), TGrow(c2, 2)]
    layers += [_conv(c2, c3, bias=False), nn.ReLU(), *deepen(c3), _conv(c3, 3)]
    return nn.Sequential(*layers)


class TCDecoder(nn.Module):
    """The decoder's weights (`decoder.N...` keys); decoding state lives in `StreamingTCDecoder`."""

    FRAMES_TO_TRIM = 3
    """The first decoded latent frame gives 4 frames of which the first 3 stand for the padding in front."""

    def __init__(
        self, channels: tuple[int, ...] = (512, 256, 128, 128), latent_channels: int = 16, lq_channels: int = 768
    ):
        super().__init__()
        self.channels = tuple(channels)
        self.latent_channels = latent_channels
        self.lq_channels = lq_channels
        self.decoder = build_decoder_layers(self.channels, latent_channels + lq_channels)


class StreamingTCDecoder:
    """Decodes latents chunk by chunk, carrying each memory block's last input from one chunk to the next."""

    def __init__(self, model: TCDecoder):
        self.model = model
        self.memory: dict[int, torch.Tensor] = {}
        self.started = False

    def decode(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """`latents` [1, 16, T, h, w], `cond` [1, 3, n, 8h, 8w] LQ frames in [-1, 1] (n <= 4T; the first chunk's
        condition is padded in front with copies of its first frame). Returns [1, 3, frames, 8h, 8w] in [-1, 1]:
        4T frames, 4T - 3 for the first chunk."""
        missing = latents.shape[2] * COND_FRAMES - cond.shape[2]
        if missing:
            cond = torch.cat([cond[:, :, :1].expand(-1, -1, missing, -1, -1), cond], dim=2)
        cond = pixel_unshuffle_3d(cond, COND_FRAMES, COND_PATCH, COND_PATCH)
        x = torch.cat([cond, latents.to(cond.dtype)], dim=1)[0].transpose(0, 1)  # [T, C, h, w]
        for i, layer in enumerate(self.model.decoder):
            if isinstance(layer, MemBlock):
                first = self.memory.get(i, torch.zeros_like(x[:1]))
                past = torch.cat([first, x[:-1]], dim=0)
                self.memory[i] = x[-1:].detach()
                x = layer(x, past)
            else:
                x = layer(x)
        if not self.started:
            x = x[TCDecoder.FRAMES_TO_TRIM :]
            self.started = True
        return x.transpose(0, 1).unsqueeze(0).mul(2).sub(1)
