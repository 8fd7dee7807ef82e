"""Typed run configurations from YAML. Unknown keys are errors that name the key.

Command-line options override file values; the resolved config is written into every run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion.errors import ConfigError

C = TypeVar("C", bound="_Config")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path | None, **overrides: Any) -> C:
        """Read ``path`` (if any), apply non-None ``overrides``, validate."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                loaded = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(loaded).__name__}")
            data.update(loaded)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.parse(data, source=str(path) if path else "options")

    @classmethod
    def parse(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, cls, source)) from None

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _explain(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(cls.model_fields))
            lines.append(f"unknown config key {where!r} in {source} (allowed: {allowed})")
        else:
            lines.append(f"invalid value for {where!r} in {source}: {err['msg']}")
    return "; ".join(lines)


class TrainConfig(_Config):
    """``bastion train``: data, architecture, method and its schedule, optimiser."""

    data: str = "digits"
    seed: int = 0
    device: str = "auto"
    model: str = "cnn"
    model_options: dict[str, Any] = Field(default_factory=dict)
    method: str = "progressive-trades"
    epochs: int = Field(default=20, ge=1)
    eps: float = Field(default=0.1, ge=0)
    norm: Literal["linf", "l2"] = "linf"
    n_steps: int = Field(default=10, ge=1)
    beta: float = Field(default=6.0, ge=0)
    n_stages: int = Field(default=3, ge=1)
    min_steps: int = Field(default=1, ge=1)
    growth: Literal["linear", "cosine"] = "linear"
    final_fraction: float = Field(default=0.4, gt=0, le=1)
    stages: list[dict[str, Any]] | None = None
    batch_size: int = Field(default=128, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    val_examples: int = Field(default=256, ge=0)
    augment: Literal["none", "crop", "crop-flip", "auto"] = "none"
    # Issue 4: more methods, warm start, trainer options (see docs/training.md).
    single_step_epochs: int = Field(default=0, ge=0)
    guard: Literal["none", "n-fgsm"] = "n-fgsm"
    noise: float = Field(default=2.0, ge=0)
    replays: int = Field(default=4, ge=1)
    temperature: float = Field(default=20.0, gt=0)
    teacher: str | None = None
    static_models: list[str] = Field(default_factory=list)
    init_from: str | None = None
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    restore_best: bool = False
    collapse_action: Literal["off", "record", "stop", "rollback"] = "record"
    amp: bool = False
    channels_last: bool = False


class EvalConfig(_Config):
    """``bastion evaluate``: which attacks, which budgets, on how many test examples."""

    data: str | None = None
    seed: int = 0
    device: str = "auto"
    suite: str = "default"
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    n_examples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1)
    on_bad_rows: Literal["drop", "raise"] = "drop"  # tabular data: drop and report bad rows, or stop
    save_adversarial: str | None = None  # tabular data: write adversarial records in the input's format
    checks_examples: int = Field(default=100, ge=0)  # test examples for the sanity checks' attacks (0: off)

    @field_validator("eps")
    @classmethod
    def _eps_valid(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one eps")
        if any(e < 0 for e in v):
            raise ValueError(f"eps must be >= 0, got {v}")
        return sorted(set(v))


DetectorName = Literal["mahalanobis", "lid", "kde", "squeeze"]


class DefenseConfig(_Config):
    """The runtime defense: squeezers before the model, detectors at a target FPR, adaptive evaluation."""

    bit_depth: int | None = Field(default=3, ge=1, le=16)
    median: int | None = Field(default=None, ge=2)
    target_fpr: float = Field(default=0.05, gt=0, lt=1)
    jpeg_quality: int | None = Field(default=None, ge=1, le=100)
    detectors: list[DetectorName] = Field(default_factory=lambda: list[DetectorName](["mahalanobis"]))
    reject_fpr: float | None = Field(default=None, gt=0, lt=1)
    adaptive: bool = True
    adaptive_steps: int = Field(default=50, ge=1)


class DemoConfig(_Config):
    """``bastion demo``: standard vs progressive TRADES on digits, plus the runtime defense."""

    data: str = "digits"
    seed: int = 0
    device: str = "auto"
    epochs: int = Field(default=30, ge=1)
    eps_train: float = Field(default=0.2, ge=0)
    eps: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    suite: str = "default"
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    n_examples: int | None = Field(default=None, ge=1)
    checks_examples: int = Field(default=100, ge=0)
