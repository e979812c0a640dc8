"""`Engine`: loads models once and runs one generation at a time with progress and cancellation."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wanserve.engine import inputs as engine_inputs
from wanserve.engine.decode_stream import StreamedDecode, WriteVideo, stream_unavailable, to_uint8
from wanserve.engine.fast import fast_modes
from wanserve.engine.fast import options_for as fast_options_for
from wanserve.engine.lora import LoraAdapters, LoraSlot, resolve_loras
from wanserve.engine.memory import apply_memory_options
from wanserve.engine.pipelines import build_pipeline, make_scheduler, pipeline_class
from wanserve.engine.registry import ModelSpec, get_spec
from wanserve.engine.relighting import find_relighting_lora, load_relighting_lora, relighting_adapter
from wanserve.engine.requests import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressEvent,
    Stage,
    StopCallback,
    TaskKind,
)
from wanserve.engine.speed import apply_speed_options
from wanserve.engine.tiny import build_tiny_components
from wanserve.errors import GenerationCancelled, OutOfMemoryError

logger = logging.getLogger(__name__)


NEGATIVE_EMBEDS_KEPT = 8
"""Negative prompts whose embeddings a loaded model keeps (each 512 x 4096 values: 4 MiB in bf16)."""


@dataclass
class LoadedModel:
    """A model's components in memory, and the pipelines built over them so far."""

    spec: ModelSpec
    components: dict[str, Any]
    device: torch.device
    path: str | None
    random_weights: bool
    pipelines: dict[type, Any] = field(default_factory=dict)
    parallel_applied: bool = False
    """Parallel plans (context/CFG parallel, FSDP, split decode) are hooks on the shared modules, applied once."""
    memory_applied: bool = False
    """Placement and offload hooks live on the shared modules, so they are applied once per model."""
    speed: dict[str, str] | None = None
    """The speed options applied to the model's transformers (attention kernel, compile), once per model."""
    loras: LoraAdapters | LoraSlot | None = None
    """The LoRA adapters loaded on its transformer(s): made at the first job with LoRAs, or with compiled blocks a
    hot-swap slot made before they first run."""

    @property
    def transformers(self) -> list[Any]:
        return [self.components[n] for n in ("transformer", "transformer_2") if n in self.components]

    def lora_adapters(self, max_loaded: int) -> LoraAdapters | LoraSlot:
        if self.loras is None:
            self.loras = LoraAdapters(self.transformers, max_loaded)
        return self.loras

    relighting_lora: str | None = None
    """Animate: the relighting LoRA file loaded into the transformer ("" when there is none), once per model."""
    negative_embeds: OrderedDict = field(default_factory=OrderedDict)
    """(negative prompt, max_sequence_length) -> its text embeddings on the device, the most recent last: most jobs
    share the model's default negative prompt, so classifier-free guidance encodes it once (`NEGATIVE_EMBEDS_KEPT`)."""

    def negative_prompt_embeds(self, pipe, text: str, max_sequence_length: int, device: torch.device, on: torch.device):
        """`text`'s embeddings as `pipe.encode_prompt` makes a negative prompt's (the same T5 call as a prompt's),
        encoded on `on` at the first use and kept on `device`."""
        key = (text, max_sequence_length)
        embeds = self.negative_embeds.get(key)
        if embeds is None:
            embeds, _ = pipe.encode_prompt(
                prompt=text, do_classifier_free_guidance=False, num_videos_per_prompt=1,
                max_sequence_length=max_sequence_length, device=on,
            )  # fmt: skip
            embeds = embeds.to(device)
            self.negative_embeds[key] = embeds
            while len(self.negative_embeds) > NEGATIVE_EMBEDS_KEPT:
                self.negative_embeds.popitem(last=False)
        self.negative_embeds.move_to_end(key)
        return embeds


