"""`wanserve worker`: workers without the API, on any host that reaches the job database, the broker (when one is
configured) and the storage. One worker per GPU by default."""

from __future__ import annotations

import logging

import typer

logger = logging.getLogger(__name__)


def parse_gpus(text: str | None) -> list[int] | None:
    """`0,1,2,3` as [0, 1, 2, 3]; `ValueError` naming the bad value."""
    if text is None:
        return None
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items or not all(item.isdigit() for item in items):
        raise ValueError(f"`--gpus` must be GPU numbers like 0,1,2,3, got {text!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"`--gpus` names a GPU twice: {text!r}")
    return [int(item) for item in items]


def register(app: typer.Typer) -> None:
    """Adds `wanserve worker` to the app."""

    @app.command()
    def worker(
        model: list[str] = typer.Option(
            None,
            "--model",
            "-m",
            help="Model to serve, repeatable (env WANSERVE_MODELS, comma-separated).",
            show_default="the tiny models when no weights are configured",
        ),
        gpus: str | None = typer.Option(None, "--gpus", help="GPUs to use, e.g. 0,1,2,3.", show_default="every GPU"),
        gpus_per_job: int = typer.Option(1, "--gpus-per-job", help="GPUs one job runs on (one worker per set)."),
        device: str | None = typer.Option(
            None, "--device", help="One device instead of GPUs: cpu, cuda:1, npu:0, mps (tests, small machines)."
        ),
        world_size: int = typer.Option(
            None, "--world-size", help="With --device cpu: a rank group of this many CPU processes (gloo)."
        ),
    ) -> None:
        """Run workers that take jobs from the shared database (start the API with `wanserve serve --no-workers`)."""
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from pydantic import ValidationError

        from wanserve.bootstrap import build_worker_process, worker_devices
        from wanserve.cli.serve import settings_error
        from wanserve.config import Settings

        try:
            if gpus is not None and device is not None:
                raise ValueError(f"`--device` {device!r} and `--gpus` {gpus!r}: give one of them")
            if world_size is not None and device != "cpu":
                raise ValueError(f"`--world-size` {world_size} is for a CPU group (`--device cpu`); GPUs take "
                                 "`--gpus ... --gpus-per-job N`")  # fmt: skip
            settings = Settings(**({"models": model} if model else {}))
            devices = worker_devices(parse_gpus(gpus), device)
            if world_size is not None:
                devices, gpus_per_job = ["cpu"] * world_size, world_size
            process = build_worker_process(settings, devices, gpus_per_job)
        except (ValidationError, ValueError) as exc:
            typer.echo(f"error: {settings_error(exc)}", err=True)
            raise typer.Exit(code=2) from None
        logger.info(
            "wanserve worker on %s serving %s", ", ".join(devices), ", ".join(process.pool.workers[0][0].models)
        )
        process.run()
