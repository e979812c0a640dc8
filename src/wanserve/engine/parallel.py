"""Parallel plans for one job on many ranks: `ParallelConfig` (validated at start-up) and `apply_parallel_plans`,
which attaches each plan to the loaded components from outside, as diffusers' hooks do.

- Ulysses / Ring / hybrid sequence parallel: diffusers' context parallelism (`ContextParallelConfig` and the model's
  `_cp_plan`; wanserve supplies the plans diffusers lacks, see `models.parallel_plans`). Sequence lengths the degree
  does not divide are split unevenly (diffusers' "anything" sharders) for pure Ulysses or pure Ring; the hybrid
  refuses them by name before any collective runs, so no rank hangs.
- CFG parallel: the cond and the uncond forward run on different ranks at the same time and are exchanged, so every
  rank combines them as the pipeline always does (`CfgParallelHook`; diffusers has no such plan).
- FSDP: `torch.distributed.fsdp.fully_shard` over every rank, per block, for the DiT and the T5 encoder.
- Split VAE decode: the tiles of diffusers' tiled decode are shared out over the ranks and sent to rank 0, which
  blends them (`vae_split_decode`); no rank holds the activations of the whole decode.

The process group must be initialised before `apply_parallel_plans` (the worker group does it; see
`wanserve.worker.group`). The model code never asks about ranks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wanserve.engine.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelConfig:
    """How one job is spread over the ranks of a worker group. The product of the three degrees is the group size."""

    world_size: int = 1
    """Ranks (processes, one device each) that run one job together."""
    ulysses_degree: int = 1
    """Ulysses sequence parallel: ranks that exchange attention heads by all-to-all (divides the heads)."""
    ring_degree: int = 1
    """Ring attention: ranks that pass key/value blocks around (needs a backend that returns the log-sum-exp)."""
    cfg_degree: int = 1
    """1, or 2: the cond and uncond forwards of classifier-free guidance on different ranks."""
    dit_fsdp: bool = False
    """Shard the diffusion transformer's weights over all ranks (FSDP2, one unit per block)."""
    t5_fsdp: bool = False
    """Shard the T5 text encoder's weights over all ranks."""
    vae_parallel: bool = False
    """Share the VAE decode's tiles out over the ranks; rank 0 blends them."""
    collective_timeout_s: float = 600.0
    """A collective (or a step's hand-over between ranks) that takes longer fails the job and restarts the group."""

    def __post_init__(self) -> None:
        for name in ("world_size", "ulysses_degree", "ring_degree", "cfg_degree"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"`{name}` must be a whole number >= 1, got {value!r}")
        if self.cfg_degree > 2:
            raise ConfigError("cfg_degree", f"`cfg_degree` must be 1 or 2 (cond and uncond), got {self.cfg_degree}")
        product = self.ulysses_degree * self.ring_degree * self.cfg_degree
        if product != self.world_size:
            raise ConfigError(
                "ulysses_degree",
                f"`ulysses_degree` {self.ulysses_degree} x `ring_degree` {self.ring_degree} x `cfg_degree` "
                f"{self.cfg_degree} = {product} must equal `world_size` {self.world_size}",
            )
        for name in ("dit_fsdp", "t5_fsdp", "vae_parallel"):
            if getattr(self, name) and self.world_size < 2:
                raise ConfigError(name, f"`{name}` true needs `world_size` >= 2, got `world_size` {self.world_size}")
        if not self.collective_timeout_s > 0:
            raise ConfigError(
                "collective_timeout_s", f"`collective_timeout_s` must be > 0, got {self.collective_timeout_s!r}"
            )

    @property
    def sequence_degree(self) -> int:
        """Ranks one sequence is split over (Ulysses x Ring)."""
        return self.ulysses_degree * self.ring_degree

    def describe(self) -> dict[str, Any]:
        """The plan as `/health` and job results show it."""
        return {
            "world_size": self.world_size,
            "ulysses_size": self.ulysses_degree,
            "ring_size": self.ring_degree,
            "cfg_size": self.cfg_degree,
            "dit_fsdp": self.dit_fsdp,
            "t5_fsdp": self.t5_fsdp,
            "vae_parallel": self.vae_parallel,
        }

    @classmethod
    def for_group(
        cls,
        world_size: int,
        ulysses_degree: int | None = None,
        ring_degree: int = 1,
        cfg_degree: int = 1,
        **flags: Any,
    ) -> ParallelConfig:
        """A plan for `world_size` ranks: Ulysses takes whatever the ring and CFG degrees leave (the default)."""
        if ulysses_degree is None:
            rest = ring_degree * cfg_degree
            ulysses_degree = world_size // rest if rest and world_size % rest == 0 else world_size
        return cls(world_size, ulysses_degree, ring_degree, cfg_degree, **flags)