class Engine:
    """Runs generations. One generation at a time per engine; models stay loaded between generations."""

    def __init__(self, config=None):
        from wanserve.engine.config import EngineConfig

        self.config = config or EngineConfig()
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        if self.config.device_type in (None, "cuda"):
            # Before `self.device` is resolved: asking CUDA for its current device starts its allocator.
            from wanserve.engine.devices import prefer_expandable_segments

            prefer_expandable_segments(os.environ)

    # -- models -------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        from wanserve.engine.devices import resolve_device

        return torch.device(resolve_device(self.config.device))

    def loaded_models(self) -> list[str]:
        return list(self._models)

    def is_random(self, model: str) -> bool:
        """Whether `model` (loaded or not) serves random weights."""
        loaded = self._models.get(model)
        return loaded.random_weights if loaded is not None else get_spec(model).random_weights

    def load(self, model: str) -> LoadedModel:
        """Loads `model` (and keeps it), building tiny models offline; a second call returns the loaded one."""
        if model in self._models:
            return self._models[model]
        spec = get_spec(model)
        start = time.perf_counter()
        device = self.device
        if spec.pipeline == "FlashVSR":
            from wanserve.engine.upscale import load_flashvsr_model

            flashvsr, path = load_flashvsr_model(spec, self.config, device)
            components = {"flashvsr": flashvsr}
        elif spec.tiny:
            # Tiny models stay in float32: they are for correctness, and bf16 would blur the equality tests.
            components, path = build_tiny_components(spec), None
            for module in components.values():
                if isinstance(module, torch.nn.Module):
                    module.to(device)
        else:
            from wanserve.engine import loading
            from wanserve.engine.config import torch_dtype
            from wanserve.errors import WeightsNotFoundError

            directory = loading.resolve_model_dir(spec, self.config.weights)
            if directory is None:
                raise WeightsNotFoundError(
                    f"no weights for {model} in {self.config.weights.download_dir(model)}: set WANSERVE_MODELS_DIR "
                    f"(expects <dir>/{model}) or pass a path; `wanserve download {model}` fetches them"
                )
            memory = self.config.memory
            components = loading.load_components(
                spec,
                directory,
                dtype=torch_dtype(memory.transformer_dtype),
                text_encoder_dtype=torch_dtype(memory.text_encoder_dtype),
                image_encoder_dtype=torch_dtype(memory.image_encoder_dtype),
                vae_dtype=torch_dtype(memory.vae_dtype),
            )
            path = str(directory)
            if memory.dfloat11_dir is not None:
                from wanserve.engine.dfloat11_model import apply_df11_dir

                apply_df11_dir(components, memory.dfloat11_dir, device, memory.dfloat11_cpu_offload)
        _cap_device_memory(device, self.config.memory.max_memory_gib)
        loaded = LoadedModel(
            spec=spec, components=components, device=device, path=path, random_weights=spec.random_weights
        )
        self._models[model] = loaded
        logger.info(
            "loaded %s on %s in %.1f s%s",
            model,
            device,
            time.perf_counter() - start,
            " (random weights)" if spec.random_weights else "",
        )
        return loaded

    def adopt(self, model: str, components: dict[str, Any], random_weights: bool) -> LoadedModel:
        """Serves `model` from components built elsewhere (benchmarks build real-size models with random weights).

        `random_weights` must say whether they are trained weights: every result reports it.
        """
        spec = get_spec(model)
        _cap_device_memory(self.device, self.config.memory.max_memory_gib)
        loaded = LoadedModel(
            spec=spec, components=components, device=self.device, path=None, random_weights=random_weights
        )
        self._models[model] = loaded
        return loaded

    @property
    def in_group(self) -> bool:
        """Whether this engine is one rank of a group (a parallel plan over more than one process)."""
        return self.config.parallel is not None and self.config.parallel.world_size > 1

    def unload(self, model: str) -> None:
        """Forgets `model`; its memory is freed once nothing else holds its modules."""
        self._models.pop(model, None)

    def _pipeline(self, loaded: LoadedModel, request: GenerationRequest):
        cls = pipeline_class(loaded.spec, request)
        if cls not in loaded.pipelines:
            pipe = build_pipeline(cls, loaded.spec, loaded.components)
            if loaded.spec.pipeline == "WanAnimatePipeline" and loaded.relighting_lora is None:
                # Before the memory options: LoRA layers must exist when offload hooks wrap the modules.
                path = find_relighting_lora(self.config.relighting_lora, loaded.path)
                if path is not None:
                    load_relighting_lora(pipe.transformer, path)
                loaded.relighting_lora = str(path) if path is not None else ""
            lora = self.config.lora
            compiled = self.config.speed.compile_mode(loaded.device.type) == "blocks"
            if compiled and lora.enabled and lora.hotswap_rank and loaded.loras is None and not loaded.relighting_lora:
                # Before the blocks are compiled (and offload hooks wrap them), so their code includes the slot
                # (engine/lora.py). A model with Animate's relighting adapter keeps plain adapters.
                loaded.loras = LoraSlot(loaded.transformers, lora.hotswap_rank, lora.max_loaded)
            parallel = self.config.parallel
            if self.in_group and not loaded.parallel_applied:
                from wanserve.engine.parallel import apply_parallel_plans, build_rank_mesh

                apply_parallel_plans(loaded.components, parallel, build_rank_mesh(parallel, loaded.device))
                loaded.parallel_applied = True
            if loaded.speed is None:
                # Before the memory options: their hooks (group offload) then wrap each compiled block, instead of
                # being compiled into it (their device copies cannot be traced).
                loaded.speed = apply_speed_options(loaded.components, self.config.speed, loaded.device)
                if isinstance(loaded.loras, LoraSlot):
                    loaded.speed["lora"] = f"hot-swap slot of rank {loaded.loras.rank}"
            if not loaded.memory_applied:
                # Tiny models too, so every memory option is exercised by the tiny-model tests.
                apply_memory_options(pipe, self.config.memory, loaded.device)
                loaded.memory_applied = True
            pipe.set_progress_bar_config(disable=True)
            loaded.pipelines[cls] = pipe
        return loaded.pipelines[cls]

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
        sink=None,
        frames=None,
        write_video: WriteVideo | None = None,
    ) -> GenerationResult:
        """Runs one generation and returns its frames; writing them (MP4, thumbnail, storage) is the caller's.

        `should_stop` is checked after every denoising step; when it returns True the run stops with
        `GenerationCancelled`. Upscale requests (FlashVSR) only: `sink(frames)` takes the output chunk by chunk (the
        result then holds no frames) and `frames` (uint8 [H, W, 3] each) replaces the request's `video`.

        Other requests: `write_video(frames, num_frames)` consumes the output as an iterator of uint8 [H, W, 3]
        frames (the result then holds no frames). Where the decode can stream (engine/decode_stream.py) it runs on a
        writer thread while the VAE decodes, chunk by chunk (and `should_stop` is also checked between chunks);
        elsewhere it is called with the whole video after the decode. Its errors are raised here.
        """
        with self._lock:
            try:
                if request.task == TaskKind.UPSCALE:
                    return self._upscale(request, on_progress, should_stop, sink, frames)
                return _Run(self, request, on_progress, should_stop, write_video).run()
            except torch.OutOfMemoryError as exc:
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            except BaseException:
                self._drop_partial_state()
                raise
            # Outside the except block: the traceback (and the tensors its frames hold) is gone, so the memory
            # can be given back before the next job.
            self._drop_partial_state()
            release_memory(self.device)
            raise OutOfMemoryError(f"out of accelerator memory: {self.oom_hint(request)} ({message[:300]})")

    def _drop_partial_state(self) -> None:
        """What a failed or stopped generation leaves inside the models: the Wan VAE keeps the features of its causal
        convolutions on the module (`_feat_map`) until its next decode clears them, 2.6 GiB after an out-of-memory
        error in a 480p decode on the H200 (benchmarks/oom_recovery.py), enough to fail the next, small job."""
        for loaded in self._models.values():
            for component in loaded.components.values():
                clear_cache = getattr(component, "clear_cache", None)
                if isinstance(component, torch.nn.Module) and callable(clear_cache):
                    clear_cache()

    def device_budget_gib(self) -> float | None:
        """Accelerator memory this engine may use (the device's, or `max_memory_gib` when smaller); None on the CPU."""
        device = self.device
        if device.type != "cuda":
            return self.config.memory.max_memory_gib
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory / 2**30
        cap = self.config.memory.max_memory_gib
        return min(total, cap) if cap else total

    def oom_hint(self, request: GenerationRequest) -> str:
        """What would fit this engine's device, from the memory estimate (a general hint without one)."""
        from wanserve.engine.memory_estimate import fit_advice

        budget = self.device_budget_gib()
        if budget is not None:
            spec = get_spec(request.model)
            advice = fit_advice(spec, self.config.memory, request.width, request.height, request.num_frames, budget)
            if advice is not None:
                return advice.message(spec.name, str(self.device))
        return (
            "try fewer `num_frames`, a smaller size, or a memory option (WANSERVE_OFFLOAD=model or group, "
            "WANSERVE_T5_CPU=1, WANSERVE_VAE_TILING=1)"
        )

    def _upscale(self, request, on_progress, should_stop, sink, frames) -> GenerationResult:
        from wanserve.engine.upscale import run_upscale

        on_progress = on_progress or (lambda event: None)
        on_progress(ProgressEvent(stage=Stage.LOADING, steps=request.num_inference_steps))
        loaded = self.load(request.model)
        model = loaded.components["flashvsr"]
        stop = should_stop or (lambda: False)
        return run_upscale(model, request, loaded.device, self.config.upscale, loaded.random_weights, on_progress,
                           stop, sink=sink, frames=frames)  # fmt: skip


