"""`wanserve serve`."""

import typer


def register(app: typer.Typer) -> None:
    """Adds `wanserve serve` to the app (filled in by the issue that builds it)."""
