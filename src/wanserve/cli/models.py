"""`wanserve models`: every catalog model, its official defaults and whether its weights are on disk."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console

from wanserve.cli.tables import Column, print_table


def model_rows() -> list[dict]:
    """One JSON-ready dict per catalog model: defaults, tasks, memory estimates and local weights status."""
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
                "memory": _memory(spec),
                "experts": spec.experts,
                "random_weights": spec.random_weights,
                "real_counterpart": spec.real_counterpart,
                "hub": asdict(spec.hub),
                "weights": {k: v for k, v in asdict(status).items() if k != "name"},
            }
        )
    return rows


def _memory(spec) -> dict | None:
    """Parameter counts, weights and peak estimates at the default size, without and with offload."""
    from wanserve.engine.architectures import ARCHITECTURES, PARAM_COUNTS
    from wanserve.engine.config import MemoryConfig
    from wanserve.engine.memory_estimate import estimate_memory

    arch = ARCHITECTURES.get(spec.name)
    if arch is None:
        return None
    estimates = {mode: estimate_memory(spec, MemoryConfig(offload=mode)) for mode in ("none", "model", "group")}
    return {
        "size": _size(spec.default_size),
        "num_frames": spec.num_frames,
        "params": {name: PARAM_COUNTS[key].total for name, key in arch.components().items()},
        "weights_gib": estimates["none"].weights_gib,
        "peak_gib": estimates["none"].peak_gib,
        "peak_model_offload_gib": estimates["model"].peak_gib,
        "peak_group_offload_gib": estimates["group"].peak_gib,
        "denoise_activations_gib": estimates["none"].denoise_activations_gib,
        "decode_activations_gib": estimates["none"].decode_activations_gib,
    }


def _memory_text(row: dict) -> str:
    memory = row["memory"]
    if memory is None:
        return "tiny" if row["random_weights"] else "no estimate"
    return f"{memory['weights_gib']:.1f} / {memory['peak_gib']:.1f} / {memory['peak_model_offload_gib']:.1f}"


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _weights_text(row: dict) -> str:
    weights = row["weights"]
    if row["random_weights"] and weights["path"] is None:
        return "random weights"
    if weights["complete"]:
        return f"complete ({weights['layout']})"
    if weights["present"]:
        return f"incomplete ({weights['layout']}): {len(weights['missing'])} missing"
    return "not downloaded"


def _guidance_text(defaults: dict) -> str:
    if defaults["guidance_scale_2"] is None:
        return f"{defaults['guidance_scale']:g}"
    return f"{defaults['guidance_scale']:g}/{defaults['guidance_scale_2']:g} @{defaults['boundary_ratio']:g}"


COLUMNS = (
    Column("model"),
    Column("tasks"),
    Column("steps", "right"),
    Column("guidance", "right"),
    Column("shift", "right"),
    Column("fps", "right"),
    Column("frames", "right"),
    Column("size"),
    Column("GiB weights/peak/offload", "right"),
    Column("weights"),
    Column("path", foldable=True),
)


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The table's cells (one line each) for `model_rows()`."""
    cells = []
    for row in rows:
        d = row["defaults"]
        cells.append(
            [
                row["name"],
                ",".join(row["tasks"]),
                str(d["num_inference_steps"]),
                _guidance_text(d),
                f"{d['flow_shift']:g}",
                str(d["fps"]),
                str(d["num_frames"]),
                d["size"] + (f" +{len(row['sizes']) - 1}" if len(row["sizes"]) > 1 else ""),
                _memory_text(row),
                _weights_text(row),
                row["weights"]["path"] or "-",
            ]
        )
    return cells


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
    console = Console()
    print_table(console, "wanserve models", COLUMNS, table_rows(rows))
    console.print(  # wrapped to the terminal like the tables
        "GiB: weights in their default dtypes / estimated peak accelerator memory of one default-size "
        "generation without offload / with model offload (engine/memory_estimate.py; --json has more)."
    )


SOURCE_COLUMNS = (
    Column("model"),
    Column("parameter"),
    Column("default", foldable=True),
    Column("source", foldable=True),
)


def _print_sources(rows: list[dict]) -> None:
    cells = [
        [row["name"], key, entry["default"], entry["source"]] for row in rows for key, entry in row["sources"].items()
    ]
    print_table(Console(), "wanserve models: defaults and their sources", SOURCE_COLUMNS, cells)


def register(app: typer.Typer) -> None:
    """Adds `wanserve models` to the app."""
    app.command(name="models")(models)
