"""`wanserve doctor`."""

import typer


def register(app: typer.Typer) -> None:
    """Adds `wanserve doctor` to the app (filled in by the issue that builds it)."""
