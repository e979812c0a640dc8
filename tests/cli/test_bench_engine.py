"""`wanserve bench engine` checks its arguments and needs CUDA (the measurement itself runs on the lent GPU)."""

from __future__ import annotations

from typer.testing import CliRunner

from wanserve.cli.main import app


def test_bench_engine_without_cuda_says_so_and_exits_2():
    result = CliRunner().invoke(app, ["bench", "engine", "--model", "wan2.1-t2v-1.3b"])
    assert result.exit_code == 2
    assert "needs a CUDA GPU" in result.output


def test_bench_engine_refuses_an_unknown_model_naming_the_choices():
    result = CliRunner().invoke(app, ["bench", "engine", "--model", "tiny-t2v"])
    assert result.exit_code == 2
    assert "wan2.1-t2v-14b" in result.output and "tiny-t2v" in result.output


def test_fast_mode_specs_are_request_fields_checked_before_anything_is_built():
    from wanserve.bench.engine import mode_params

    assert mode_params("fast+step_cache=interval+step_cache_interval=3") == {
        "speed": "fast", "step_cache": "interval", "step_cache_interval": 3,
    }  # fmt: skip
    result = CliRunner().invoke(
        app, ["bench", "engine", "--model", "wan2.1-t2v-14b", "--fast-mode", "fast+step_cache_interval=1"]
    )
    assert result.exit_code == 2
    assert "step_cache_interval" in result.output and "needs a CUDA GPU" not in result.output
    result = CliRunner().invoke(app, ["bench", "engine", "--model", "wan2.1-t2v-14b", "--fast-mode", "fast+oops"])
    assert result.exit_code == 2 and "oops" in result.output
