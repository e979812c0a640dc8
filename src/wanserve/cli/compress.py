"""`wanserve compress --format df11 SRC DST`: lossless DFloat11 compression of a model's transformer(s)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

FORMATS = ("df11",)


def compress(
    src: Path = typer.Argument(
        ...,
        help="A diffusers-layout model directory (its transformer/ and transformer_2/) "
        "or one transformer's directory (config.json + *.safetensors), in bfloat16.",
    ),
    dst: Path = typer.Argument(
        ...,
        help="Where the compressed transformer(s) go (<folder>/config.json and "
        "<folder>/diffusion_pytorch_model.df11.safetensors); serve with WAN_USE_DFLOAT11=true "
        "and WAN_DFLOAT11_LOCAL_DIR=DST.",
    ),
    format: str = typer.Option("df11", "--format", help="Compression format: df11 (lossless, ~11 bits a weight)."),
    device: str = typer.Option("cpu", "--device", help="Where to run the coding (cuda is much faster)."),
    as_json: bool = typer.Option(False, "--json", help="Print the sizes as JSON."),
) -> None:
    """Compress a model's transformer weights losslessly; outputs stay bit-exact."""
    from wanserve.engine.dfloat11_model import compress_directory

    if format not in FORMATS:
        raise typer.BadParameter(
            f"`--format` must be one of {', '.join(FORMATS)}, got {format!r}", param_hint="--format"
        )
    if not src.is_dir():
        raise typer.BadParameter(f"`SRC` {str(src)!r} is not a directory", param_hint="SRC")
    try:
        report = compress_directory(src, dst, device=device)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for folder, sizes in report.items():
        typer.echo(
            f"{folder}: {sizes['bf16_bytes'] / 2**30:.3f} GiB -> {sizes['df11_bytes'] / 2**30:.3f} GiB "
            f"({100 * sizes['ratio']:.1f}%)"
        )


def register(app: typer.Typer) -> None:
    """Adds `wanserve compress`."""
    app.command("compress")(compress)
