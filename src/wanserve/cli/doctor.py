"""`wanserve doctor`: is this machine ready to serve? The checks live in `engine/diagnostics.py`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    checks = Table(title="wanserve doctor", show_lines=False)
    checks.add_column("check")
    checks.add_column("status")
    checks.add_column("message", overflow="fold")
    for check in report.checks:
        checks.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", check.message)
    console.print(checks)

    models = Table(title="models")
    models.add_column("model", no_wrap=True)
    models.add_column("ready", no_wrap=True)
    models.add_column("memory (GiB)", justify="right")
    models.add_column("weights", overflow="fold")
    for model in report.models:
        ready = "[green]yes[/]" if model.ready else "[dim]no[/]"
        if model.random_weights:
            ready = "[yellow]yes (random)[/]"
        models.add_row(model.name, ready, f"{model.memory_gb:g}", model.message)
    console.print(models)
    verdict = "[bold red]some checks failed[/]" if not report.ok else "[green]no check failed[/]"
    console.print(verdict)


def register(app: typer.Typer) -> None:
    """Adds `wanserve doctor` to the app."""

    @app.command()
    def doctor(
        quick: bool = typer.Option(False, "--quick", help="Skip the libx264 test encode."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="Data directory (outputs, database) [env WANSERVE_DATA_DIR; default ./data]."
        ),
        models_dir: Path | None = typer.Option(
            None,
            "--models-dir",
            help="Directory of model directories [env WANSERVE_MODELS_DIR; default ~/.cache/wanserve/models].",
        ),
        device: str | None = typer.Option(
            None, "--device", envvar="WANSERVE_DEVICE", help="Check this device (cuda, cuda:1, npu:0, mps, cpu)."
        ),
    ) -> None:
        """Check Python, PyTorch, devices, PyAV/FFmpeg, disk space and which models' weights are ready.

        Exits non-zero only when a check fails; warnings (CPU only, little disk) do not.
        """
        from wanserve.config import Settings
        from wanserve.engine.diagnostics import run_diagnostics

        overrides = {"data_dir": data_dir, "models_dir": models_dir}
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        report = run_diagnostics(
            data_dir=settings.data_dir, weights=settings.weights_config(), quick=quick, device=device
        )
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            _print_report(report)
        if not report.ok:
            raise typer.Exit(code=1)
