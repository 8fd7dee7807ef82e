"""results.json: the versioned, canonical artifact of ``demo``, ``train`` and ``evaluate``.

Schema version 1 (documented in docs/results.md). Later versions add keys; they never rename these.
The pydantic models below are the executable form of that document: ``validate_results`` is what the
tests and ``bastion evaluate`` use to read a file back.
"""

from __future__ import annotations

import json
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion.errors import CheckpointError
from bastion.io import atomic_write_json

SCHEMA_VERSION = 1
_EPS_KEY = re.compile(r"^\d+(\.\d+)?(e-?\d+)?$")


class TrainingBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str
    gradient_evaluations: int = Field(ge=0)
    wall_time_s: float = Field(ge=0)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str
    clean_accuracy: float = Field(ge=0, le=1)
    n_examples: int = Field(ge=0)
    robust_accuracy: dict[str, dict[str, float]]
    training: TrainingBlock | None = None

    @field_validator("robust_accuracy")
    @classmethod
    def _eps_keys(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for attack, by_eps in v.items():
            for key, acc in by_eps.items():
                if not _EPS_KEY.match(key):
                    raise ValueError(f"robust_accuracy[{attack!r}] has eps key {key!r}, not a decimal string")
                if not 0 <= acc <= 1:
                    raise ValueError(f"robust_accuracy[{attack!r}][{key!r}] = {acc} is not a rate")
        return v


class ResultsFile(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_version: int = Field(alias="schema")
    data: str
    seed: int
    models: dict[str, ModelEntry]

    @field_validator("schema_version")
    @classmethod
    def _known(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unsupported results schema {v}; this bastion reads schema {SCHEMA_VERSION}")
        return v


def environment() -> dict[str, Any]:
    import numpy
    import torch

    from bastion import __version__

    return {
        "bastion": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def new_results(*, command: str, data: str, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
        "seed": seed,
        "environment": environment(),
        **extra,
        "models": {},
    }


def validate_results(obj: dict[str, Any]) -> ResultsFile:
    try:
        return ResultsFile.model_validate(obj)
    except ValidationError as exc:
        raise CheckpointError(f"results do not follow schema {SCHEMA_VERSION}: {exc}") from exc


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Validate, then write atomically: an invalid or interrupted write never replaces a good file."""
    validate_results(results)
    return atomic_write_json(path, results)


def read_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read results file {path}: {exc}") from exc
    validate_results(obj)
    return obj
