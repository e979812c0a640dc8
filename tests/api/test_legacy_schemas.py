"""Legacy request parsing and the multi-GPU knob checks (no server)."""

from __future__ import annotations

import pytest

from wanserve.api.schemas.legacy import (
    ParallelCapabilities,
    ParallelOptions,
    Wan21SubmitRequest,
    attention_cache_params,
    parallel_plan,
    parse_body,
    parse_star_size,
    solver_name,
)
from wanserve.errors import InvalidRequestError

ONE_RANK = ParallelCapabilities(world_size=1)


def test_parse_body_unknown_field_named() -> None:
    with pytest.raises(InvalidRequestError, match="unknown field `num_frame`") as info:
        parse_body(Wan21SubmitRequest, {"prompt": "p", "image_url": "http://x/a.png", "num_frame": 81})
    assert info.value.field == "num_frame"


def test_parse_body_missing_field_named() -> None:
    with pytest.raises(InvalidRequestError, match="`image_url` is required") as info:
        parse_body(Wan21SubmitRequest, {"prompt": "p"})
    assert info.value.field == "image_url"


def test_parse_body_wrong_type_named() -> None:
    with pytest.raises(InvalidRequestError, match="`num_frames` .*got 'many'") as info:
        parse_body(Wan21SubmitRequest, {"prompt": "p", "image_url": "u", "num_frames": "many"})
    assert info.value.field == "num_frames"


def test_parse_body_rejects_non_object() -> None:
    with pytest.raises(InvalidRequestError, match="must be a JSON object"):
        parse_body(Wan21SubmitRequest, ["prompt"])


def test_parse_star_size() -> None:
    assert parse_star_size("1280*720") == (1280, 720)
    with pytest.raises(InvalidRequestError, match="`image_size` must look like 1280\\*720"):
        parse_star_size("auto")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ulysses_size": 8}, "ulysses_size"),
        ({"cfg_size": 2}, "cfg_size"),
        ({"dit_fsdp": True}, "dit_fsdp"),
        ({"t5_fsdp": True}, "t5_fsdp"),
        ({"vae_parallel": True}, "vae_parallel"),
    ],
)
def test_parallel_option_refused_on_one_rank(options: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parallel_plan(ParallelOptions(**options), ONE_RANK)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)


def test_parallel_options_that_fit_pass_with_their_plan() -> None:
    plan = parallel_plan(
        ParallelOptions(ulysses_size=1, cfg_size=1, dit_fsdp=False, t5_fsdp=False, vae_parallel=False), ONE_RANK
    )
    assert plan["ulysses_size"] == 1 and plan["not_honoured"] == []
    group = ParallelCapabilities(world_size=8, cfg_parallel=True, attention_cache=True)
    plan = parallel_plan(
        ParallelOptions(ulysses_size=8, cfg_size=2, dit_fsdp=True, vae_parallel=True, use_attentioncache=True), group
    )
    assert (plan["ulysses_size"], plan["cfg_size"], plan["dit_fsdp"], plan["vae_parallel"]) == (8, 2, True, True)
    assert parallel_plan(ParallelOptions(), ONE_RANK) is None  # no multi-GPU field: no plan to report


def test_parallel_options_hint_mode_runs_and_reports_each_field() -> None:
    hint = ParallelCapabilities(world_size=1, hint=True, attention_cache=False)
    options = ParallelOptions(
        vae_parallel=True, ulysses_size=8, use_attentioncache=True, start_step=12, end_step=37, t5_fsdp=False
    )
    plan = parallel_plan(options, hint)
    assert (plan["world_size"], plan["ulysses_size"], plan["vae_parallel"], plan["use_attentioncache"]) == (
        1,
        1,
        False,
        False,
    )
    fields = [(u["field"], u["requested"], u["used"]) for u in plan["not_honoured"]]
    assert fields == [
        ("ulysses_size", 8, 1),
        ("vae_parallel", True, False),
        ("use_attentioncache", True, False),
        ("start_step", 12, None),
        ("end_step", 37, None),
    ]
    # The engine's `interval` step cache serves the attention cache: by default it is honoured, on one rank too.
    honoured = parallel_plan(options, ParallelCapabilities(world_size=1, hint=True))
    assert honoured["use_attentioncache"] is True
    assert [u["field"] for u in honoured["not_honoured"]] == ["ulysses_size", "vae_parallel"]
    assert attention_cache_params(options) == {"step_cache": "interval", "step_cache_start": 12, "step_cache_end": 37}
    assert attention_cache_params(ParallelOptions(start_step=3)) == {}
    assert all(f"`{u['field']}`" in u["reason"] for u in plan["not_honoured"])


def test_attention_cache_window_checked() -> None:
    group = ParallelCapabilities(world_size=1, attention_cache=True)
    with pytest.raises(InvalidRequestError, match="`end_step` 5 must be after `start_step` 12"):
        parallel_plan(ParallelOptions(use_attentioncache=True, start_step=12, end_step=5), group)


def test_solver_names() -> None:
    assert solver_name("dpmpp") == "dpm++" and solver_name("UniPC") == "unipc" and solver_name(None) is None
    with pytest.raises(InvalidRequestError, match="`sample_solver` must be one of"):
        solver_name("ddim")
