"""The parameter table (engine/parameters.py) and everything that must agree with it: `GenerationRequest`, the native
API's `JobCreate` and multipart OpenAPI body, the `wanserve generate` flags, the OpenAI pass-through fields and
docs/parameters.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wanserve.api.routes.openai import PASS_THROUGH_FIELDS
from wanserve.api.schemas.jobs import JobCreate, multipart_schema
from wanserve.cli.main import app as cli_app
from wanserve.engine import validation
from wanserve.engine.parameters import BY_NAME, MEDIA_FIELDS, PARAMETERS
from wanserve.engine.requests import GenerationRequest
from wanserve.errors import InvalidRequestError

TABLE = set(BY_NAME)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"


def test_generation_request_fields_are_the_table():
    engine_only = {"model"}
    assert {f.name for f in dataclasses.fields(GenerationRequest)} - engine_only == TABLE


def test_job_create_fields_are_the_table():
    assert set(JobCreate.model_fields) == TABLE | {"model", "webhook_url"}


def test_multipart_body_lists_every_field_and_every_media_upload():
    properties = multipart_schema()["properties"]
    assert set(properties) == set(JobCreate.model_fields)
    uploads = {name for name, schema in properties.items() if "binary" in str(schema)}
    assert uploads == set(MEDIA_FIELDS) and len(uploads) == 8


def test_openapi_document_has_the_multipart_body(tmp_path):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app
    from wanserve.config import Settings

    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"])
    with TestClient(create_app(settings, start_workers=False)) as client:
        body = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body["multipart/form-data"]["schema"]["properties"]) == set(JobCreate.model_fields)


def test_openai_pass_through_fields_are_table_fields():
    assert PASS_THROUGH_FIELDS <= TABLE


def test_docs_table_lists_every_field():
    text = DOCS.read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    assert rows >= TABLE


def _every_flag(tmp_path) -> tuple[list[str], dict[str, object]]:
    """A command line setting every table parameter to a value that is not its default, and what each must be."""
    media = tmp_path / "input.bin"
    media.write_bytes(b"x")
    values = {"int": "3", "float": "0.5", "text": "words", "media": str(media)}
    args, expected = [], {}
    for param in PARAMETERS:
        if param.name in ("width", "height"):
            continue
        if param.type == "bool":  # a flag: given means true
            args.append(param.cli)
            expected[param.name] = True
            continue
        if param.type == "lora_list":  # PATH:STRENGTH
            args += [param.cli, f"{media}:0.5"]
            expected[param.name] = [{"path": str(media.resolve()), "strength": 0.5}]
            continue
        value = param.choices[-1] if param.choices else values.get(param.type, str(media))
        args += [param.cli, value]
        if param.type == "object":  # --upscale takes JSON text (or just a scale)
            args[-1] = '{"scale": 2}'
            expected[param.name] = {"scale": 2}
        elif param.type == "media_list":
            expected[param.name] = [value]
        else:
            expected[param.name] = {"int": int, "float": float}.get(param.type, str)(value)
    return [*args, "--size", "96x64"], {**expected, "width": 96, "height": 64}


def test_cli_has_a_flag_for_every_parameter(tmp_path, monkeypatch):
    seen: dict[str, object] = {}

    def fake_resolve(model, params):
        seen.update(params)
        raise InvalidRequestError("model", "stop here")

    monkeypatch.setattr(validation, "resolve_request", fake_resolve)
    args, expected = _every_flag(tmp_path)
    result = CliRunner().invoke(cli_app, ["generate", "-m", "tiny-t2v", *args])
    assert result.exit_code == 2, result.output
    assert {name: seen.get(name) for name in expected} == expected


@pytest.mark.parametrize("param", PARAMETERS, ids=lambda p: p.name)
def test_every_parameter_says_where_it_takes_effect(param):
    assert param.help and param.reaches and param.cli