@dataclass
class RankMesh:
    """This rank's place in the group: the device mesh `(cfg, ring, ulysses)` over all ranks."""

    rank: int
    world_size: int
    device: torch.device
    mesh: Any
    """`torch.distributed.device_mesh.DeviceMesh` with dimensions `cfg`, `ring`, `ulysses`."""

    @property
    def cfg_rank(self) -> int:
        return self.mesh["cfg"].get_local_rank()


def build_rank_mesh(config: ParallelConfig, device: torch.device) -> RankMesh:
    """The mesh of an initialised process group of `config.world_size` ranks."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise RuntimeError("the process group must be initialised before the parallel plans are applied")
    if dist.get_world_size() != config.world_size:
        raise ConfigError(
            "world_size",
            f"`world_size` {config.world_size} does not match the {dist.get_world_size()} ranks of the process group",
        )
    mesh = init_device_mesh(
        device.type,
        (config.cfg_degree, config.ring_degree, config.ulysses_degree),
        mesh_dim_names=("cfg", "ring", "ulysses"),
    )
    return RankMesh(dist.get_rank(), config.world_size, device, mesh)


# -- plans ----------------------------------------------------------------------------------------------------------
TRANSFORMER_KEYS = ("transformer", "transformer_2")


def apply_parallel_plans(components: dict[str, Any], config: ParallelConfig, ranks: RankMesh) -> None:
    """Attaches every plan of `config` to a model's components (once per model, before the first generation)."""
    # 1. Sequence parallel and CFG parallel on each transformer (FSDP wraps after, so hooks see whole modules)
    for key in TRANSFORMER_KEYS:
        model = components.get(key)
        if model is None:
            continue
        if config.sequence_degree > 1:
            enable_context_parallel(model, config, ranks)
        if config.cfg_degree > 1:
            CfgParallelHook.attach(model, ranks)
    # 2. FSDP: every rank keeps a 1/world_size shard of each block's weights
    if config.dit_fsdp:
        for key in TRANSFORMER_KEYS:
            if components.get(key) is not None:
                shard_blocks(components[key], _transformer_blocks(components[key]), ranks)
    if config.t5_fsdp and components.get("text_encoder") is not None:
        encoder = components["text_encoder"]
        shard_blocks(encoder, list(encoder.encoder.block), ranks)
    # 3. Split VAE decode
    if config.vae_parallel and components.get("vae") is not None:
        attach_split_decode(components["vae"], ranks)


