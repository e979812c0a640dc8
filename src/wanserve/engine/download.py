"""Fetching a model's weights from the Hugging Face Hub or ModelScope into a model directory.

Before any download the hub is probed with a short connect timeout, so an offline machine fails at once with
the directory to fill and the files it needs, instead of hanging in retries.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from wanserve.engine.config import WeightsConfig
from wanserve.engine.layouts import DIFFUSERS, LAYOUTS, ORIGINAL, expected_files, original_supported
from wanserve.engine.loading import weights_status
from wanserve.engine.registry import ModelSpec
from wanserve.errors import DownloadError, InvalidRequestError

logger = logging.getLogger(__name__)

SOURCES = ("hf", "modelscope")
DEFAULT_CONNECT_TIMEOUT_S = 3.0
_SITES = {"hf": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}


@dataclass(frozen=True)
class HubConfig:
    """Where the hubs are and whether downloads are allowed (from `Settings`: the hubs' own variables `HF_ENDPOINT`,
    `HF_HUB_OFFLINE` and `MODELSCOPE_DOMAIN`; the engine reads no environment)."""

    hf_endpoint: str | None = None
    hf_offline: bool = False
    modelscope_domain: str | None = None

    def endpoint(self, source: str) -> str:
        """The base URL of `source` (`hf` or `modelscope`)."""
        if source == "hf":
            return self.hf_endpoint or _SITES["hf"]
        return f"https://{self.modelscope_domain}" if self.modelscope_domain else _SITES["modelscope"]


@dataclass(frozen=True)
class DownloadPlan:
    """What `download_model` fetches: one repository of one layout into one directory."""

    spec: ModelSpec
    source: str
    layout: str
    repo_id: str
    revision: str | None
    dest: Path
    hub: HubConfig = HubConfig()

    @property
    def endpoint(self) -> str:
        """The hub's base URL."""
        return self.hub.endpoint(self.source)

    @property
    def repo_url(self) -> str:
        site = self.endpoint if self.source == "hf" else f"{self.endpoint}/models"
        return f"{site}/{self.repo_id}"

    def manual_instructions(self) -> str:
        """Where to put which files by hand."""
        files = "\n".join(f"  {f}" for f in expected_files(self.spec, self.layout))
        return (
            f"To install {self.spec.name} by hand, copy the {self.layout} layout from {self.repo_url} into "
            f"{self.dest}; it needs:\n{files}"
        )


def plan_download(
    spec: ModelSpec,
    source: str = "hf",
    revision: str | None = None,
    layout: str | None = None,
    dest: str | Path | None = None,
    weights: WeightsConfig | None = None,
    hub: HubConfig | None = None,
) -> DownloadPlan:
    """Checks the options and picks the repository; raises `InvalidRequestError` naming the bad option."""
    if spec.tiny:
        raise InvalidRequestError("model", f"`model` {spec.name!r} is built in (random weights) and needs no download")
    if source not in SOURCES:
        raise InvalidRequestError("source", f"`source` must be one of {', '.join(SOURCES)}, got {source!r}")
    if layout is not None and layout not in LAYOUTS:
        raise InvalidRequestError("layout", f"`layout` must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    ids = spec.hub
    repos = {
        ("hf", DIFFUSERS): ids.hf_diffusers,
        ("hf", ORIGINAL): ids.hf_original if original_supported(spec) else None,
        ("modelscope", DIFFUSERS): ids.modelscope_diffusers,
        ("modelscope", ORIGINAL): ids.modelscope_original if original_supported(spec) else None,
    }
    if layout is None:
        layout = DIFFUSERS if repos[(source, DIFFUSERS)] else ORIGINAL
    repo_id = repos[(source, layout)]
    if not repo_id:
        offered = [f"--source {s} --layout {lay}" for (s, lay), r in repos.items() if r]
        raise InvalidRequestError(
            "layout",
            f"{spec.name} has no {layout} layout on {source} that wanserve loads; available: {', '.join(offered)}",
        )
    path = Path(dest).expanduser() if dest else (weights or WeightsConfig()).download_dir(spec.name)
    return DownloadPlan(spec, source, layout, repo_id, revision, path, hub or HubConfig())


def check_reachable(plan: DownloadPlan, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Raises `DownloadError` at once when downloads are switched off or the hub does not answer a TCP connect
    within `connect_timeout_s` (DNS included)."""
    if plan.source == "hf" and plan.hub.hf_offline:
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = _probe(plan.endpoint, connect_timeout_s)
    if reason:
        raise DownloadError(
            f"cannot download {plan.spec.name} from {plan.endpoint}: {reason}.\n{plan.manual_instructions()}"
        )


def download_model(
    plan: DownloadPlan,
    tqdm_class=None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> Path:
    """Downloads `plan` into `plan.dest` (resuming what is there) and returns it once the layout is complete.

    `tqdm_class` draws the progress (Hugging Face source); the CLI passes a rich one.
    """
    check_reachable(plan, connect_timeout_s)
    plan.dest.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s (%s layout) from %s into %s", plan.spec.name, plan.layout, plan.repo_url, plan.dest)
    try:
        if plan.source == "hf":
            from huggingface_hub import snapshot_download

            snapshot_download(
                plan.repo_id, revision=plan.revision, local_dir=plan.dest, tqdm_class=tqdm_class, endpoint=plan.endpoint
            )
        else:
            _modelscope_download(plan)
    except DownloadError:
        raise
    except Exception as exc:  # the hub clients raise many types (HTTP, OS, their own)
        raise DownloadError(
            f"downloading {plan.repo_url} into {plan.dest} failed: {type(exc).__name__}: {exc}\n"
            f"Run the command again to resume.\n{plan.manual_instructions()}"
        ) from exc
    status = weights_status(plan.spec, WeightsConfig(), plan.dest)
    if not status.complete:
        raise DownloadError(
            f"{plan.dest} is still missing {', '.join(status.missing)} after downloading {plan.repo_url}"
        )
    return plan.dest


def _modelscope_download(plan: DownloadPlan) -> None:
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise DownloadError(
            "`--source modelscope` needs the modelscope package: pip install 'wanserve[modelscope]'"
        ) from exc
    snapshot_download(plan.repo_id, revision=plan.revision, local_dir=str(plan.dest))


def _probe(url: str, timeout_s: float) -> str | None:
    """None when `url`'s host accepts a TCP connection within `timeout_s`, else the reason."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return f"`endpoint` {url!r} has no host name"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}:{port} is unreachable ({exc})")

    # DNS lookups ignore socket timeouts; a daemon thread bounds the whole probe.
    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"{host}:{port} did not answer within {timeout_s:g} s"
    return result[0]
