"""`wanserve download`: fetch a model's weights into its model directory, with a progress bar."""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from tqdm.std import tqdm

from wanserve.errors import WanserveError

console = Console(stderr=True)


class _RichTqdm(tqdm):
    """A tqdm that draws into one shared rich `Progress` (huggingface_hub opens several bars at once, and rich
    allows one live display)."""

    progress: Progress

    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        # tqdm draws once while initialising, so the task must exist first.
        self._task = self.progress.add_task(kwargs.get("desc") or "", total=kwargs.get("total") or None)
        kwargs.update(file=io.StringIO(), disable=False)
        super().__init__(*args, **kwargs)

    def display(self, *args, **kwargs) -> None:
        self.progress.update(self._task, completed=self.n, total=self.total or None, description=self.desc or "")

    def close(self) -> None:
        if not self.disable:
            self.display()
        super().close()


def rich_tqdm_class(progress: Progress) -> type[tqdm]:
    """A tqdm class whose bars are tasks of `progress`."""
    return type("RichTqdm", (_RichTqdm,), {"progress": progress})


def download(
    model: str = typer.Argument(..., help="Model name (see `wanserve models`)."),
    source: str = typer.Option("hf", "--source", help="hf (Hugging Face Hub) or modelscope."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit of the repository."),
    layout: str | None = typer.Option(
        None, "--layout", help="diffusers or original (default: diffusers where published)."
    ),
    dest: Path | None = typer.Option(
        None,
        "--dir",
        help="Model directory (default: <WANSERVE_MODELS_DIR>/<model>, as `serve` and `worker` look it up; "
        "WANSERVE_MODELS_DIR defaults to ~/.cache/wanserve/models).",
    ),
    connect_timeout_s: float = typer.Option(3.0, "--connect-timeout", help="Seconds to wait for the hub to answer."),
) -> None:
    """Download a model's weights (resumes an interrupted download)."""
    from wanserve.config import Settings
    from wanserve.engine.download import download_model, plan_download
    from wanserve.engine.registry import get_spec

    try:
        spec = get_spec(model)
        if spec.tiny:
            console.print(f"{spec.name} is built in (random weights): it needs no download.", soft_wrap=True)
            return
        settings = Settings()
        plan = plan_download(spec, source=source, revision=revision, layout=layout, dest=dest,
                             weights=settings.weights_config(), hub=settings.hub_config())  # fmt: skip
        console.print(f"{spec.name}: {plan.layout} layout from {plan.repo_url} into {plan.dest}", soft_wrap=True)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=False) as progress:
            path = download_model(plan, tqdm_class=rich_tqdm_class(progress), connect_timeout_s=connect_timeout_s)
    except WanserveError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    console.print(f"{spec.name} is complete in {path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Adds `wanserve download` to the app."""
    app.command(name="download")(download)
