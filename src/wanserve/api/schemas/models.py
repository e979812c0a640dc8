"""Schemas of `GET /v1/models`: the served models, their tasks, trained sizes and default parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SizePublic(BaseModel):
    """A trained resolution."""

    width: int
    height: int


class ParameterPublic(BaseModel):
    """One parameter a task takes, with the value used when it is omitted."""

    name: str
    type: Literal["integer", "number", "string", "boolean"]
    default: Any = Field(description="The value used when the field is omitted (the model's official default).")
    choices: list[str] | None = Field(None, description="The accepted values, where the set is closed.")
    description: str = Field("", description="What it does (the parameter table's help text).")


class TaskPublic(BaseModel):
    """A task a model serves: its media inputs and the parameters it takes."""

    task: str
    output: Literal["video", "image"] = Field(description="What the job's content is: an MP4 or an image.")
    required_inputs: list[str] = Field(description="Media fields the task needs.")
    optional_inputs: list[str] = Field(description="Media fields the task accepts but does not need.")
    parameters: list[ParameterPublic] = Field(description="Every other field the task takes, with its default.")


class ModelPublic(BaseModel):
    """A model this server serves."""

    id: str
    object: Literal["model"] = "model"
    family: str
    default: bool = Field(description="True for the model a job gets when it names none.")
    random_weights: bool = Field(description="True when the model has random weights (tiny models): noise output.")
    default_task: str
    tasks: list[TaskPublic]
    sizes: list[SizePublic] = Field(description="Trained resolutions, the default first.")
    size_multiple: int = Field(description="`width` and `height` must be multiples of this.")
    max_side: int = Field(description="The largest `width` or `height`.")
    frames_multiple: int = Field(description="`num_frames` must be `frames_multiple * k + 1`.")
    max_frames: int
    fps: int = Field(description="Frames per second of the output by default.")


class ModelsPublic(BaseModel):
    """The served models, the default first."""

    object: Literal["list"] = "list"
    data: list[ModelPublic]
