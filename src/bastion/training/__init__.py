"""Phase one: adversarial training objectives, schedules and the fit loop."""

from bastion.training.methods import METHODS, MethodConfig, build_method
from bastion.training.objectives import (
    MART,
    PGDAT,
    TRADES,
    Distillation,
    EnsembleAT,
    FastAT,
    FreeAT,
    LossOutput,
    Objective,
    Standard,
)
from bastion.training.schedules import Schedule, Stage, constant, progressive
from bastion.training.trainer import TrainingRecord, TrainSettings, fit

__all__ = [
    "MART",
    "METHODS",
    "PGDAT",
    "TRADES",
    "Distillation",
    "EnsembleAT",
    "FastAT",
    "FreeAT",
    "LossOutput",
    "MethodConfig",
    "Objective",
    "Schedule",
    "Stage",
    "Standard",
    "TrainSettings",
    "TrainingRecord",
    "build_method",
    "constant",
    "fit",
    "progressive",
]