class _Run:
    """One generation: the stages in order, with timings."""

    def __init__(self, engine: Engine, request: GenerationRequest, on_progress, should_stop, write_video=None):
        self.engine = engine
        self.request = request
        self.write_video = write_video
        self.on_progress = on_progress or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.stage_times: dict[str, float] = {}
        self.step_times: list[float] = []
        self._stage: Stage | None = None
        self.steps = engine_inputs.effective_steps(get_spec(request.model), request)
        """Denoising steps this run will take (known from the spec, so even the loading event reports them)."""
        self.segments = (
            engine_inputs.animate_segments(request.clip_len, request.num_frames, request.refert_num)
            if request.task == TaskKind.ANIMATE
            else 1
        )
        """Segments denoised one after the other (Animate; 1 for every other task), each of `steps / segments`."""
        self._stage_start = 0.0

    def _enter(self, stage: Stage) -> None:
        """Starts `stage`; its event carries the step counts so far (0 of n before denoising, n of n after)."""
        self._close_stage()
        self._stage, self._stage_start = stage, time.perf_counter()
        done = len(self.step_times)
        self.on_progress(
            ProgressEvent(stage=stage, step=done, steps=self.steps, segment=self._segment(done), segments=self.segments)
        )

    def _segment(self, done: int) -> int:
        """The segment (1-based) step `done` belongs to; 0 before the first step."""
        return -(-done // (self.steps // self.segments)) if done else 0

    def _close_stage(self) -> None:
        if self._stage is not None:
            elapsed = time.perf_counter() - self._stage_start
            self.stage_times[self._stage.value] = self.stage_times.get(self._stage.value, 0.0) + elapsed
            self._stage = None

    def _check_stop(self) -> None:
        if self.should_stop():
            raise GenerationCancelled("generation stopped by request")

    def run(self) -> GenerationResult:
        request = self.request
        # 1. Load the model (once per engine)
        self._enter(Stage.LOADING)
        loaded = self.engine.load(request.model)
        pipe = self.engine._pipeline(loaded, request)
        device = loaded.device
        # The job's LoRAs (loaded once per file, kept between jobs; none: LoRA off). The files were checked at
        # submission; they are found again here, where this worker reads them.
        # Animate's relighting LoRA, when the model has one, runs in replace mode only (with the job's own).
        fixed = relighting_adapter(loaded.relighting_lora) if request.animate_mode == "replace" else []
        loras: list[dict] = []
        if request.loras or loaded.loras is not None or fixed:
            files = resolve_loras(request.loras, self.engine.config.lora)
            loras = loaded.lora_adapters(self.engine.config.lora.max_loaded).activate(request.loras, files, fixed)
        self._check_stop()

        # 2. Encode the prompt
        self._enter(Stage.ENCODING_TEXT)
        do_cfg = request.guidance_scale > 1.0
        # With `text_encoder_on_cpu` (the seed services' T5_CPU) the prompt is encoded on the CPU and only the
        # embeddings move to the accelerator.
        on_cpu = self.engine.config.memory.text_encoder_on_cpu
        encode_on = torch.device("cpu") if on_cpu else pipe._execution_device
        with torch.inference_mode():
            prompt_embeds, _ = pipe.encode_prompt(
                prompt=request.prompt,
                do_classifier_free_guidance=False,
                num_videos_per_prompt=1,
                max_sequence_length=request.max_sequence_length,
                device=encode_on,
            )
            negative_embeds = (
                loaded.negative_prompt_embeds(
                    pipe, request.negative_prompt or "", request.max_sequence_length, device, encode_on
                )
                if do_cfg
                else None
            )
        prompt_embeds = prompt_embeds.to(device)
        self._check_stop()

        # 3. Decode and encode the image/video inputs (a stage only for requests that have some)
        if _has_media_inputs(request):
            self._enter(Stage.ENCODING_IMAGE)
        kwargs = engine_inputs.pipeline_inputs(loaded.spec, request)
        self._check_stop()

        # 4. Denoising loop (inside the pipeline; we observe every step)
        steps = self.steps
        self._enter(Stage.DENOISING)
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        last = [time.perf_counter()]

        def on_step_end(pipeline, i, t, callback_kwargs):
            # Counted here rather than from `i`: Animate restarts `i` for every segment. The device is synchronised
            # so a step's time is the step's, not the time to queue it, and a stop decision follows a finished step.
            _synchronize(device)
            now = time.perf_counter()
            self.step_times.append(now - last[0])
            last[0] = now
            done = len(self.step_times)
            self.on_progress(
                ProgressEvent(
                    stage=Stage.DENOISING,
                    step=done,
                    steps=steps,
                    step_time_s=self.step_times[-1],
                    segment=self._segment(done),
                    segments=self.segments,
                )
            )
            self._check_stop()
            if done == steps:
                self._enter(Stage.DECODING)
            return {}

        pipe.scheduler = make_scheduler(pipe.scheduler, request.solver, request.flow_shift)
        if request.boundary_ratio is not None:
            # diffusers reads the expert switch from the pipeline's config, not from a call argument; the cached
            # pipeline is set for each generation (under the engine's lock), so a request's value takes effect.
            pipe.register_to_config(boundary_ratio=request.boundary_ratio)
        common = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds if do_cfg else None,
            height=request.height,
            width=request.width,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            max_sequence_length=request.max_sequence_length,
        )
        if request.guidance_scale_2 is not None:
            common["guidance_scale_2"] = request.guidance_scale_2
        if request.task not in (TaskKind.V2V, TaskKind.ANIMATE):
            common["num_frames"] = request.num_frames
        self._set_cfg_branches(loaded, do_cfg, negative_embeds)
        options = fast_options_for(loaded.spec, request)
        in_group = self.engine.in_group
        stream = None
        if self.write_video is not None:
            why_not = stream_unavailable(pipe, request)
            if why_not is None:
                # In a rank group every stop check is a step of the group's protocol, which the other ranks (which
                # decode without streaming) would not take: there the decode is not stopped between chunks.
                stop = (lambda: False) if in_group else self.should_stop
                stream = StreamedDecode(pipe, self.write_video, request.num_frames, stop)
                common["output_type"] = "pt"  # the frames go to the writer; the returned video is not used
            else:
                logger.debug("%s: the decode is not streamed to the writer: %s", request.model, why_not)
        with (
            fast_modes(loaded.components, options, steps=self.steps, in_group=in_group) as fast_record,
            torch.inference_mode(),
            stream if stream is not None else contextlib.nullcontext(),
        ):
            frames = pipe(**common, **kwargs).frames[0]
        if self._stage != Stage.DECODING:
            self._enter(Stage.DECODING)

        if stream is not None:
            del frames
            (height, width), count = stream.frame_shape, stream.frames_written
            video = np.zeros((0, height, width, 3), dtype=np.uint8)
        else:
            video = to_uint8(frames)
            del frames
            count, height, width = video.shape[:3]
            if self.write_video is not None:
                self.write_video(iter(video), count)
                video = video[:0]
        self._close_stage()
        return GenerationResult(
            frames=video,
            loras=tuple(loras),
            speed={**(loaded.speed or {}), "mode": request.speed, **fast_record},
            width=int(width),
            height=int(height),
            num_frames=int(count),
            fps=request.fps,
            seed=request.seed,
            random_weights=loaded.random_weights,
            stage_times_s=dict(self.stage_times),
            step_times_s=tuple(self.step_times),
        )

    def _set_cfg_branches(self, loaded: LoadedModel, do_cfg: bool, negative_embeds) -> None:
        """Under CFG parallel, what the uncond forward changes: the negative prompt (and for Animate the face video,
        which the pipeline blanks for uncond)."""
        if not loaded.parallel_applied or self.engine.config.parallel.cfg_degree == 1:
            return
        from wanserve.engine.parallel import set_cfg_branches

        if not do_cfg:
            set_cfg_branches(loaded.components, None)
            return
        negative = negative_embeds.to(loaded.components["transformer"].dtype)
        if self.request.task == TaskKind.ANIMATE:

            def uncond(kwargs):
                return {"encoder_hidden_states": negative, "face_pixel_values": kwargs["face_pixel_values"] * 0 - 1}

            set_cfg_branches(loaded.components, uncond)
        else:
            set_cfg_branches(loaded.components, {"encoder_hidden_states": negative})


def release_memory(device: torch.device) -> None:
    """Frees what a failed run left: unreachable tensors, then the allocator's cached blocks."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    logger.info("released memory after an out-of-memory error on %s", device)


def _cap_device_memory(device: torch.device, max_memory_gib: float | None) -> None:
    """Limits CUDA's allocator on `device` to `max_memory_gib` (a worker sharing a larger GPU)."""
    if max_memory_gib is None or device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, max_memory_gib * 2**30 / total), index)


def _has_media_inputs(request: GenerationRequest) -> bool:
    """Whether the request carries an image or video to decode (t2v and text-only ti2v do not)."""
    singles = (request.image, request.last_image, request.video, request.mask, request.pose_video)
    return any(x is not None for x in singles) or bool(request.reference_images)


def _synchronize(device: torch.device) -> None:
    if device.type == "cpu":
        return
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):
        accelerator.synchronize(device)
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
