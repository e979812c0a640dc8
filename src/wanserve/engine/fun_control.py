"""Wan2.2-Fun-5B-Control (VideoX-Fun): a text-to-video DiT whose input also takes the VAE latents of a control video
(edges, depth or pose, prepared by the user), run on diffusers' `WanPipeline`.

What VideoX-Fun does (read at 804a425, videox_fun/pipeline/pipeline_wan2_2_fun_control.py and
videox_fun/models/wan_transformer3d.py; examples/wan2.2_fun/predict_v2v_control_5b.py): the control video is
scaled to [-1, 1], VAE-encoded (the posterior's mode, normalised like the latents) and concatenated to the noisy
latents on the channel axis before the patch embedding (`y`), followed by the inpainting condition (mask and
masked-video latents, or start-image latents). Without a start image that condition is all zeros: the predict
script's `get_image_to_video_latent(None, None)` gives a mask of 255 everywhere, for which the pipeline makes zero
mask latents and zero masked-video latents. So the DiT's `in_dim` is the latents (48) + the control latents (48)
+ that zero condition, and wanserve feeds exactly that: control video only; start images and VideoX-Fun's
reference-image branch (`ref_conv`) are not offered (a request cannot give them; the weights are not loaded).

The same control latents go to the conditional and the unconditional pass, as in VideoX-Fun.
"""

from __future__ import annotations

import torch
from diffusers import WanPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents


class WanFunControlPipeline(WanPipeline):
    """`WanPipeline` with a control video: `pipe(prompt_embeds=..., control_video=[PIL frames], ...)`."""

    def prepare_latents(self, batch_size, num_channels_latents=16, *args, **kwargs):
        # The noise has the VAE's channels; the transformer's `in_channels` also count the control input.
        return super().prepare_latents(batch_size, self.vae.config.z_dim, *args, **kwargs)

    def control_condition(self, control_video, height: int, width: int, device) -> torch.Tensor:
        """[1, in_channels - z, T, H, W]: the control video's normalised latents, then zeros (the condition of
        no start image)."""
        z = self.vae.config.z_dim
        transformer = self.transformer if self.transformer is not None else self.transformer_2
        extra = transformer.config.in_channels - 2 * z
        if extra < 0:
            raise ValueError(
                f"the transformer takes {transformer.config.in_channels} input channels; a Fun-Control model takes "
                f"at least {2 * z} (latents and control latents)"
            )
        pixels = self.video_processor.preprocess_video(control_video, height=height, width=width)
        pixels = pixels.to(device=device, dtype=self.vae.dtype)
        latents = retrieve_latents(self.vae.encode(pixels), sample_mode="argmax").float()
        mean = torch.tensor(self.vae.config.latents_mean, device=latents.device).view(1, z, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=latents.device).view(1, z, 1, 1, 1)
        latents = (latents - mean) / std
        zeros = latents.new_zeros(latents.shape[0], extra, *latents.shape[2:])
        return torch.cat([latents, zeros], dim=1)

    def __call__(self, *args, control_video=None, height: int = 480, width: int = 832, **kwargs):
        if control_video is None:
            raise ValueError("`control_video` is required")
        with torch.no_grad():
            condition = self.control_condition(control_video, height, width, self._execution_device)

        def add_condition(module, args, kwargs):
            hidden = kwargs["hidden_states"]
            cond = condition.to(device=hidden.device, dtype=hidden.dtype).expand(hidden.shape[0], -1, -1, -1, -1)
            kwargs["hidden_states"] = torch.cat([hidden, cond], dim=1)
            return args, kwargs

        transformers = [t for t in (self.transformer, self.transformer_2) if t is not None]
        hooks = [t.register_forward_pre_hook(add_condition, with_kwargs=True) for t in transformers]
        try:
            return super().__call__(*args, height=height, width=width, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
