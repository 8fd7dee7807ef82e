"""The commands' configurations: ``bastion train``, ``bastion evaluate`` and ``bastion demo``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config import Seed, StrictConfig
from bastion.defenses.config import DefenseConfig
from bastion.evaluation.record import check_eps_keys


class TrainConfig(StrictConfig):
    """``bastion train``: data, architecture, method and its schedule, optimiser."""

    data: str = "digits"
    seed: Seed = 0
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
    lr: float = Field(default=1e-3, gt=0, le=10)
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
    clean_weight: float = Field(default=0.0, ge=0, lt=1)
    init_from: str | None = None
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    restore_best: bool = False
    collapse_action: Literal["off", "record", "stop", "rollback"] = "record"
    amp: bool = False
    channels_last: bool = False
    # Issue 15: adaptive stage transitions (progressive-trades; see docs/training.md).
    policy: Literal["fixed", "gap"] = "fixed"
    policy_gap: float = Field(default=0.2, gt=0, lt=1)
    policy_examples: int = Field(default=300, ge=1)
    policy_confidence: float = Field(default=0.95, ge=0.5, lt=1)
    policy_warmup: int = Field(default=2, ge=0)
    policy_max_steps: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _epochs_from_stages(cls, data: Any) -> Any:
        """With ``stages``, the run trains for their total epochs: that is what ``epochs`` records.

        An explicit ``epochs`` that disagrees is an error, not silently overridden.
        """
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            return data
        counts = [s.get("epochs") if isinstance(s, dict) else None for s in data["stages"]]
        if not counts or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return data  # the schedule itself reports malformed stages
        total = sum(int(c) for c in counts if c is not None)
        if "epochs" in data and data["epochs"] != total:
            raise ValueError(
                f"epochs is {data['epochs']!r} but the stages add up to {total} epochs; drop epochs or make them agree"
            )
        return {**data, "epochs": total}


class EvalConfig(StrictConfig):
    """``bastion evaluate``: which attacks, which budgets, on how many test examples."""

    data: str | None = None
    seed: Seed = 0
    device: str = "auto"
    suite: str = "default"
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    n_examples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1)
    on_bad_rows: Literal["drop", "raise"] = "drop"  # tabular data: drop and report bad rows, or stop
    save_adversarial: str | None = None  # tabular data: write adversarial records in the input's format
    min_margin: float = Field(default=0.0, ge=0, lt=1)  # tabular: written evasions need p(benign) - p(other) >= it
    checks_examples: int = Field(default=100, ge=0)  # test examples for the sanity checks' attacks (0: off)

    @field_validator("eps")
    @classmethod
    def _eps_valid(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one eps")
        if any(e < 0 for e in v):
            raise ValueError(f"eps must be >= 0, got {v}")
        check_eps_keys(v)
        return sorted(set(v))


class DemoConfig(StrictConfig):
    """``bastion demo``: standard vs progressive TRADES on digits, plus the runtime defense."""

    data: str = "digits"
    seed: Seed = 0
    device: str = "auto"
    epochs: int = Field(default=30, ge=1)
    eps_train: float = Field(default=0.2, ge=0)
    eps: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    suite: str = "standard"
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    n_examples: int | None = Field(default=None, ge=1)
    checks_examples: int = Field(default=100, ge=0)
    #: Worker processes for the independent trainings and evaluations (None: one per CPU core; 1 on a GPU).
    workers: int | None = Field(default=None, ge=1)
