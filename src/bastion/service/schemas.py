"""HTTP request and response shapes (the OpenAPI schema; the handlers validate inputs themselves)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """``inputs``: nested lists in the model's input shape, or (tabular) objects with named raw fields."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[list[Any] | dict[str, Any]] = Field(min_length=1)


class Output(BaseModel):
    """One input's answer. ``label`` and ``class_name`` are null when the decision is ``reject``."""

    label: int | None
    class_name: str | None
    probabilities: list[float]
    anomaly_score: float | None = Field(description="detector score; higher = more suspicious; null without one")
    decision: Literal["accept", "flag", "reject"]
    votes: list[int] | None = Field(description="each ensemble member's label; null for a single model")


class PredictResponse(BaseModel):
    request_id: str
    model: str
    defended: bool
    outputs: list[Output]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str


MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    "required": ["files"],
}


def predict_openapi() -> dict[str, Any]:
    """The request body of POST /v1/predict: JSON, a .npy array, or multipart image uploads."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": PredictRequest.model_json_schema()},
                "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": MULTIPART_SCHEMA},
            },
        }
    }
