"""HTTP request and response shapes (the OpenAPI schema; the handlers validate inputs themselves).

The request body's schema is built from the bundle's dataset spec, so a client (or Swagger UI, or a
schema-driven fuzzer) sees what the handler accepts: for a tabular model, one named, typed field per raw
feature (numeric bounds, integers, 0/1, discrete grids, category enums), or a model-space row of the
model's width; for an image model, nested lists of exactly the input shape with values in the input box.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from bastion.data.spec import DatasetSpec
from bastion.data.tabular.schema import OTHER, Feature, FeatureKind, TabularSchema


def _bound(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _field_type(feature: Feature, fitted_range: tuple[float, float] | None) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one raw feature, as the service's validator checks it."""
    notes = [feature.kind.value]
    if not feature.mutable:
        notes.append("immutable for attacks")
    kind = feature.kind
    extra: dict[str, Any] = {}
    annotation: Any
    lower, upper = _bound(feature.lower), _bound(feature.upper)
    if kind is FeatureKind.CATEGORICAL:
        cats = tuple(feature.values or ())
        if OTHER in cats:  # learned in training: any other text is mapped to the catch-all category
            annotation = str
            seen = [c for c in cats if c != OTHER]
            notes.append(f"categories seen in training: {', '.join(seen)}; any other text counts as unseen")
        else:
            annotation = Literal[cats]
        lower = upper = None
    elif kind is FeatureKind.BINARY:
        annotation = Literal[0, 1]
        lower = upper = None
    elif kind is FeatureKind.DISCRETE:
        values = [_plain(v) for v in feature.values or ()]
        annotation, extra["enum"] = float, values
        notes.append("one of " + ", ".join(map(str, values)))
        lower = upper = None
    else:
        annotation = int if kind is FeatureKind.INTEGER else float
        if fitted_range is not None and (lower is None or upper is None):
            lo, hi = fitted_range
            notes.append(f"training range [{lo:g}, {hi:g}]; values beyond it are clipped to it")
    info = Field(
        alias=feature.name,
        title=feature.name,
        ge=lower,
        le=upper,
        description="; ".join(notes),
        json_schema_extra=extra or None,
    )
    return annotation, info


def record_model(schema: TabularSchema, ranges: dict[str, tuple[float, float]] | None = None) -> type[BaseModel]:
    """One tabular record: every raw feature a required, typed field; no other key allowed."""
    fields: dict[str, Any] = {
        f"field_{i}": _field_type(f, (ranges or {}).get(f.name)) for i, f in enumerate(schema.features)
    }
    return create_model(
        "TabularRecord",
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        __doc__=f"One raw record of schema '{schema.name}' (the fields of GET /v1/model's feature_schema).",
        **fields,
    )


def _nested(shape: tuple[int, ...], leaf: Any) -> Any:
    """list-of-lists annotation of exactly ``shape`` around ``leaf``."""
    annotated: Any = Annotated  # built at run time from the bundle: not a static type
    annotation = leaf
    for n in reversed(shape):
        annotation = annotated[list[annotation], Field(min_length=n, max_length=n)]  # type: ignore[valid-type]
    return annotation


def request_model(spec: DatasetSpec, max_inputs: int) -> type[BaseModel]:
    """The JSON body of POST /v1/predict for this bundle: ``{"inputs": [x1, ...]}``, 1..max_inputs inputs."""
    lower = getattr(spec.domain, "lower", None)
    upper = getattr(spec.domain, "upper", None)
    pre = getattr(spec.domain, "preprocessor", None)
    leaf: Any = float
    if lower is not None and upper is not None:
        leaf = Annotated[float, Field(ge=float(lower.min()), le=float(upper.max()))]
    item: Any = _nested(tuple(spec.input_shape), leaf)
    if pre is not None:
        item = record_model(pre.schema_, dict(pre.ranges_)) | item
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="``inputs``: nested lists in the model's input shape, or (tabular) objects with named raw fields.",
        inputs=(list[item], Field(min_length=1, max_length=max_inputs)),
    )


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


CSV_DESCRIPTION = (
    "One raw record per line in the data file's own text form: the features in schema order, optionally "
    "followed by the label and extra columns, or any column order under a header line naming them "
    "(header=present|absent in the content type forces either)."
)


def predict_openapi(spec: DatasetSpec, max_inputs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(operation extra, component schemas) of POST /v1/predict: JSON, a .npy array, multipart image
    uploads (image models) or text/csv records (tabular models)."""
    schema = request_model(spec, max_inputs).model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    content: dict[str, Any] = {
        "application/json": {"schema": schema},
        "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
    }
    if spec.modality == "image":
        content["multipart/form-data"] = {"schema": MULTIPART_SCHEMA}
    if getattr(spec.domain, "preprocessor", None) is not None:
        content["text/csv"] = {"schema": {"type": "string", "description": CSV_DESCRIPTION}}
    return {"requestBody": {"required": True, "content": content}}, components
