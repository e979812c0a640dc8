"""`wanserve serve`: the API and in-process workers in one process."""

from __future__ import annotations

import logging
import socket

import typer

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Adds `wanserve serve` to the app."""

    @app.command()
    def serve(
        host: str = typer.Option(None, help="Address to listen on [env WANSERVE_HOST; default 127.0.0.1]."),
        port: int = typer.Option(None, help="Port; 0 picks a free one [env WANSERVE_PORT; default 8000]."),
        model: list[str] = typer.Option(
            None, "--model", "-m", help="Model to load and warm at start-up (repeatable) [env WANSERVE_MODELS]."
        ),
        concurrency: int = typer.Option(
            None, help="Jobs run at once [env WANSERVE_CONCURRENCY / MAX_CONCURRENT_TASKS; default: one per device]."
        ),
        workers: bool = typer.Option(
            True,
            "--workers/--no-workers",
            help="Run workers in this process, or serve the API alone (jobs run in "
            "`wanserve worker` processes sharing the database and storage).",
        ),
    ) -> None:
        """Serve the job API with workers on the devices found. Without weights, serves the tiny random models."""
        import uvicorn

        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say nothing a user needs
        from wanserve.api.app import create_app
        from wanserve.config import Settings

        overrides = {"host": host, "port": port, "models": model or None, "concurrency": concurrency}
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        app_ = create_app(settings, start_workers=workers)
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        bound_host, bound_port = sock.getsockname()[:2]
        logger.info("wanserve listening on http://%s:%d (API docs at /docs)", bound_host, bound_port)
        config = uvicorn.Config(app_, log_config=None, timeout_graceful_shutdown=30)
        uvicorn.Server(config).run(sockets=[sock])
