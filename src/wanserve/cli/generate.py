"""`wanserve generate`."""

import typer


def register(app: typer.Typer) -> None:
    """Adds `wanserve generate` to the app (filled in by the issue that builds it)."""
