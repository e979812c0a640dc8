"""`wanserve models`."""

import typer


def register(app: typer.Typer) -> None:
    """Adds `wanserve models` to the app (filled in by the issue that builds it)."""
