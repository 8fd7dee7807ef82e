"""The fit loop. Owns train/eval modes, the optimizer, per-stage compute counts, validation, the best
checkpoint, EMA, collapse detection, exact resume and data-parallel gradient averaging."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.fgsm import FGSM
from bastion.attacks.pgd import PGD
from bastion.compute import CountingModel, PassCounter
from bastion.config import NOT_IN_CONFIG, from_config
from bastion.data.spec import Split
from bastion.errors import CheckpointError, ConfigError
from bastion.evaluation.accuracy import accuracy, robust_accuracy
from bastion.threat import ThreatModel
from bastion.training import distributed as ddp
from bastion.training import state as ckpt
from bastion.training.objectives import LossOutput, Objective
from bastion.training.schedules import GapPolicy, Schedule, Stage

log = logging.getLogger(__name__)

#: Called after every batch with (epoch, batches done in epoch, batches per epoch).
BatchHook = Callable[[int, int, int], None]
#: Called after every epoch with its history entry and the events (stage policy, collapse) it recorded.
EpochHook = Callable[[dict[str, Any], list[dict[str, Any]]], None]
#: Data augmentation: (x on the device, generator) -> x of the same shape, inside the input domain.
Augment = Callable[[Tensor, torch.Generator], Tensor]

CollapseAction = Literal["off", "record", "stop", "rollback"]


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Optimiser and loop settings shared by every method.

    Args:
        val_examples: validation examples for the per-epoch clean / FGSM / PGD accuracy (0 = none).
        ema_decay: keep an exponential moving average of the weights (e.g. 0.999); validation, the best
            checkpoint and the returned model then use the averaged weights.
        restore_best: end with the weights of the epoch with the best PGD validation accuracy (guards
            against robust overfitting); needs validation.
        collapse_action: what to do on catastrophic overfitting (PGD validation accuracy falling below
            ``collapse_drop`` x its best while FGSM validation accuracy rises): ``record`` an event,
            ``stop`` training, ``rollback`` to the best weights and stop, or ``off``.
        amp, channels_last: CUDA only (autocast float16 + GradScaler; NHWC memory); no-ops on CPU.

    ``momentum``, ``val_attack_steps`` and ``collapse_drop`` are library settings a run config may omit.
    """

    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = field(default=0.9, metadata=NOT_IN_CONFIG)
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    val_examples: int = 256
    val_attack_steps: int = field(default=10, metadata=NOT_IN_CONFIG)
    ema_decay: float | None = None
    restore_best: bool = False
    collapse_action: CollapseAction = "record"
    collapse_drop: float = field(default=0.25, metadata=NOT_IN_CONFIG)
    amp: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected 'adam' or 'sgd'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; expected 'constant' or 'cosine'")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.collapse_action not in ("off", "record", "stop", "rollback"):
            raise ConfigError(
                f"unknown collapse_action {self.collapse_action!r}; expected off, record, stop or rollback"
            )
        if not 0 < self.collapse_drop < 1:
            raise ConfigError(f"collapse_drop must be in (0, 1), got {self.collapse_drop}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainSettings:
        """The loop's settings out of a wider flat config (e.g. ``TrainConfig``); a missing one is an error."""
        return from_config(cls, config, "the training config")


@dataclass
class TrainingRecord:
    """What training cost and how it went. Pass counts are per example (see ``bastion.compute``), summed
    over all processes of a data-parallel run."""

    method: str
    schedule: list[dict[str, Any]]
    forward_passes: int = 0
    gradient_evaluations: int = 0
    wall_time_s: float = 0.0
    validation_time_s: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    world_size: int = 1
    resumed_at_epoch: int | None = None
    policy: dict[str, Any] | None = None
    policy_gradient_evaluations: int = 0

    def add_teacher(self, teacher: TrainingRecord) -> None:
        """A distilled student's cost includes its teacher's: the passes add up, the teacher is an event."""
        self.forward_passes += teacher.forward_passes
        self.gradient_evaluations += teacher.gradient_evaluations
        self.wall_time_s += teacher.wall_time_s
        self.events.append({"kind": "teacher", **teacher.to_dict()})

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
            "events": self.events,
            "best": self.best,
            "world_size": self.world_size,
            "resumed_at_epoch": self.resumed_at_epoch,
            "policy": self.policy,
            "policy_gradient_evaluations": self.policy_gradient_evaluations,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingRecord:
        return cls(
            method=d["method"],
            schedule=d["schedule"],
            forward_passes=d["forward_passes"],
            gradient_evaluations=d["gradient_evaluations"],
            wall_time_s=d["wall_time_s"],
            validation_time_s=d["validation_time_s"],
            stages=d["stages"],
            history=d["history"],
            events=d.get("events", []),
            best=d.get("best"),
            world_size=d.get("world_size", 1),
            resumed_at_epoch=d.get("resumed_at_epoch"),
            policy=d.get("policy"),
            policy_gradient_evaluations=d.get("policy_gradient_evaluations", 0),
        )


def detect_collapse(history: list[dict[str, Any]], drop: float) -> bool:
    """Catastrophic overfitting at the last epoch of ``history`` (Wong et al. 2020, Sec. 5).

    True when PGD validation accuracy fell below ``drop`` x its best earlier value (which must have
    been >= 0.1, so an untrained model is not "collapsing") while FGSM validation accuracy rose: the
    model has learned to mask single-step gradients instead of becoming robust.
    """
    if len(history) < 2 or "val_robust_acc" not in history[-1] or "val_fgsm_acc" not in history[-1]:
        return False
    earlier = [h["val_robust_acc"] for h in history[:-1] if "val_robust_acc" in h]
    best = max(earlier, default=0.0)
    now, prev = history[-1], history[-2]
    fgsm_rose = now["val_fgsm_acc"] > prev.get("val_fgsm_acc", float("inf"))
    return best >= 0.1 and now["val_robust_acc"] < drop * best and fgsm_rose


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


@dataclass
class _Loop:
    """Loop position and bookkeeping; everything here goes into the checkpoint."""

    epoch: int = 0  # epochs completed
    stage_index: int = -1
    stage_start: tuple[int, int, float] = (0, 0, 0.0)  # global (forward, backward) and training time
    train_time: float = 0.0
    validation_time: float = 0.0
    stopped: bool = False
    policy_steps: int = 0  # the transition policy's floor on attack steps (0: none yet)
    policy_backward: int = 0  # backward passes the policy's measurements cost (included in the totals)


def _state_tensors(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class _Run:
    """One ``fit`` call's parts, built once by :func:`_start`; the loop's steps read and update them."""

    model: nn.Module
    counted: nn.Module
    counter: PassCounter
    objective: Objective
    schedule: Schedule
    threat: ThreatModel
    settings: TrainSettings
    train: Split
    device: torch.device
    rank: int
    world: int
    seed: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: nn.Module | None
    generators: dict[str, torch.Generator]  # shuffle, attack, augment: all saved with the checkpoint
    record: TrainingRecord
    val: Split | None  # the validation subset, on the device
    val_threat: ThreatModel
    policy_val: Split | None  # the transition policy's fixed held-out batch, on the device
    run_id: dict[str, Any]
    directory: Path | None
    n_batches: int
    replays: int
    loop: _Loop = field(default_factory=_Loop)
    best_state: dict[str, Tensor] | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation, the best checkpoint and the returned model use (the EMA when kept)."""
        return self.ema if self.ema is not None else self.model

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.scaler is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def global_counts(self) -> tuple[int, int]:
        """(forward, backward) passes so far, summed over ranks."""
        return ddp.sum_counts(self.counter.forward, self.counter.backward, self.device)


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
    augment: Augment | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: EpochHook | None = None,
) -> TrainingRecord:
    """Train ``model`` in place; return the cost and per-epoch history.

    Args:
        threat: norm and domain for the inner attack; each stage sets its own eps.
        val: if given, clean, FGSM and PGD accuracy (at the schedule's final eps, else ``threat.eps``) on its first
            ``settings.val_examples`` examples each epoch (not counted as training compute); drives the
            best checkpoint and collapse detection.
        seed: drives shuffling, the inner attack's random starts and ``augment``'s generator.
        augment: applied to every training batch on the device before the objective.
        checkpoint_dir: write ``last.safetensors`` (everything needed to resume) after every epoch and
            ``best.safetensors`` (weights) whenever PGD validation accuracy improves.
        resume: continue from ``checkpoint_dir/last.safetensors``; the run then ends with bitwise the
            same weights as an uninterrupted one with the same settings, seed and process count.
        on_epoch: told each epoch's history entry and new events (run tracking: TensorBoard, MLflow).

    Under ``torch.distributed`` (see ``bastion.training.distributed``) each rank trains on its shard of
    every global batch of ``settings.batch_size`` examples and only rank 0 writes checkpoints.
    """
    s = settings or TrainSettings()
    if s.restore_best and (val is None or s.val_examples == 0):
        raise ConfigError("restore_best needs validation data (val and val_examples > 0)")
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs a checkpoint_dir to resume from")
    if schedule.policy is not None and val is None:
        raise ConfigError(f"transition policy {schedule.policy.name!r} needs validation data (val)")
    if any(st.start == "carry" for st in schedule.stages) and not hasattr(objective, "select_batch"):
        raise ConfigError(f"{objective.name} cannot carry perturbations across epochs (start: carry is TRADES')")
    run = _start(model, train, objective, schedule, threat, s, val, seed, checkpoint_dir)
    if resume and run.directory is not None:
        run.loop, run.best_state = _restore(run, run.directory / ckpt.LAST)
        run.record.resumed_at_epoch = run.loop.epoch
        log.info("resumed %s after epoch %d", objective.name, run.loop.epoch)
    for epoch in range(run.loop.epoch, schedule.total_epochs):
        if run.loop.stopped:
            break
        n_events = len(run.record.events)
        _run_epoch(run, epoch, on_batch, augment)
        if on_epoch is not None and run.record.history:
            on_epoch(dict(run.record.history[-1]), list(run.record.events[n_events:]))
    return _finish(run)


def _start(
    model: nn.Module,
    train: Split,
    objective: Objective,
    schedule: Schedule,
    threat: ThreatModel,
    s: TrainSettings,
    val: Split | None,
    seed: int,
    checkpoint_dir: str | Path | None,
) -> _Run:
    """Device placement, generators, optimizer, LR schedule, scaler and EMA for a fresh run."""
    rank, world = ddp.rank_and_world()
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    if (s.amp or s.channels_last) and not cuda:
        log.info("amp / channels_last requested on %s: they apply to CUDA only and are ignored", device.type)
    if s.channels_last and cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train = train.to(device)
    generators = {
        "shuffle": torch.Generator().manual_seed(seed),
        "attack": torch.Generator(device=device).manual_seed(seed + 1 + 1000 * rank),
        "augment": torch.Generator(device=device).manual_seed(seed + 3 + 1000 * rank),
    }
    counter = PassCounter()
    optimizer = _optimizer(model, s)
    replays = int(getattr(objective, "replays", 1))
    n_batches = math.ceil(len(train) / s.batch_size)
    total_steps = schedule.total_epochs * n_batches * replays
    lr_at = (
        (lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
        if s.lr_schedule == "cosine"
        else (lambda step: 1.0)
    )
    ema = copy.deepcopy(model).eval() if s.ema_decay is not None else None
    if ema is not None:
        for p in ema.parameters():
            p.requires_grad_(False)
    return _Run(
        model=model,
        counted=CountingModel(model, counter),
        counter=counter,
        objective=objective,
        schedule=schedule,
        threat=threat,
        settings=s,
        train=train,
        device=device,
        rank=rank,
        world=world,
        seed=seed,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at),
        scaler=torch.amp.GradScaler("cuda") if (s.amp and cuda) else None,
        ema=ema,
        generators=generators,
        record=TrainingRecord(
            method=objective.name,
            schedule=schedule.to_list(),
            world_size=world,
            policy=schedule.policy.to_dict() if schedule.policy is not None else None,
        ),
        val=val.take(s.val_examples).to(device) if (val is not None and s.val_examples > 0) else None,
        # Robustness is validated at the schedule's final budget; clean-only schedules use the threat's own.
        val_threat=threat.with_eps(schedule.final_eps or threat.eps),
        policy_val=(
            val.take(schedule.policy.examples).to(device) if (val is not None and schedule.policy is not None) else None
        ),
        run_id={
            "method": objective.name,
            "schedule": schedule.to_list(),
            "policy": schedule.policy.to_dict() if schedule.policy is not None else None,
            "settings": asdict(s),
            "seed": seed,
            "n_train": len(train),
            "world_size": world,
        },
        directory=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        n_batches=n_batches,
        replays=replays,
    )


def _run_epoch(run: _Run, epoch: int, on_batch: BatchHook | None, augment: Augment | None) -> None:
    """One epoch: train, log, validate, react to a collapse, checkpoint."""
    index, stage = _enter_stage(run, epoch)
    stage = _policy_stage(run, stage)
    run.model.train()
    t0 = time.perf_counter()
    metrics = _train_epoch(run, epoch, stage, on_batch, augment)
    entry: dict[str, Any] = {"epoch": epoch, "stage": index, "eps": stage.eps, "n_steps": stage.n_steps}
    entry.update(metrics)
    if run.schedule.policy is not None and run.policy_val is not None:
        _apply_policy(run, run.schedule.policy, run.policy_val, epoch, stage, entry)
    run.loop.train_time += time.perf_counter() - t0
    entry["wall_time_s"] = round(run.loop.train_time, 3)
    improved = _validate_epoch(run, epoch, entry)
    run.record.history.append(entry)
    log.info("epoch %d: %s", epoch, entry)
    if run.settings.collapse_action != "off" and detect_collapse(run.record.history, run.settings.collapse_drop):
        _on_collapse(run, epoch, entry)
    run.loop.epoch = epoch + 1
    if run.directory is not None:
        _save(run, run.directory, improved)


def _enter_stage(run: _Run, epoch: int) -> tuple[int, Stage]:
    """The stage of ``epoch``; when it starts here, close the previous stage's cost and log the new one."""
    index, stage = run.schedule.stage_at(epoch)
    if index != run.loop.stage_index:
        fwd, bwd = run.global_counts()
        if run.loop.stage_index >= 0:
            run.record.stages.append(_stage_cost(run.schedule, run.loop, fwd, bwd))
        run.loop.stage_index, run.loop.stage_start = index, (fwd, bwd, run.loop.train_time)
        log.info(
            "%s stage %d/%d: eps=%.4g n_steps=%d step=%.4g beta=%.3g epochs=%d",
            run.objective.name,
            index + 1,
            len(run.schedule.stages),
            stage.eps,
            stage.n_steps,
            stage.step_fraction * stage.eps,
            stage.beta,
            stage.epochs,
        )
    return index, stage


def _policy_stage(run: _Run, stage: Stage) -> Stage:
    """The stage as the transition policy has strengthened it (more steps; the stage's step size kept)."""
    if run.loop.policy_steps > stage.n_steps:
        return replace(stage, n_steps=run.loop.policy_steps)
    return stage


def _apply_policy(
    run: _Run, policy: GapPolicy, held_out: Split, epoch: int, stage: Stage, entry: dict[str, Any]
) -> None:
    """Measure the cheap-vs-strong gap on the fixed held-out batch; strengthen the attack when it opens.

    Counted as training compute: the measurement runs through the run's pass counter.
    """
    counted = CountingModel(run.evaluated, run.counter)
    threat = run.threat.with_eps(stage.eps or run.val_threat.eps)
    before = run.counter.backward
    # Re-seeded every epoch, so successive measurements differ by the weights only.
    rng = torch.Generator(device=held_out.x.device).manual_seed(run.seed + 4)
    cheap = PGD(n_steps=stage.n_steps, rel_step_size=replace(stage, rel_step_size=None).step_fraction)
    strong = PGD(n_steps=policy.strong_steps, n_restarts=policy.strong_restarts)
    cheap_correct = robust_accuracy(counted, held_out, cheap, threat, rng=rng).correct
    standing = Split(held_out.x[cheap_correct], held_out.y[cheap_correct])
    broken = torch.zeros_like(cheap_correct)
    if len(standing):  # the strong attack runs on the cheap attack's survivors only
        broken[cheap_correct] = ~robust_accuracy(counted, standing, strong, threat, rng=rng).correct
    run.loop.policy_backward += run.counter.backward - before
    cheap_acc = float(cheap_correct.float().mean())
    gap = float(broken.float().mean())
    strong_acc = cheap_acc - gap  # the worst case of the two attacks
    bound = policy.lower_bound(broken)
    entry.update(
        {
            "policy_cheap_acc": round(cheap_acc, 4),
            "policy_strong_acc": round(strong_acc, 4),
            "policy_gap": round(gap, 4),
            "policy_gap_lower": round(bound, 4),
        }
    )
    if bound <= policy.gap or epoch < policy.warmup or epoch + 1 >= run.schedule.total_epochs:
        return
    to_steps = policy.strengthened(stage.n_steps)
    event: dict[str, Any] = {
        "kind": "policy-transition",
        "policy": policy.name,
        "epoch": epoch,
        "eps": stage.eps,
        "cheap_acc": round(cheap_acc, 4),
        "strong_acc": round(strong_acc, 4),
        "gap": round(gap, 4),
        "gap_lower": round(bound, 4),
        "confidence": policy.confidence,
        "examples": len(held_out),
        "threshold": policy.gap,
        "from_steps": stage.n_steps,
        "to_steps": to_steps,
    }
    if to_steps <= stage.n_steps:
        event["action"] = "none"
        event["reason"] = (
            f"gap {gap:.3f} (lower bound {bound:.3f}) > {policy.gap} but the attack is already at max_steps "
            f"{policy.max_steps}"
        )
    else:
        run.loop.policy_steps = to_steps
        event["action"] = "strengthen"
        event["reason"] = (
            f"{stage.n_steps}-step attack accuracy {cheap_acc:.3f} exceeds PGD-{policy.strong_steps}x"
            f"{policy.strong_restarts} accuracy {strong_acc:.3f} by {gap:.3f} on {len(held_out)} examples "
            f"({policy.confidence:.0%} lower bound {bound:.3f} > {policy.gap}): "
            f"{to_steps} steps from epoch {epoch + 1} on"
        )
    run.record.events.append(event)
    log.warning("transition policy at epoch %d: %s", epoch, event["reason"])


def _train_epoch(
    run: _Run, epoch: int, stage: Stage, on_batch: BatchHook | None, augment: Augment | None
) -> dict[str, float]:
    """Every batch of one epoch (this rank's shard of it); the example-weighted mean of each metric."""
    s, train = run.settings, run.train
    order = torch.randperm(len(train), generator=run.generators["shuffle"]).to(run.device)
    totals: dict[str, float] = {}
    n_seen = 0
    select_batch = getattr(run.objective, "select_batch", None)
    for b in range(run.n_batches):
        idx = order[b * s.batch_size : (b + 1) * s.batch_size]
        n_global = len(idx)
        if run.world > 1:
            idx = idx[run.rank :: run.world]
        x, y = train.x[idx], train.y[idx]
        if s.channels_last and run.cuda and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if augment is not None and len(idx):
            x = augment(x, run.generators["augment"])
        if select_batch is not None:
            select_batch(idx, len(train), tuple(train.x.shape[1:]))
        for _ in range(run.replays):
            out = _step(run, x, y, stage, len(idx) / n_global, f"epoch {epoch}, batch {b}")
        if len(idx):
            for k, v in out.metrics.items():  # type: ignore[union-attr]
                totals[k] = totals.get(k, 0.0) + v * len(idx)
            n_seen += len(idx)
        if on_batch is not None:
            on_batch(epoch, b + 1, run.n_batches)
    return {k: round(v / max(n_seen, 1), 5) for k, v in totals.items()}


def _step(run: _Run, x: Tensor, y: Tensor, stage: Stage, share: float, where: str) -> LossOutput | None:
    """One optimiser step on this rank's batch (an empty shard still joins the gradient average).

    ``share`` is this rank's fraction of the global batch, the weight of its gradient.
    """
    run.optimizer.zero_grad(set_to_none=True)
    out = None
    if len(x):
        with run.autocast():
            out = run.objective(run.counted, x, y, stage, run.threat, run.generators["attack"])
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"non-finite training loss at {where}: {float(out.loss.detach())}")
        (run.scaler.scale(out.loss) if run.scaler is not None else out.loss).backward()
        if out.after_backward is not None:
            out.after_backward()
    if run.world > 1:
        ddp.average_gradients(run.model, share)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:
        _ema_update(run.ema, run.model, run.settings.ema_decay)  # type: ignore[arg-type]
    return out


def _validate_epoch(run: _Run, epoch: int, entry: dict[str, Any]) -> bool:
    """Validation metrics into ``entry``; True when PGD accuracy beat the best so far (then kept as best)."""
    if run.val is None:
        return False
    t1 = time.perf_counter()
    entry.update(_validate(run.evaluated, run.val, run.val_threat, run.settings, run.seed))
    run.loop.validation_time += time.perf_counter() - t1
    best = run.record.best
    if not (best is None or entry["val_robust_acc"] > best["val_robust_acc"]):
        return False
    run.record.best = {"epoch": epoch, "val_robust_acc": entry["val_robust_acc"]}
    run.best_state = _state_tensors(run.evaluated)
    return True


def _on_collapse(run: _Run, epoch: int, entry: dict[str, Any]) -> None:
    """Record catastrophic overfitting and act as ``collapse_action`` says (stop, or roll back and stop)."""
    action = run.settings.collapse_action
    event = {
        "kind": "catastrophic-overfitting",
        "epoch": epoch,
        "val_robust_acc": entry["val_robust_acc"],
        "val_fgsm_acc": entry["val_fgsm_acc"],
        "best": run.record.best,
        "action": action,
    }
    run.record.events.append(event)
    log.warning("catastrophic overfitting detected at epoch %d: %s", epoch, event)
    if action in ("stop", "rollback"):
        run.loop.stopped = True
    if action == "rollback" and run.best_state is not None:
        run.model.load_state_dict(run.best_state)
        if run.ema is not None:
            run.ema.load_state_dict(run.best_state)


def _finish(run: _Run) -> TrainingRecord:
    """Close the last stage's cost, settle the returned weights (best, EMA or last) and the totals."""
    fwd, bwd = run.global_counts()
    record, loop = run.record, run.loop
    if loop.stage_index >= 0 and len(record.stages) <= loop.stage_index:
        record.stages.append(_stage_cost(run.schedule, loop, fwd, bwd))
    if run.settings.restore_best and run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    elif run.ema is not None:
        run.model.load_state_dict(run.ema.state_dict())
    run.model.eval()
    record.forward_passes = fwd
    record.gradient_evaluations = bwd
    record.wall_time_s = loop.train_time
    record.validation_time_s = loop.validation_time
    # Every rank runs the same measurement (same weights, batch and seed), so the local count times the
    # number of ranks is the global one, on every rank and across a resume.
    record.policy_gradient_evaluations = loop.policy_backward * run.world
    return record


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for eb, b in zip(ema.buffers(), model.buffers(), strict=True):
            eb.copy_(b)


def _stage_cost(schedule: Schedule, loop: _Loop, forward: int, backward: int) -> dict[str, Any]:
    """Cost of the current stage from its start to now (training time only, validation excluded)."""
    fwd0, bwd0, t0 = loop.stage_start
    return {
        "stage": loop.stage_index,
        **schedule.stages[loop.stage_index].to_dict(),
        "forward_passes": forward - fwd0,
        "gradient_evaluations": backward - bwd0,
        "wall_time_s": round(loop.train_time - t0, 3),
    }


def _validate(model: nn.Module, val: Split, threat: ThreatModel, s: TrainSettings, seed: int) -> dict[str, float]:
    """Clean, FGSM and PGD accuracy; the attacks' generator is re-seeded so every epoch is comparable."""
    rng = torch.Generator(device=val.x.device).manual_seed(seed + 2)
    clean = accuracy(model, val)
    if threat.eps == 0:
        return {"val_clean_acc": round(clean, 4), "val_fgsm_acc": round(clean, 4), "val_robust_acc": round(clean, 4)}
    fgsm = robust_accuracy(model, val, FGSM(), threat).accuracy
    robust = robust_accuracy(model, val, PGD(n_steps=s.val_attack_steps), threat, rng=rng).accuracy
    return {"val_clean_acc": round(clean, 4), "val_fgsm_acc": round(fgsm, 4), "val_robust_acc": round(robust, 4)}


def _save(run: _Run, directory: Path, improved: bool) -> None:
    """Everything the next epoch depends on, in one atomic file (rank 0 writes; all ranks contribute RNG)."""
    device, loop, record = run.device, run.loop, run.record
    forward, backward = run.global_counts()
    tensors: dict[str, Tensor] = {}
    for name, gen in run.generators.items():
        for r, st in enumerate(ddp.gather_states(gen.get_state(), device)):
            tensors[f"rng.{name}.{r}"] = st
    for r, st in enumerate(ddp.gather_states(torch.get_rng_state(), device)):
        tensors[f"rng.torch.{r}"] = st
    if device.type == "cuda":
        for r, st in enumerate(ddp.gather_states(torch.cuda.get_rng_state(device), device)):
            tensors[f"rng.cuda.{r}"] = st
    if run.rank != 0:
        return
    tensors.update(ckpt.prefixed("model", _state_tensors(run.model)))
    if run.ema is not None:
        tensors.update(ckpt.prefixed("ema", _state_tensors(run.ema)))
    if run.best_state is not None:
        tensors.update(ckpt.prefixed("best", run.best_state))
    opt_tensors, opt_meta = ckpt.optimizer_state(run.optimizer)
    tensors.update(ckpt.prefixed("optim", opt_tensors))
    state_tensors = getattr(run.objective, "state_tensors", None)
    if state_tensors is not None:
        tensors.update(ckpt.prefixed("objective", state_tensors()))
    snapshot = TrainingRecord.from_dict(record.to_dict())
    snapshot.forward_passes, snapshot.gradient_evaluations = forward, backward
    snapshot.wall_time_s, snapshot.validation_time_s = loop.train_time, loop.validation_time
    meta = {
        "run": run.run_id,
        "loop": asdict(loop),
        "record": snapshot.to_dict(),
        "optimizer": opt_meta,
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
    }
    if improved and run.best_state is not None:
        ckpt.save_state(directory / ckpt.BEST, run.best_state, {"run": run.run_id, "best": record.best})
    ckpt.save_state(directory / ckpt.LAST, tensors, meta)


def _restore(run: _Run, path: Path) -> tuple[_Loop, dict[str, Tensor] | None]:
    """Weights, EMA, best state, optimizer, LR schedule, scaler, objective state, every generator and the
    record so far, from ``path``; refuses a checkpoint of another run."""
    tensors, meta = ckpt.load_state(path)
    device, model, ema, record, counter = run.device, run.model, run.ema, run.record, run.counter
    saved = json_roundtrip(run.run_id)
    if meta["run"] != saved:
        differing = sorted(k for k in saved if meta["run"].get(k) != saved[k])
        raise CheckpointError(
            f"{path} belongs to a different run (differs in: {', '.join(differing)}); "
            "resume with the same method, schedule, settings, seed, data and process count"
        )
    rank = run.rank
    model.load_state_dict(ckpt.unprefixed("model", tensors))
    if ema is not None:
        ema.load_state_dict(ckpt.unprefixed("ema", tensors))
    best = ckpt.unprefixed("best", tensors)
    best_state = {k: v.to(device) for k, v in best.items()} if best else None
    ckpt.load_optimizer_state(run.optimizer, ckpt.unprefixed("optim", tensors), meta["optimizer"], device)
    run.scheduler.load_state_dict(meta["scheduler"])
    if run.scaler is not None and meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])
    load_objective = getattr(run.objective, "load_state_tensors", None)
    if load_objective is not None:
        load_objective(ckpt.unprefixed("objective", tensors), device)
    for name, gen in run.generators.items():
        gen.set_state(tensors[f"rng.{name}.{rank}"])
    torch.set_rng_state(tensors[f"rng.torch.{rank}"])
    if device.type == "cuda" and f"rng.cuda.{rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], device)
    restored = TrainingRecord.from_dict(meta["record"])
    record.stages, record.history, record.events, record.best = (
        restored.stages,
        restored.history,
        restored.events,
        restored.best,
    )
    # Counts are all-reduced sums, so the saved global totals live on rank 0 only.
    counter.forward = restored.forward_passes if rank == 0 else 0
    counter.backward = restored.gradient_evaluations if rank == 0 else 0
    loop_meta = meta["loop"]
    loop = _Loop(
        epoch=loop_meta["epoch"],
        stage_index=loop_meta["stage_index"],
        stage_start=(int(loop_meta["stage_start"][0]), int(loop_meta["stage_start"][1]), loop_meta["stage_start"][2]),
        train_time=loop_meta["train_time"],
        validation_time=loop_meta["validation_time"],
        stopped=loop_meta["stopped"],
        policy_steps=int(loop_meta.get("policy_steps", 0)),
        policy_backward=int(loop_meta.get("policy_backward", 0)),
    )
    return loop, best_state


def json_roundtrip(obj: Any) -> Any:
    """What ``obj`` looks like after a trip through JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(obj))
