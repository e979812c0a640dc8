"""Deployment settings: one `Settings` object, read from `WANSERVE_*` environment variables and `.env`.

The seed projects' variable names are accepted as aliases (`WAN_CHECKPOINT_DIR`, `MODEL_CKPT_DIR`, `WAN_MODELS_ROOT`, `T5_CPU`,
`ULYSSES_SIZE`, `RING_SIZE`, `MAX_CONCURRENT_TASKS`, `TASK_TIMEOUT`, `SERVER_HOST`, `SERVER_PORT`, `MAX_QUEUE_SIZE`,
`OUTPUT_DIR`). The `WANSERVE_` name wins when both are set.

Data directory: `./data` (relative to the working directory) unless `WANSERVE_DATA_DIR` says otherwise. It holds the
SQLite job database (`wanserve.db`), job outputs (`outputs/`) and uploaded inputs (`inputs/`).

Outside development mode (`WANSERVE_ENV=production`) unsafe defaults are refused: no API key, CORS open to every
origin, and the test-only hold hook.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _gib(text: str) -> float:
    """A memory size (`19GiB`, `20000MiB`, `24GB`; a bare number is GiB) in GiB; ValueError naming the value."""
    match = _SIZE_RE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"`WANSERVE_MAX_MEMORY` sizes look like 19GiB or 20000MiB, got {text!r}")
    unit = (match.group(2) or "gib").lower()
    return float(match.group(1)) * _UNITS[unit] / 2**30


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"WANSERVE_{name}", *aliases)


class Settings(BaseSettings):
    """Everything a deployment configures. Passed explicitly; never read from a global."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, frozen=True)

    environment: Literal["development", "production"] = Field("development", validation_alias=_env("ENV"))
    """`production` refuses unsafe defaults."""

    # HTTP
    host: str = Field("127.0.0.1", validation_alias=_env("HOST", "SERVER_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("PORT", "SERVER_PORT"))
    """TCP port; 0 picks a free one (the log says which)."""
    api_key: SecretStr | None = Field(None, validation_alias=_env("API_KEY"))
    """A single admin key from the environment (the old shared key): every route but `/health/live` then needs
    `Authorization: Bearer <key>`. Prefer `wanserve keys create`: per-key ownership, limits and revocation."""
    allow_open: bool = Field(False, validation_alias=_env("ALLOW_OPEN"))
    """Serve without any API key on a non-loopback address (`wanserve serve --allow-open`); without it such a
    server refuses to start until a key exists."""
    metrics_token: SecretStr | None = Field(None, validation_alias=_env("METRICS_TOKEN"))
    """A token that may read `/metrics` only (for a Prometheus scraper), besides admin keys."""
    access_log: bool = Field(True, validation_alias=_env("ACCESS_LOG"))
    """One log line per HTTP request (uvicorn's access log). `false` behind a proxy that logs requests itself: at a
    few hundred requests a second the line is about a tenth of the API process's CPU."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=_env("CORS_ORIGINS"))
    """Origins allowed by CORS (comma-separated); `*` allows all (development only)."""

    # Storage
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    """SQLAlchemy URL; default `sqlite:///<data_dir>/wanserve.db`. PostgreSQL: `postgresql+psycopg://...`."""
    broker_url: str | None = Field(None, validation_alias=_env("BROKER_URL"))
    """`redis://host:port/db`: jobs are dispatched as Celery messages over Redis (one queue per model) and job
    events are pushed through Redis pub/sub; unset: workers run in this process and poll the database."""
    output_dir: Path | None = Field(None, validation_alias=_env("OUTPUT_DIR", "OUTPUT_DIR"))
    """Where job outputs go with local storage; default `<data_dir>/outputs`."""
    storage_url: str | None = Field(None, validation_alias=_env("STORAGE_URL"))
    """Where job files go: unset for local directories (`output_dir`, `<data_dir>/inputs`), or
    `s3://bucket/prefix` for S3-compatible object storage (every API and worker process must reach it)."""
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"))
    """Endpoint of an S3-compatible server (MinIO, Ceph, R2, ...); unset: AWS."""
    s3_region: str | None = Field(None, validation_alias=_env("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    s3_access_key_id: str | None = Field(None, validation_alias=_env("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_env("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    """Unset: boto3's own credential chain (instance roles, `~/.aws`)."""
    storage_redirect: bool = Field(False, validation_alias=_env("STORAGE_REDIRECT"))
    """Answer content downloads with a redirect to a presigned URL where the storage has one (clients must reach
    the object store); otherwise the API streams the file (range requests supported either way)."""
    storage_url_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600, validation_alias=_env("STORAGE_URL_EXPIRY_S"))
    """Lifetime of presigned download URLs."""

    # Models and devices
    models: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=_env("MODELS"))
    """Models to load and warm at start-up (comma-separated). Empty: the tiny models when no weights are set."""
    warmup: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=_env("WARMUP"))
    """Sizes every worker runs once after loading its models and before its first job, so compile and cuDNN pay
    their first-call cost then (comma-separated `WxHxF` for every served model, `MODEL:WxHxF` for one;
    engine/warmup.py). Empty: no warm-up."""
    models_dir: Path | None = Field(None, validation_alias=_env("MODELS_DIR", "WAN_MODELS_ROOT"))
    """Directory holding one sub-directory of weights per model (by catalog name or hub repository name);
    `wanserve download` writes there. Default `~/.cache/wanserve/models`."""
    checkpoint_dir: Path | None = Field(
        None, validation_alias=_env("CHECKPOINT_DIR", "WAN_CHECKPOINT_DIR", "MODEL_CKPT_DIR")
    )
    """One model's weights directory (the seed services' variable): the first of `models`, or any model of the kind
    it holds."""
    hf_endpoint: str | None = Field(None, validation_alias=AliasChoices("HF_ENDPOINT"))
    """Hugging Face Hub mirror for `wanserve download` (the hub's own variable)."""
    hf_hub_offline: bool = Field(False, validation_alias=AliasChoices("HF_HUB_OFFLINE"))
    """No downloads: `wanserve download` fails at once naming the files to copy by hand."""
    modelscope_domain: str | None = Field(None, validation_alias=AliasChoices("MODELSCOPE_DOMAIN"))
    t5_cpu: bool = Field(False, validation_alias=_env("T5_CPU", "T5_CPU"))
    """Keep the text encoder on the CPU."""
    offload: Literal["none", "model", "group"] = Field("none", validation_alias=_env("OFFLOAD"))
    """Weights on the accelerator: `none` (all), `model` (one component at a time) or `group` (groups of blocks
    streamed in as they run; least memory). See docs/performance.md."""
    vae_tiling: bool = Field(False, validation_alias=_env("VAE_TILING"))
    """Decode the video in tiles (bounded decode memory at large sizes)."""
    vae_dtype: Literal["float32", "bfloat16"] = Field("float32", validation_alias=_env("VAE_DTYPE"))
    """The VAE's weights and decode: `float32` as the official code, or `bfloat16` (faster decode, half the VAE's
    memory; the frames' deviation is in docs/performance.md)."""
    use_dfloat11: bool = Field(False, validation_alias=_env("USE_DFLOAT11", "WAN_USE_DFLOAT11"))
    """Serve the transformers from DFloat11-compressed weights (`dfloat11_dir`), the Animate backend's switch."""
    dfloat11_dir: Path | None = Field(None, validation_alias=_env("DFLOAT11_DIR", "WAN_DFLOAT11_LOCAL_DIR"))
    """Where `wanserve compress --format df11` wrote the compressed transformer(s); read with `use_dfloat11`."""
    dfloat11_cpu_offload: bool = Field(False, validation_alias=_env("DFLOAT11_CPU_OFFLOAD", "WAN_DFLOAT11_CPU_OFFLOAD"))
    """Keep the compressed blocks on the CPU and copy each to the device as it runs (least device memory)."""
    max_memory: str | None = Field(None, validation_alias=_env("MAX_MEMORY", "WAN_DFLOAT11_MAX_MEMORY"))
    """Accelerator memory a worker may use: one size (`19GiB`, `20000MiB`, a number is GiB) or the Animate
    backend's JSON map by device index (`{"0": "19GiB", "1": "19GiB"}`)."""
    lora_dir: Path | None = Field(None, validation_alias=_env("LORA_DIR"))
    """Directory of LoRA files a job names by `name` (`loras: [{"name": "x"}]` reads `<lora_dir>/x.safetensors`)."""
    lora_allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias=_env("LORA_ALLOWED_DIRS")
    )
    """Further directories (comma-separated) a job's LoRA `path` may point into; no other path is read."""
    lora_max_loaded: int = Field(4, ge=1, le=64, validation_alias=_env("LORA_MAX_LOADED"))
    """LoRA adapters kept loaded on a model between jobs (least recently used dropped first)."""
    lora_hotswap_rank: int = Field(128, ge=0, le=4096, validation_alias=_env("LORA_HOTSWAP_RANK"))
    """With compiled blocks (CUDA's default): the rank of the one LoRA slot jobs' LoRAs are swapped into without
    recompiling (a job's LoRA ranks added up must fit); 0: plain adapters (each new set recompiles)."""
    flashvsr_model_path: Path | None = Field(None, validation_alias=_env("FLASHVSR_MODEL_PATH", "FLASHVSR_MODEL_PATH"))
    """The FlashVSR v1.1 directory (the FlashVSR service's variable): weights of every `flashvsr-v1.1-*` model."""
    flashvsr_streaming_lq_max_bytes: int = Field(
        2 << 30, ge=1 << 20, validation_alias=_env("FLASHVSR_STREAMING_LQ_MAX_BYTES", "FLASHVSR_STREAMING_LQ_MAX_BYTES")
    )
    """Bytes of decoded input frames an upscale may buffer."""
    flashvsr_cache_offload: bool = Field(
        False, validation_alias=_env("FLASHVSR_CACHE_OFFLOAD", "FLASHVSR_CACHE_OFFLOAD")
    )
    """Keep FlashVSR's KV cache on the CPU between chunks (small GPUs)."""

    # One job on many ranks (docs/parallel.md). The product ulysses x ring x cfg is the group's size.
    device: str | None = Field(None, validation_alias=_env("DEVICE"))
    """One device type for the workers instead of the accelerators found (`cpu` runs a group on CPU with gloo)."""
    world_size: int = Field(1, ge=1, le=64, validation_alias=_env("WORLD_SIZE"))
    """Ranks (devices) one job runs on: `--world-size` / `--gpus-per-job`; torchrun's `WORLD_SIZE` under torchrun."""
    ulysses_size: int | None = Field(None, ge=1, validation_alias=_env("ULYSSES_SIZE", "ULYSSES_SIZE"))
    """Ulysses sequence-parallel degree; default: what the ring and CFG degrees leave of the group."""
    ring_size: int = Field(1, ge=1, validation_alias=_env("RING_SIZE", "RING_SIZE"))
    """Ring-attention degree of a worker group."""
    cfg_size: int = Field(1, ge=1, le=2, validation_alias=_env("CFG_SIZE", "CFG_SIZE"))
    """2: the cond and uncond forwards of classifier-free guidance on different ranks."""
    dit_fsdp: bool = Field(False, validation_alias=_env("DIT_FSDP", "DIT_FSDP"))
    """Shard the diffusion transformer's weights over the group's ranks (FSDP)."""
    t5_fsdp: bool = Field(False, validation_alias=_env("T5_FSDP", "T5_FSDP"))
    """Shard the T5 text encoder's weights over the group's ranks (FSDP)."""
    enable_fsdp: bool = Field(False, validation_alias=_env("ENABLE_FSDP", "WAN_ENABLE_FSDP"))
    """The Animate backend's switch: both `dit_fsdp` and `t5_fsdp`."""
    sequence_parallel: bool | None = Field(
        None, validation_alias=_env("SEQUENCE_PARALLEL", "WAN_ENABLE_SEQUENCE_PARALLEL")
    )
    """The Animate backend's switch: false keeps the sequence whole (the group then needs CFG parallel)."""
    vae_parallel: bool = Field(False, validation_alias=_env("VAE_PARALLEL", "VAE_PARALLEL"))
    """Share the VAE decode's tiles out over the group's ranks."""
    collective_timeout_s: float = Field(600.0, gt=0, validation_alias=_env("COLLECTIVE_TIMEOUT_S"))
    """A rank that does not answer for this long breaks the group: the job returns to the queue by its lease and
    the group restarts."""

    # Limits
    concurrency: int | None = Field(None, ge=1, le=64, validation_alias=_env("CONCURRENCY", "MAX_CONCURRENT_TASKS"))
    """Jobs run at the same time (one worker each); default: one per device found."""
    max_queue: int = Field(256, ge=1, validation_alias=_env("MAX_QUEUE", "MAX_QUEUE_SIZE"))
    """Queued jobs accepted before new ones get 429 + Retry-After."""
    task_timeout_s: float = Field(3600.0, gt=0, validation_alias=_env("TASK_TIMEOUT_S", "TASK_TIMEOUT"))
    """A running job that takes longer fails with error type `timeout`."""
    retention_s: float = Field(24 * 3600.0, gt=0, validation_alias=_env("RETENTION_S"))
    """Finished jobs' files are deleted this long after they finish; their rows stay as `expired`."""
    max_upload_mb: float = Field(100.0, gt=0, validation_alias=_env("MAX_UPLOAD_MB"))
    """Largest media input (upload, data URL or fetched URL), per file."""
    max_request_mb: float = Field(300.0, gt=0, validation_alias=_env("MAX_REQUEST_MB"))
    """Largest request body."""
    allow_private_urls: bool = Field(False, validation_alias=_env("ALLOW_PRIVATE_URLS"))
    """Let http(s) media inputs point at loopback/private addresses (tests, intranets)."""
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("WEBHOOK_SECRET"))
    """HMAC-SHA256 key signing webhook deliveries (`X-Wanserve-Signature`); unset: webhooks go out unsigned."""
    webhook_max_attempts: int = Field(5, ge=1, le=20, validation_alias=_env("WEBHOOK_MAX_ATTEMPTS"))
    """Attempts per webhook delivery, with exponential backoff between them."""
    webhook_backoff_s: float = Field(1.0, ge=0, le=60, validation_alias=_env("WEBHOOK_BACKOFF_S"))
    """Wait before the second attempt of a webhook delivery; doubled after every further failure (at most 60 s)."""

    # Compatibility routes of the replaced services
    parallel_fields: Literal["refuse", "hint"] = Field("refuse", validation_alias=_env("PARALLEL_FIELDS"))
    """The Wan2.1 services' multi-GPU fields (`ulysses_size`, `vae_parallel`, `use_attentioncache`, ...) this server
    cannot honour: `refuse` (422 naming the field) or `hint` (run with what it has; the job and its status show the
    plan used and each field not honoured)."""
    legacy_input_dir: Path | None = Field(None, validation_alias=_env("LEGACY_INPUT_DIR"))
    """The only directory the multi-device service's `image_path` may read from; unset: `image_path` is refused."""
    animate_jobs_root: Path | None = Field(None, validation_alias=_env("ANIMATE_JOBS_ROOT"))
    """Where `POST /animate/jobs` looks for `src_root_path` directories; default `<data_dir>/animate_jobs`."""
    animate_relighting_lora: Path | None = Field(None, validation_alias=_env("ANIMATE_RELIGHTING_LORA"))
    """Wan2.2-Animate's `relighting_lora.ckpt`, applied in replace mode; unset: the model directory's, if any."""

    max_attempts: int = Field(3, ge=1, validation_alias=_env("MAX_ATTEMPTS"))
    """Runs of one job before a lost lease fails it with `worker_lost`."""
    lease_s: float = Field(30.0, gt=0, validation_alias=_env("LEASE_S"))
    """A claimed job's lease; renewed every `lease_s / 3` while it runs."""
    sweep_interval_s: float = Field(5.0, gt=0, validation_alias=_env("SWEEP_INTERVAL_S"))
    """How often expired leases and retention are checked."""
    poll_interval_s: float = Field(2.0, gt=0, validation_alias=_env("POLL_INTERVAL_S"))
    """Idle workers look for jobs made by other processes this often (in-process jobs wake them at once)."""

    # Test-only hook (refused in production): while the file `<hold_dir>/hold` exists, a job that completes denoising
    # step `hold_step` blocks until the file `<hold_dir>/<job id>` exists. Lets tests kill or cancel a job at a known
    # step without sleeping.
    hold_dir: Path | None = Field(None, validation_alias=_env("TEST_HOLD_DIR"))
    hold_step: int = Field(1, ge=1, validation_alias=_env("TEST_HOLD_STEP"))

    @field_validator("max_memory")
    @classmethod
    def _check_max_memory(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        text = value.strip()
        if text.startswith("{"):
            try:
                mapping = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"`WANSERVE_MAX_MEMORY` is not a JSON map of sizes: {exc}") from None
            if not isinstance(mapping, dict) or not mapping:
                raise ValueError(f"`WANSERVE_MAX_MEMORY` must map device indexes to sizes, got {text!r}")
            for size in mapping.values():
                _gib(str(size))
        else:
            _gib(text)
        return text

    @field_validator("warmup")
    @classmethod
    def _check_warmup(cls, value: list[str]) -> list[str]:
        from wanserve.engine.warmup import parse_warmup

        parse_warmup(value)  # the entries' form; whether each served model can run them is checked at start-up
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("", "file", "s3") or (scheme == "s3" and not value[5:].split("/", 1)[0]):
            raise ValueError(f"`WANSERVE_STORAGE_URL` must be s3://bucket/prefix or a local directory, got {value!r}")
        return value

    @field_validator("models", "cors_origins", "lora_allowed_dirs", "warmup", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_key", "metrics_token")
    @classmethod
    def _refuse_empty_secret(cls, value: SecretStr | None, info) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            name = f"WANSERVE_{info.field_name.upper()}"
            raise ValueError(f"`{name}` is set but empty; unset it, or set a key (`wanserve keys create` makes one)")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.use_dfloat11 and self.dfloat11_dir is None:
            raise ValueError(
                "`WAN_USE_DFLOAT11` is true but `WAN_DFLOAT11_LOCAL_DIR` (WANSERVE_DFLOAT11_DIR) is not set"
            )
        if self.max_upload_mb > self.max_request_mb:
            raise ValueError(
                f"`max_upload_mb` ({self.max_upload_mb:g}) must not exceed `max_request_mb` ({self.max_request_mb:g})"
            )
        if self.environment == "production":
            if self.allow_open:
                raise ValueError(
                    "`WANSERVE_ALLOW_OPEN` (serving without API keys) is not allowed when `WANSERVE_ENV` is production"
                )
            if "*" in self.cors_origins:
                raise ValueError("`WANSERVE_CORS_ORIGINS` must not be `*` when `WANSERVE_ENV` is production")
            if self.hold_dir is not None:
                raise ValueError(
                    "`WANSERVE_TEST_HOLD_DIR` is a test hook; not allowed when `WANSERVE_ENV` is production"
                )
        return self

    def parallel_config(self):
        """The `ParallelConfig` of this deployment's worker groups; `ValueError` naming the settings that conflict."""
        from wanserve.engine.parallel import ParallelConfig

        world, ring, cfg = self.world_size, self.ring_size, self.cfg_size
        if self.sequence_parallel is False:
            if self.ulysses_size not in (None, 1) or ring > 1:
                raise ValueError(
                    f"`WAN_ENABLE_SEQUENCE_PARALLEL` false conflicts with `ULYSSES_SIZE`={self.ulysses_size} / "
                    f"`RING_SIZE`={ring}"
                )
            ulysses = 1
        elif self.ulysses_size is not None:
            ulysses = self.ulysses_size
        else:
            ulysses = world // (ring * cfg) if world % (ring * cfg) == 0 else 0
        if ulysses * ring * cfg != world:
            raise ValueError(
                f"`ULYSSES_SIZE`={self.ulysses_size if self.ulysses_size is not None else 'unset'} x `RING_SIZE`={ring}"
                f" x `CFG_SIZE`={cfg} must equal the group size `WANSERVE_WORLD_SIZE`={world}"
            )
        fsdp = self.enable_fsdp
        for name, value in (("DIT_FSDP", self.dit_fsdp or fsdp), ("T5_FSDP", self.t5_fsdp or fsdp),
                            ("VAE_PARALLEL", self.vae_parallel)):  # fmt: skip
            if value and world < 2:
                raise ValueError(f"`{name}` true needs a group of 2 or more ranks; `WANSERVE_WORLD_SIZE` is {world}")
        return ParallelConfig(
            world_size=world,
            ulysses_degree=ulysses,
            ring_degree=ring,
            cfg_degree=cfg,
            dit_fsdp=self.dit_fsdp or fsdp,
            t5_fsdp=self.t5_fsdp or fsdp,
            vae_parallel=self.vae_parallel,
            collective_timeout_s=self.collective_timeout_s,
        )

    def weights_config(self, model_paths: tuple[tuple[str, str], ...] = ()):
        """The one rule for where weights are, shared by `serve`, `worker`, `generate`, `models`, `doctor` and
        `download`; `model_paths` adds explicit locations (the seed services' single `checkpoint_dir` is the first
        configured model's)."""
        from wanserve.engine.config import WeightsConfig

        paths = dict(model_paths)
        if self.flashvsr_model_path is not None:
            for name in ("flashvsr-v1.1-tiny", "flashvsr-v1.1-tiny-long", "flashvsr-v1.1-full"):
                paths.setdefault(name, str(self.flashvsr_model_path))
        if self.checkpoint_dir is not None and self.models:
            paths.setdefault(self.models[0], str(self.checkpoint_dir))
        return WeightsConfig.of(self.models_dir, paths, self.checkpoint_dir)

    def hub_config(self):
        """Where `wanserve download` fetches from, and whether it may."""
        from wanserve.engine.download import HubConfig

        return HubConfig(self.hf_endpoint or None, self.hf_hub_offline, self.modelscope_domain or None)

    def engine_config(self, device: str | None, model_paths: tuple[tuple[str, str], ...] = ()):
        """The `EngineConfig` these settings describe for one device (weights found by `weights_config`)."""
        from wanserve.engine.config import EngineConfig, MemoryConfig, UpscaleConfig

        return EngineConfig(
            device=device,
            weights=self.weights_config(model_paths),
            memory=MemoryConfig(
                text_encoder_on_cpu=self.t5_cpu,
                offload=self.offload,
                vae_tiling=self.vae_tiling,
                vae_dtype=self.vae_dtype,
                dfloat11_dir=str(self.dfloat11_dir) if self.use_dfloat11 else None,
                dfloat11_cpu_offload=self.dfloat11_cpu_offload and self.use_dfloat11,
                max_memory_gib=self.max_memory_gib(device),
            ),
            lora=self.lora_config(),
            relighting_lora=str(self.animate_relighting_lora) if self.animate_relighting_lora else None,
            upscale=UpscaleConfig(
                streaming_lq_max_bytes=self.flashvsr_streaming_lq_max_bytes, cache_offload=self.flashvsr_cache_offload
            ),
            parallel=self.parallel_config() if self.world_size > 1 else None,
        )

    def max_memory_gib(self, device: str | None) -> float | None:
        """`max_memory` for `device` (`cuda:1` reads the map's `"1"`), in GiB; None when unset or not mapped."""
        if not self.max_memory:
            return None
        text = self.max_memory.strip()
        if not text.startswith("{"):
            return _gib(text)
        index = (device or "").rpartition(":")[2] if device and ":" in device else "0"
        mapping = json.loads(text)
        value = mapping.get(index, mapping.get(f"cuda:{index}"))
        return None if value is None else _gib(str(value))

    def lora_config(self, extra_dirs: tuple[str, ...] = ()):
        """Where per-job LoRAs may be read from (the job service checks submissions against it, the engine loads)."""
        from wanserve.engine.config import LoraConfig

        allowed = tuple(str(d) for d in self.lora_allowed_dirs) + tuple(extra_dirs)
        return LoraConfig(
            lora_dir=str(self.lora_dir) if self.lora_dir else None,
            allowed_dirs=allowed,
            max_loaded=self.lora_max_loaded,
            hotswap_rank=self.lora_hotswap_rank,
        )

    @property
    def weights_configured(self) -> bool:
        """Whether any real weights or models were configured (else the tiny models serve)."""
        return bool(self.models) or self.models_dir is not None or self.checkpoint_dir is not None

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"`WANSERVE_BROKER_URL` must be a redis:// URL, got {value!r}")
        return value

    @property
    def dev_mode(self) -> bool:
        return self.environment == "development"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'wanserve.db').resolve()}"

    @property
    def resolved_output_dir(self) -> Path:
        return (self.output_dir or self.data_dir / "outputs").resolve()

    @property
    def input_dir(self) -> Path:
        return (self.data_dir / "inputs").resolve()

    @property
    def resolved_animate_jobs_root(self) -> Path:
        return (self.animate_jobs_root or self.data_dir / "animate_jobs").resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)
