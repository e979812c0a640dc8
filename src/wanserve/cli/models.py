"""`wanserve models`: every catalog model, its official defaults and whether its weights are on disk."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table


def model_rows() -> list[dict]:
    """One JSON-ready dict per catalog model: defaults, tasks, memory estimate and local weights status."""
    from wanserve.config import Settings
    from wanserve.engine.loading import weights_status
    from wanserve.engine.official import default_rows
    from wanserve.engine.registry import CATALOG

    weights = Settings().weights_config()
    rows = []
    for spec in CATALOG.values():
        status = weights_status(spec, weights)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "tasks": [t.value for t in spec.tasks],
                "pipeline": spec.pipeline,
                "defaults": {
                    "num_inference_steps": spec.num_inference_steps,
                    "guidance_scale": spec.guidance_scale,
                    "guidance_scale_2": spec.guidance_scale_2,
                    "boundary_ratio": spec.boundary_ratio,
                    "flow_shift": spec.flow_shift,
                    "solver": spec.solver,
                    "fps": spec.fps,
                    "num_frames": spec.num_frames,
                    "size": _size(spec.default_size),
                },
                "sizes": [_size(s) for s in spec.sizes],
                "sources": {key: {"default": value, "source": source} for key, value, source in default_rows(spec)},
                "memory_gb": spec.memory_gb,
                "params_b": spec.params_b,
                "experts": spec.experts,
                "random_weights": spec.random_weights,
                "real_counterpart": spec.real_counterpart,
                "hub": asdict(spec.hub),
                "weights": {k: v for k, v in asdict(status).items() if k != "name"},
            }
        )
    return rows


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _weights_text(row: dict) -> str:
    weights = row["weights"]
    if row["random_weights"] and weights["path"] is None:
        return "random weights"
    if weights["complete"]:
        return f"complete ({weights['layout']}) {weights['path']}"
    if weights["present"]:
        return f"incomplete ({weights['layout']}): {len(weights['missing'])} missing in {weights['path']}"
    return "not downloaded"


def _guidance_text(defaults: dict) -> str:
    if defaults["guidance_scale_2"] is None:
        return f"{defaults['guidance_scale']:g}"
    return f"{defaults['guidance_scale']:g}/{defaults['guidance_scale_2']:g} @{defaults['boundary_ratio']:g}"


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    sources: bool = typer.Option(
        False, "--sources", help="Show each default and where it comes from (official code file and line)."
    ),
) -> None:
    """List the models wanserve serves, their defaults and whether their weights are present."""
    rows = model_rows()
    if as_json:
        typer.echo(json.dumps({"models": rows}, indent=2))
        return
    if sources:
        _print_sources(rows)
        return
    table = Table(title="wanserve models")
    for column in ("model", "tasks", "steps", "guidance", "shift", "fps", "frames", "size", "memory", "weights"):
        table.add_column(column, overflow="fold")
    for row in rows:
        d = row["defaults"]
        table.add_row(
            row["name"],
            ",".join(row["tasks"]),
            str(d["num_inference_steps"]),
            _guidance_text(d),
            f"{d['flow_shift']:g}",
            str(d["fps"]),
            str(d["num_frames"]),
            d["size"] + (f" +{len(row['sizes']) - 1}" if len(row["sizes"]) > 1 else ""),
            f"{row['memory_gb']:g} GiB",
            _weights_text(row),
        )
    Console().print(table)


def _print_sources(rows: list[dict]) -> None:
    table = Table(title="wanserve models: defaults and their sources")
    for column in ("model", "parameter", "default", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        for key, entry in row["sources"].items():
            table.add_row(row["name"], key, entry["default"], entry["source"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Adds `wanserve models` to the app."""
    app.command(name="models")(models)
