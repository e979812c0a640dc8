"""`wanserve serve`: the API and in-process workers in one process."""

from __future__ import annotations

import logging
import socket

import typer

logger = logging.getLogger(__name__)


def settings_error(exc: Exception) -> str:
    """One line per problem of a settings validation error, naming the variable and the bad value."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        shown = f", got {error['input']!r}" if "input" in error and not isinstance(error["input"], dict) else ""
        lines.append(f"`{name}`: {error.get('msg', 'invalid value')}{shown}")
    return "; ".join(lines)


def register(app: typer.Typer) -> None:
    """Adds `wanserve serve` to the app."""

    @app.command()
    def serve(
        host: str = typer.Option(
            None, help="Address to listen on (env WANSERVE_HOST or SERVER_HOST).", show_default="127.0.0.1"
        ),
        port: int = typer.Option(
            None,
            help="Port; 0 picks a free one (env WANSERVE_PORT or SERVER_PORT; the replaced services used 8088).",
            show_default="8000",
        ),
        model: list[str] = typer.Option(
            None,
            "--model",
            "-m",
            help="Model to load and warm at start-up, repeatable (env WANSERVE_MODELS, comma-separated).",
            show_default="the tiny models when no weights are configured",
        ),
        concurrency: int = typer.Option(
            None,
            help="Jobs run at once (env WANSERVE_CONCURRENCY or MAX_CONCURRENT_TASKS).",
            show_default="one per device",
        ),
        world_size: int = typer.Option(
            None,
            "--world-size",
            help="Ranks one job runs on (env WANSERVE_WORLD_SIZE); with --device cpu a gloo group on the CPU.",
            show_default="1, or torchrun's WORLD_SIZE",
        ),
        gpus: int = typer.Option(None, "--gpus", help="Run each job on this many GPUs (the first N): a rank group."),
        device: str = typer.Option(None, "--device", help="cpu: run the workers (or the group) on the CPU."),
        workers: bool = typer.Option(
            True,
            "--workers/--no-workers",
            help="Run workers in this process, or serve the API alone (jobs run in "
            "`wanserve worker` processes sharing the database and storage).",
        ),
        allow_open: bool = typer.Option(
            None,
            "--allow-open",
            help="Serve without API keys on a non-loopback address (env WANSERVE_ALLOW_OPEN); without it such a "
            "server refuses to start until `wanserve keys create` made a key.",
            show_default=False,
        ),
    ) -> None:
        """Serve the job API with workers on the devices found. Without weights, serves the tiny random models.

        Other settings: WANSERVE_* variables or .env (docs/api.md), checked before any model is loaded.
        """
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say nothing a user needs
        from pydantic import ValidationError

        from wanserve.bootstrap import served_models
        from wanserve.config import Settings

        # 1. Validate the settings and the model names before building anything (no model is loaded yet).
        overrides = {
            "host": host,
            "port": port,
            "models": model or None,
            "concurrency": concurrency,
            "allow_open": allow_open,
        }
        try:
            settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
            served_models(settings)
        except (ValidationError, ValueError) as exc:
            typer.echo(f"error: {settings_error(exc)}", err=True)
            raise typer.Exit(code=2) from None

        # 2. Under torchrun, ranks 1..N-1 follow rank 0, which serves the API.
        from wanserve.bootstrap import build_engine
        from wanserve.worker.group import run_torchrun_follower, torchrun_spec

        launched = torchrun_spec(settings, build_engine)
        if launched is not None:
            spec, rank = launched
            settings = spec.settings
            if rank != 0:
                logger.info("rank %d of %d: following rank 0", rank, spec.world_size)
                run_torchrun_follower(spec, rank)
                return

        # 3. Build the app (workers load and warm their models once it starts) and listen.
        import uvicorn

        from wanserve.api.app import create_app

        try:
            app_ = create_app(settings, start_workers=workers)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            typer.echo(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", err=True)
            raise typer.Exit(code=2) from None
        bound_host, bound_port = sock.getsockname()[:2]
        logger.info("wanserve listening on http://%s:%d (API docs at /docs)", bound_host, bound_port)
        config = uvicorn.Config(app_, log_config=None, timeout_graceful_shutdown=30, access_log=settings.access_log)
        uvicorn.Server(config).run(sockets=[sock])