def enable_context_parallel(model: torch.nn.Module, config: ParallelConfig, ranks: RankMesh) -> None:
    """diffusers' context parallelism on `model` over the `ring` x `ulysses` part of the mesh, with wanserve's plan
    where diffusers has none. Builds the config itself (rather than `model.enable_parallelism`), because diffusers
    picks the device from `torch.accelerator`, which has none on a CPU group."""
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig

    from wanserve.models.parallel_plans import context_parallel_plans

    heads = getattr(model.config, "num_attention_heads", None)
    if heads is not None and heads % config.ulysses_degree:
        raise ConfigError(
            "ulysses_degree",
            f"`ulysses_degree` {config.ulysses_degree} must divide the model's {heads} attention heads",
        )
    cp = ContextParallelConfig(
        ring_degree=config.ring_degree,
        ulysses_degree=config.ulysses_degree,
        # Uneven sequence lengths (720p, Animate) are split unevenly; diffusers has this for one kind at a time.
        ulysses_anything=config.ring_degree == 1,
        ring_anything=config.ulysses_degree == 1,
    )
    parallel = DiffusersParallelConfig(context_parallel_config=cp)
    parallel.setup(ranks.rank, ranks.world_size, ranks.device, mesh=ranks.mesh["ring", "ulysses"])
    if ranks.device.type == "cpu":
        from wanserve.engine.parallel_attention import install_cpu_ring_attention, install_padded_uneven_gather

        install_cpu_ring_attention()
        install_padded_uneven_gather()
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = parallel
    model._parallel_config = parallel
    if config.ring_degree > 1 and config.ulysses_degree > 1:
        model.register_forward_pre_hook(_EvenSequenceCheck(config, model), with_kwargs=True)
    for plan in context_parallel_plans(model):
        apply_context_parallel(model, cp, plan)


