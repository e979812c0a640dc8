"""`wanserve doctor`: is this machine ready to serve? The checks live in `engine/diagnostics.py`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _print_report(report) -> None:
    from rich.console import Console

    from wanserve.cli.tables import Column, print_table

    console = Console()
    checks = [[c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.message] for c in report.checks]
    print_table(
        console, "wanserve doctor", (Column("check"), Column("status"), Column("message", foldable=True)), checks
    )
    models = []
    for model in report.models:
        ready = "[green]yes[/]" if model.ready else "[dim]no[/]"
        if model.random_weights:
            ready = "[yellow]random[/]"
        models.append([model.name, ready, f"{model.memory_gb:g}", model.message])
    columns = (Column("model"), Column("ready"), Column("GiB", "right"), Column("weights", foldable=True))
    print_table(console, "models", columns, models)
    verdict = "[bold red]some checks failed[/]" if not report.ok else "[green]no check failed[/]"
    console.print(verdict)


def _service_doctor(url, health, memory, pipeline, model, api_key, as_json) -> None:
    from rich.console import Console

    from wanserve.cli.doctor_service import checks_to_dict, run_service_checks
    from wanserve.cli.tables import Column, print_table

    checks = run_service_checks(url, health, memory, pipeline, model=model, api_key=api_key)
    report = checks_to_dict(url, checks)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        rows = [[c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.message] for c in checks]
        columns = (Column("check"), Column("status"), Column("message", foldable=True))
        print_table(Console(), f"wanserve doctor: {url}", columns, rows)
    if not report["ok"]:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Adds `wanserve doctor` to the app."""

    @app.command()
    def doctor(
        quick: bool = typer.Option(False, "--quick", help="Skip the libx264 test encode."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="Data directory: outputs, database (env WANSERVE_DATA_DIR).", show_default="./data"
        ),
        models_dir: Path | None = typer.Option(
            None,
            "--models-dir",
            help="Directory of model directories (env WANSERVE_MODELS_DIR).",
            show_default="~/.cache/wanserve/models",
        ),
        device: str | None = typer.Option(
            None, "--device", envvar="WANSERVE_DEVICE", help="Check this device (cuda, cuda:1, npu:0, mps, cpu)."
        ),
        health: bool = typer.Option(False, "--health", help="Check a running service: ready, what it serves."),
        memory: bool = typer.Option(False, "--memory", help="Check a running service's memory."),
        pipeline: bool = typer.Option(
            False, "--pipeline", help="Run a tiny generation through a running service (2 steps, 5 frames)."
        ),
        url: str = typer.Option(
            "http://127.0.0.1:8000",
            "--url",
            envvar="WANSERVE_URL",
            help="The service --health/--memory/--pipeline check.",
        ),
        model: str | None = typer.Option(
            None, "--model", "-m", help="Model of the --pipeline job.", show_default="the server's first"
        ),
        api_key: str | None = typer.Option(None, envvar="WANSERVE_API_KEY", help="Bearer key, if the server has one."),
    ) -> None:
        """Check this machine (Python, PyTorch, devices, PyAV/FFmpeg, disk, model weights), or with --health,
        --memory or --pipeline a running service.

        Exits non-zero only when a check fails; warnings (CPU only, little disk) do not.
        """
        if health or memory or pipeline:
            _service_doctor(url, health, memory, pipeline, model, api_key, as_json)
            return
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
