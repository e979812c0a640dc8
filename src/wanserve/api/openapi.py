"""The OpenAPI document tells the truth about bodies and errors, so schema-driven clients and fuzzers see every
operation as it is:

- Routes that parse their body by hand (multipart or JSON read in the handler) declare it with `json_body(Model)`;
  `finish_openapi` adds those models to the components.
- Every operation's error responses (`default`, and `422` where it takes input) declare the shape the route really answers with: the native error, OpenAI's (tag `openai`), or the replaced
  services' (tags `legacy: ...`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

_BODY_MODELS: dict[str, type[BaseModel]] = {}
"""Models named by `json_body`, by name (added to the OpenAPI components)."""


class ErrorDetailPublic(BaseModel):
    type: str
    message: str
    param: str | None = None
    code: str | None = None


class ErrorPublic(BaseModel):
    """Every native error: `{"error": {type, message, param, code}, "detail": message}`."""

    error: ErrorDetailPublic
    detail: str


class LegacyErrorPublic(BaseModel):
    """The replaced services' errors: FastAPI's `detail` plus their `error` code and `message` (and `field`); their
    file downloads answer a bare `{"detail": "Not Found"}`, as their static file route did."""

    detail: str
    error: str | ErrorDetailPublic | None = None
    message: str | None = None
    field: str | None = None


def json_body(*models: type[BaseModel], form: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON body of `models[0]` (of any of `models`), and a form body when given."""
    for model in models:
        _BODY_MODELS[model.__name__] = model
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    content: dict[str, Any] = {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}
    if form is not None:
        content["multipart/form-data"] = {"schema": form}
    return {"requestBody": {"required": True, "content": content}}


def _error_content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def finish_openapi(app: FastAPI, extra_models: tuple[type[BaseModel], ...] = ()) -> None:
    """Wraps `app.openapi`: body models and error shapes as described in the module docstring."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        from wanserve.api.schemas.openai import OpenAIError

        for model in (*extra_models, *_BODY_MODELS.values(), ErrorPublic, LegacyErrorPublic, OpenAIError):
            definitions = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definitions.pop("$defs", {}))
            components[model.__name__] = definitions
        for key in ("HTTPValidationError", "ValidationError"):
            components.pop(key, None)
        for operation in (op for item in schema["paths"].values() for op in item.values()):
            tags = operation.get("tags", [])
            model = ErrorPublic
            if "openai" in tags:
                model = OpenAIError
            elif any(tag.startswith("legacy") for tag in tags):
                model = LegacyErrorPublic
            responses = operation.setdefault("responses", {})
            validation = responses.pop("422", None)
            if validation is not None or "requestBody" in operation:
                responses["422"] = {"description": "Invalid request", "content": _error_content(model)}
            responses["default"] = {"description": "Error", "content": _error_content(model)}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