class _EvenSequenceCheck:
    """The hybrid plan splits the sequence evenly only: a length it does not divide fails on every rank at once,
    by name, before the first collective (instead of an assertion on some ranks and a hang on others)."""

    def __init__(self, config: ParallelConfig, model: torch.nn.Module):
        self.degree = config.sequence_degree
        self.patch = tuple(model.config.patch_size)

    def __call__(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None:
            return None
        tokens = math.prod(n // p for n, p in zip(hidden.shape[2:], self.patch, strict=True))
        if tokens % self.degree:
            from wanserve.errors import InvalidRequestError

            raise InvalidRequestError(
                "width",
                f"this size makes {tokens} tokens a frame sequence, which the hybrid Ulysses x Ring plan of degree "
                f"{self.degree} cannot split evenly; choose a size whose token count it divides, or a plan of "
                "Ulysses or Ring alone",
            )
        return None


def _transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = list(model.blocks)
    blocks += list(getattr(model, "vace_blocks", []) or [])
    blocks += list(getattr(model, "face_adapter", []) or [])
    return blocks


def shard_blocks(model: torch.nn.Module, blocks: list[torch.nn.Module], ranks: RankMesh) -> None:
    """FSDP2 over all ranks: one unit per block, the rest (embeddings, heads) in the root unit. Forward only: the
    weights of a block are gathered for its forward and freed after it."""
    from torch.distributed.fsdp import fully_shard

    flat = ranks.mesh["cfg", "ring", "ulysses"]._flatten("fsdp")
    for block in blocks:
        fully_shard(block, mesh=flat, reshard_after_forward=True)
    fully_shard(model, mesh=flat, reshard_after_forward=True)


def local_parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters this rank holds (its shards under FSDP)."""
    total = 0
    for param in module.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
    return total


# -- CFG parallel ---------------------------------------------------------------------------------------------------
class CfgParallelHook:
    """Runs the cond forward on CFG rank 0 and the uncond forward on CFG rank 1 at the same time.

    The pipelines call the transformer for cond, then for uncond. At the cond call each CFG rank runs its own branch
    (rank 1 with `uncond_inputs` put over the call's arguments); the two outputs are exchanged; the cond call returns
    the cond output and the uncond call returns the uncond output without running the model. Both ranks then combine
    them exactly as a single process does. The engine sets `uncond_inputs` for each generation (None: no CFG).
    """

    name = "wanserve_cfg_parallel"

    def __init__(self, ranks: RankMesh):
        self.group = ranks.mesh["cfg"].get_group()
        self.cfg_rank = ranks.cfg_rank
        self.uncond_inputs: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None
        """The arguments the uncond call changes, or a function of the cond call's keyword arguments giving them."""
        self._pending: Any = None

    @classmethod
    def attach(cls, model: torch.nn.Module, ranks: RankMesh) -> CfgParallelHook:
        hook = cls(ranks)
        original = model.forward

        def forward(*args, **kwargs):
            return hook.forward(original, args, kwargs)

        model.forward = forward
        model._wanserve_cfg_hook = hook
        return hook

    @staticmethod
    def of(model: torch.nn.Module | None) -> CfgParallelHook | None:
        return getattr(model, "_wanserve_cfg_hook", None) if model is not None else None

    def forward(self, original, args, kwargs):
        import torch.distributed as dist

        if self.uncond_inputs is None:
            return original(*args, **kwargs)
        if self._pending is not None:  # the uncond call: computed already, by the other CFG rank
            out, self._pending = self._pending, None
            return out
        if self.cfg_rank == 1:
            overrides = self.uncond_inputs(kwargs) if callable(self.uncond_inputs) else self.uncond_inputs
            kwargs = {**kwargs, **overrides}
        out = original(*args, **kwargs)
        sample = out[0] if isinstance(out, tuple) else out.sample
        gathered = [torch.empty_like(sample) for _ in range(2)]
        dist.all_gather(gathered, sample.contiguous(), group=self.group)
        self._pending = _like(out, gathered[1])
        return _like(out, gathered[0])

    def reset(self) -> None:
        self.uncond_inputs, self._pending = None, None


def _like(out, sample):
    if isinstance(out, tuple):
        return (sample, *out[1:])
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


def set_cfg_branches(components: dict[str, Any], uncond_inputs: dict[str, Any] | Callable | None) -> None:
    """Tells each transformer's CFG-parallel hook what the uncond forward changes (None: this generation has no
    CFG, every rank runs the same forward)."""
    for key in TRANSFORMER_KEYS:
        hook = CfgParallelHook.of(components.get(key))
        if hook is not None:
            hook.reset()
            hook.uncond_inputs = uncond_inputs


# -- split VAE decode -----------------------------------------------------------------------------------------------
def attach_split_decode(vae: torch.nn.Module, ranks: RankMesh) -> None:
    """Tiled decode with the tiles shared out over the ranks (tiling on, diffusers' tile sizes unless set)."""
    if not getattr(vae, "use_tiling", False):
        vae.enable_tiling()

    def tiled_decode(z, return_dict: bool = True):
        return vae_split_decode(vae, z, ranks, return_dict)

    vae.tiled_decode = tiled_decode


def vae_split_decode(vae, z: torch.Tensor, ranks: RankMesh, return_dict: bool = True):
    """diffusers' `AutoencoderKLWan.tiled_decode` with tile `n` decoded on rank `n % world_size` and sent to rank 0,
    which blends exactly as the single-process tiled decode does. Other ranks return a 1x1-pixel placeholder."""
    import torch.distributed as dist
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
    from diffusers.models.autoencoders.vae import DecoderOutput

    _, _, num_frames, height, width = z.shape
    ratio = vae.spatial_compression_ratio
    sample_height, sample_width = height * ratio, width * ratio
    tile_h, tile_w = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio
    stride_h, stride_w = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
    out_stride_h, out_stride_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
    patch = vae.config.patch_size
    if patch is not None:
        sample_height, sample_width = sample_height // patch, sample_width // patch
        out_stride_h, out_stride_w = out_stride_h // patch, out_stride_w // patch
        blend_h = vae.tile_sample_min_height // patch - out_stride_h
        blend_w = vae.tile_sample_min_width // patch - out_stride_w
    else:
        blend_h = vae.tile_sample_min_height - out_stride_h
        blend_w = vae.tile_sample_min_width - out_stride_w

    # 1. Decode this rank's tiles
    grid = [(i, j) for i in range(0, height, stride_h) for j in range(0, width, stride_w)]
    mine: dict[int, torch.Tensor] = {}
    for n, (i, j) in enumerate(grid):
        if n % ranks.world_size != ranks.rank:
            continue
        vae.clear_cache()
        frames = []
        for k in range(num_frames):
            vae._conv_idx = [0]
            tile = vae.post_quant_conv(z[:, :, k : k + 1, i : i + tile_h, j : j + tile_w])
            frames.append(vae.decoder(tile, feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(k == 0)))
        mine[n] = torch.cat(frames, dim=2)
    vae.clear_cache()

    # 2. Send the tiles to rank 0 (shape first, then the values)
    tiles: dict[int, torch.Tensor] = {}
    for n in range(len(grid)):
        owner = n % ranks.world_size
        if owner == 0:
            if ranks.rank == 0:
                tiles[n] = mine.pop(n)
            continue
        if ranks.rank == owner:
            tile = mine.pop(n).contiguous()
            dist.send(torch.tensor(tile.shape, dtype=torch.int64, device=tile.device), dst=0)
            dist.send(tile, dst=0)
        elif ranks.rank == 0:
            shape = torch.empty(5, dtype=torch.int64, device=z.device)
            dist.recv(shape, src=owner)
            tiles[n] = torch.empty(tuple(shape.tolist()), dtype=z.dtype, device=z.device)
            dist.recv(tiles[n], src=owner)
    if ranks.rank != 0:
        placeholder = torch.zeros(z.shape[0], 3, 1, 1, 1, dtype=z.dtype, device=z.device)
        return DecoderOutput(sample=placeholder) if return_dict else (placeholder,)

    # 3. Blend on rank 0, as the single-process tiled decode does
    rows_i = sorted({i for i, _ in grid})
    cols_j = sorted({j for _, j in grid})
    rows = [[tiles[r * len(cols_j) + c] for c in range(len(cols_j))] for r in range(len(rows_i))]
    result_rows = []
    for r, row in enumerate(rows):
        result_row = []
        for c, tile in enumerate(row):
            if r > 0:
                tile = vae.blend_v(rows[r - 1][c], tile, blend_h)
            if c > 0:
                tile = vae.blend_h(row[c - 1], tile, blend_w)
            result_row.append(tile[:, :, :, :out_stride_h, :out_stride_w])
        result_rows.append(torch.cat(result_row, dim=-1))
    dec = torch.cat(result_rows, dim=3)[:, :, :, :sample_height, :sample_width]
    if patch is not None:
        dec = unpatchify(dec, patch_size=patch)
    dec = torch.clamp(dec, min=-1.0, max=1.0)
    return DecoderOutput(sample=dec) if return_dict else (dec,)


# -- step caches under parallelism ------------------------------------------------------------------------------------
def coordinate_step_cache(transformer: torch.nn.Module) -> bool:
    """Makes diffusers' FirstBlockCache decide once for the whole group: the residual change is summed over every
    rank's shard (an all-reduce), so all ranks skip or compute the same forwards and never wait for each other in a
    collective a skipping rank does not reach. Under sequence parallel the decision is the one process's; under CFG
    parallel cond and uncond decide together. No-op outside a process group. Returns whether it was applied.

    TeaCache needs no vote: it decides from the timestep modulation, which every rank computes whole."""
    import torch.distributed as dist
    from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.hooks import HookRegistry

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return False
    hook = HookRegistry.check_if_exists_or_initialize(transformer.blocks[0]).get_hook(_FBC_LEADER_BLOCK_HOOK)
    if hook is None:
        return False

    def should_compute_remaining_blocks(residual: torch.Tensor) -> bool:
        state = hook.state_manager.get_state()
        # Every rank takes part in the all-reduce at every forward, even the first, so none waits alone.
        previous = state.head_block_residual
        sums = torch.zeros(3, dtype=torch.float64, device=residual.device)
        if previous is not None:
            sums[0] = (residual - previous).abs().sum()
            sums[1] = previous.abs().sum()
        else:
            sums[2] = 1.0
        dist.all_reduce(sums)
        if sums[2] > 0:
            return True
        return bool((sums[0] / sums[1]).item() > hook.threshold)

    hook._should_compute_remaining_blocks = should_compute_remaining_blocks
    return True
