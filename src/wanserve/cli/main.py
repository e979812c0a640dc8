"""The `wanserve` command. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import logging

import typer

from wanserve import __version__
from wanserve.cli import bench, compress, doctor, download, generate, keys, models, serve, worker

app = typer.Typer(
    name="wanserve",
    help="Serve the Wan family of video models through a job API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wanserve {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (generate, models, download, doctor, serve, worker, bench, keys, compress):
    _module.register(app)
