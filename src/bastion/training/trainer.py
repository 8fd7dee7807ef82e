"""The fit loop. Owns train/eval modes, the optimizer, per-stage compute counts and validation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from bastion.attacks.pgd import PGD
from bastion.compute import CountingModel, PassCounter
from bastion.data.spec import Split
from bastion.errors import ConfigError
from bastion.evaluation.accuracy import accuracy, robust_accuracy
from bastion.threat import ThreatModel
from bastion.training.objectives import Objective
from bastion.training.schedules import Schedule

log = logging.getLogger(__name__)

#: Called after every batch with (epoch, batches done in epoch, batches per epoch).
BatchHook = Callable[[int, int, int], None]


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Optimiser and loop settings shared by every method."""

    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    val_examples: int = 256
    val_attack_steps: int = 10

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected 'adam' or 'sgd'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; expected 'constant' or 'cosine'")


@dataclass
class TrainingRecord:
    """What training cost and how it went. Pass counts are per example (see ``bastion.compute``)."""

    method: str
    schedule: list[dict[str, Any]]
    forward_passes: int = 0
    gradient_evaluations: int = 0
    wall_time_s: float = 0.0
    validation_time_s: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gradient_evaluations": self.gradient_evaluations,
            "forward_passes": self.forward_passes,
            "wall_time_s": round(self.wall_time_s, 3),
            "validation_time_s": round(self.validation_time_s, 3),
            "schedule": self.schedule,
            "stages": self.stages,
            "history": self.history,
        }


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def fit(
    model: nn.Module,
    train: Split,
    objective: Objective,
    schedule: Schedule,
    threat: ThreatModel,
    *,
    settings: TrainSettings | None = None,
    val: Split | None = None,
    seed: int = 0,
    on_batch: BatchHook | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainingRecord:
    """Train ``model`` in place; return the cost and per-epoch history.

    Args:
        threat: norm and domain for the inner attack; each stage sets its own eps.
        val: if given, clean and PGD accuracy (at the schedule's final eps) on its first
            ``settings.val_examples`` examples are logged each epoch (not counted as training compute).
        seed: drives shuffling, the inner attack's random starts and augmentation.
        augment: applied to each training batch before the objective, with its own generator on the
            model's device (see ``bastion.data.augment``).
    """
    s = settings or TrainSettings()
    device = next(model.parameters()).device
    train = train.to(device)
    shuffle_rng = torch.Generator().manual_seed(seed)
    attack_rng = torch.Generator(device=device).manual_seed(seed + 1)
    augment_rng = torch.Generator(device=device).manual_seed(seed + 3)
    counter = PassCounter()
    counted = CountingModel(model, counter)
    optimizer = _optimizer(model, s)
    n_batches = math.ceil(len(train) / s.batch_size)
    total_steps = schedule.total_epochs * n_batches
    lr_at = (
        (lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
        if s.lr_schedule == "cosine"
        else (lambda step: 1.0)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    record = TrainingRecord(method=objective.name, schedule=schedule.to_list())
    val_sub = val.take(s.val_examples).to(device) if val is not None else None
    started = time.perf_counter()
    stage_index = -1
    stage_start = (0, 0, started)
    validation_s = 0.0  # excluded from the training wall time; reported apart
    for epoch in range(schedule.total_epochs):
        index, stage = schedule.stage_at(epoch)
        if index != stage_index:
            if stage_index >= 0:
                record.stages.append(_stage_cost(schedule, stage_index, counter, stage_start, validation_s))
            stage_index, stage_start = (
                index,
                (counter.forward, counter.backward, time.perf_counter() - validation_s),
            )
            log.info(
                "%s stage %d/%d: eps=%.4g n_steps=%d beta=%.3g epochs=%d",
                objective.name,
                index + 1,
                len(schedule.stages),
                stage.eps,
                stage.n_steps,
                stage.beta,
                stage.epochs,
            )
        model.train()
        order = torch.randperm(len(train), generator=shuffle_rng).to(device)
        totals: dict[str, float] = {}
        for b in range(n_batches):
            idx = order[b * s.batch_size : (b + 1) * s.batch_size]
            x = train.x[idx] if augment is None else augment(train.x[idx], augment_rng)
            out = objective(counted, x, train.y[idx], stage, threat, attack_rng)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch}, batch {b}: {float(out.loss.detach())}"
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            scheduler.step()
            for k, v in out.metrics.items():
                totals[k] = totals.get(k, 0.0) + v * len(idx)
            if on_batch is not None:
                on_batch(epoch, b + 1, n_batches)
        entry: dict[str, Any] = {"epoch": epoch, "stage": index, "eps": stage.eps, "n_steps": stage.n_steps}
        entry.update({k: round(v / len(train), 5) for k, v in totals.items()})
        entry["wall_time_s"] = round(time.perf_counter() - started - validation_s, 3)
        if val_sub is not None:
            t0 = time.perf_counter()
            entry.update(_validate(model, val_sub, threat.with_eps(schedule.final_eps), s, seed))
            validation_s += time.perf_counter() - t0
        record.history.append(entry)
        log.info("epoch %d: %s", epoch, entry)
    record.stages.append(_stage_cost(schedule, stage_index, counter, stage_start, validation_s))
    model.eval()
    record.forward_passes = counter.forward
    record.gradient_evaluations = counter.backward
    record.wall_time_s = time.perf_counter() - started - validation_s
    record.validation_time_s = validation_s
    return record


def _stage_cost(
    schedule: Schedule, index: int, counter: PassCounter, start: tuple[int, int, float], validation_s: float
) -> dict[str, Any]:
    """Cost of one stage; its clock runs on training time only (``t0`` is shifted by validation time)."""
    fwd0, bwd0, t0 = start
    return {
        "stage": index,
        **schedule.stages[index].to_dict(),
        "forward_passes": counter.forward - fwd0,
        "gradient_evaluations": counter.backward - bwd0,
        "wall_time_s": round(time.perf_counter() - validation_s - t0, 3),
    }


def _validate(model: nn.Module, val: Split, threat: ThreatModel, s: TrainSettings, seed: int) -> dict[str, float]:
    rng = torch.Generator(device=val.x.device).manual_seed(seed + 2)
    attack = PGD(n_steps=s.val_attack_steps)
    clean = accuracy(model, val)
    robust = robust_accuracy(model, val, attack, threat, rng=rng).accuracy if threat.eps > 0 else clean
    return {"val_clean_acc": round(clean, 4), "val_robust_acc": round(robust, 4)}
