"""`wanserve download`."""

import typer


def register(app: typer.Typer) -> None:
    """Adds `wanserve download` to the app (filled in by the issue that builds it)."""
