"""FlashVSR's LQ projection: the upscaled low-resolution video, as tokens added to the DiT's hidden states.

Every 4 frames (one latent frame): pixel-unshuffle 16x16 (to the token grid), two causal Conv3d with temporal stride
2, each followed by an RMS norm and SiLU, then a Linear per conditioned block (v1.1 conditions block 0 only).
Module and parameter names are those of the official `Buffer_LQ4x_Proj` (`LQ_proj_in.ckpt`): `conv1`, `norm1.gamma`,
`conv2`, `norm2.gamma`, `linear_layers.N`.

As trained (and as the official streaming code runs it), each 4-frame clip is projected on its own: the causal
padding in front of a clip is the clip's own last two frames, so the projection keeps no state between clips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 16
"""Pixels per token side (VAE stride 8 x DiT patch 2)."""
CLIP_FRAMES = 4
"""Input frames per latent frame."""


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel dimension of [B, C, T, H, W] (the Wan VAE's `RMS_norm`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def pixel_unshuffle_3d(x: torch.Tensor, frames: int, rows: int, cols: int) -> torch.Tensor:
    """[B, C, T*frames, H*rows, W*cols] -> [B, C*frames*rows*cols, T, H, W] (channel-major, as `einops`
    'b c (f ff) (h hh) (w ww) -> b (c ff hh ww) f h w')."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // frames, frames, h // rows, rows, w // cols, cols)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * frames * rows * cols, t // frames, h // rows, w // cols)


class LQProjection(nn.Module):
    """Projects 4-frame clips of the upscaled LQ video ([-1, 1]) to one latent frame of tokens per clip."""

    def __init__(
        self, out_dim: int, in_dim: int = 3, hidden_dim1: int = 2048, hidden_dim2: int = 3072, layers: int = 1
    ):
        super().__init__()
        self.conv1 = nn.Conv3d(in_dim * PATCH * PATCH, hidden_dim1, (4, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1))
        self.norm1 = ChannelRMSNorm(hidden_dim1)
        self.conv2 = nn.Conv3d(hidden_dim1, hidden_dim2, (4, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1))
        self.norm2 = ChannelRMSNorm(hidden_dim2)
        self.linear_layers = nn.ModuleList([nn.Linear(hidden_dim2, out_dim) for _ in range(layers)])

    @staticmethod
    def _causal(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        # The trained causal context: the input's own last two frames in front (see the module docstring).
        return conv(torch.cat([x[:, :, -2:], x], dim=2))

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, 4n, H, W] (n whole clips) -> one [B, n*(H/16)*(W/16), out_dim] per conditioned block."""
        b, _, t, _, _ = clips.shape
        if t % CLIP_FRAMES:
            raise ValueError(f"LQ clips must be whole 4-frame clips, got {t} frames")
        outs = []
        for i in range(0, t, CLIP_FRAMES):
            x = pixel_unshuffle_3d(clips[:, :, i : i + CLIP_FRAMES], 1, PATCH, PATCH)
            x = F.silu(self.norm1(self._causal(self.conv1, x)))
            x = F.silu(self.norm2(self._causal(self.conv2, x)))
            outs.append(x)
        x = torch.cat(outs, dim=2).flatten(2).transpose(1, 2)  # [B, n*h*w, C], frame-major
        return [linear(x) for linear in self.linear_layers]
