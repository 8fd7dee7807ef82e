"""``bastion train``: build the architecture from the data, train it with a method, save the run folder."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion._typing import Norm
from bastion.app.config import TrainConfig
from bastion.app.runtime import Hooks, clear_run_entries, prepare_run_dir, resolve_device, run_results, write_run
from bastion.app.tracking import Tracking
from bastion.data.augment import build_augment
from bastion.data.sources import load_dataset
from bastion.data.spec import Dataset
from bastion.errors import CheckpointError, ConfigError
from bastion.evaluation.accuracy import accuracy
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, check_buildable, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import distributed as ddp
from bastion.training.methods import MethodConfig, build_method
from bastion.training.trainer import EpochHook, TrainingRecord, TrainSettings, fit

log = logging.getLogger(__name__)

TEACHER = "distillation-teacher"


def method_config(cfg: TrainConfig) -> MethodConfig:
    """The training method's settings in cfg: what ``build_method`` needs to build objective and schedule."""
    return MethodConfig.from_config(cfg.model_dump())


def train_model(
    cfg: TrainConfig,
    data: Dataset,
    device: torch.device,
    hooks: Hooks | None = None,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_epoch: EpochHook | None = None,
) -> tuple[nn.Module, Architecture, TrainingRecord]:
    """Build the architecture from the training data's statistics and train it with cfg's method.

    ``checkpoint_dir`` receives a resumable checkpoint after every epoch; ``resume`` continues from it.
    ``on_epoch`` receives each epoch's history entry and events (run tracking).
    """
    hooks = hooks or Hooks()
    if len(data.train) == 0:
        raise ConfigError(f"{data.spec.source} has no training examples (a test-only folder?); train on another SPEC")
    arch = architecture(cfg, data)
    model = build_model(arch, seed=cfg.seed).to(device)
    if cfg.init_from is not None:
        warm_start(model, cfg.init_from, arch)
    method_cfg = method_config(cfg)
    teacher_record = None
    if cfg.method == "distillation" and cfg.teacher is None and checkpoint_dir is not None:
        teacher_record = _train_teacher(cfg, data, device, hooks, checkpoint_dir, resume)
        method_cfg = replace(method_cfg, teacher=str(checkpoint_dir.parent / "models" / TEACHER))
    objective, schedule = build_method(cfg.method, method_cfg)
    rows = schedule.rows()
    for row in rows:
        log.info("%s schedule: %s", cfg.method, row)
    if hooks.on_schedule is not None:
        hooks.on_schedule(cfg.method, rows)
    record = fit(
        model,
        data.train,
        objective,
        schedule,
        ThreatModel(norm=Norm(cfg.norm), eps=cfg.eps, domain=data.spec.domain),
        settings=TrainSettings.from_config(cfg.model_dump()),
        val=data.val if cfg.val_examples > 0 else None,
        seed=cfg.seed,
        on_batch=hooks.on_batch,
        augment=build_augment(cfg.augment, data.spec),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_epoch=on_epoch,
    )
    if teacher_record is not None:
        record.add_teacher(teacher_record)
    return model, arch, record


def architecture(cfg: TrainConfig, data: Dataset) -> Architecture:
    """The architecture cfg asks for, sized by the data (normalization from the training inputs)."""
    mean, std = normalization_stats(data.train.x)
    return Architecture(
        name=cfg.model,
        input_shape=data.spec.input_shape,
        num_classes=data.spec.num_classes,
        mean=mean,
        std=std,
        options=dict(cfg.model_options),
    )


def warm_start(model: nn.Module, path: str, arch: Architecture) -> None:
    """Initial weights from a saved model of the same architecture (progressive TRADES warm start)."""
    source = checkpoint.load_model(path)
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"init_from {path}: its weights do not fit architecture {arch.name!r}: {exc}") from None


def _train_teacher(
    cfg: TrainConfig, data: Dataset, device: torch.device, hooks: Hooks, checkpoint_dir: Path, resume: bool
) -> TrainingRecord:
    """Defensive distillation's teacher (standard training at temperature T), saved next to the student."""
    teacher_dir = checkpoint_dir.parent / "models" / TEACHER
    teacher_cfg = TrainConfig.parse({**cfg.resolved(), "method": TEACHER})
    if resume and (teacher_dir / checkpoint.DESCRIPTION).is_file():
        return TrainingRecord.from_dict(checkpoint.read_description(teacher_dir)["training"])
    hooks.stage(f"training the distillation teacher at temperature {cfg.temperature:g}")
    model, arch, record = train_model(
        teacher_cfg, data, device, hooks, checkpoint_dir=checkpoint_dir / "teacher", resume=resume
    )
    if ddp.is_main():
        checkpoint.save_model(model, arch, data.spec, teacher_dir, extra={"training": record.to_dict()})
    ddp.barrier()
    return record


def save_trained(
    model: nn.Module, arch: Architecture, data: Dataset, record: TrainingRecord, model_dir: Path, seed: int
) -> None:
    """A trained model's folder: weights, architecture, data spec, and how it was trained."""
    checkpoint.save_model(
        model, arch, data.spec, model_dir, extra={"training": record.to_dict(), "seed": seed, "split": data.describe()}
    )


def run_train(
    cfg: TrainConfig,
    out: Path,
    hooks: Hooks | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """One model into ``out/models/METHOD`` with its training record.

    A resumable checkpoint goes to ``out/checkpoint/`` after every epoch; ``resume`` continues from it.
    An ``out`` that already holds a run is refused unless ``force`` replaces that run (its models,
    defenses, results and checkpoint are removed once training is about to start, so a later export never
    ships a stale model under the new provenance). Under torchrun every rank trains its shard and rank 0
    writes the run folder. ``tracking`` gets the config, every epoch's curves and events, and the results.
    """
    hooks = hooks or Hooks()
    tracking = tracking or Tracking()
    previous = prepare_run_dir(out, force=force, resume=resume)
    device = ddp.setup_from_env(resolve_device(cfg.device))
    try:
        return _run_train(cfg, out, hooks, device, resume, previous, tracking)
    finally:
        ddp.teardown()


def _run_train(
    cfg: TrainConfig,
    out: Path,
    hooks: Hooks,
    device: torch.device,
    resume: bool,
    previous: list[Path],
    tracking: Tracking,
) -> dict[str, Any]:
    if resume and not (out / "checkpoint" / "last.safetensors").is_file():
        raise CheckpointError(f"--resume: no checkpoint at {out / 'checkpoint' / 'last.safetensors'}")
    data = load_dataset(cfg.data, seed=cfg.seed)
    if len(data.train) > 0:  # bad model options fail here (on the meta device), before the old run is replaced
        check_buildable(architecture(cfg, data))
    if previous and ddp.is_main():
        log.info("replacing the previous run in %s (%s)", out, ", ".join(p.name for p in previous))
        clear_run_entries(previous)
    ddp.barrier()  # every rank, whatever it saw: no rank writes before the old run is gone
    hooks.stage(f"data {data.spec.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    tracking.config(cfg.resolved())
    model, arch, record = train_model(
        cfg, data, device, hooks, checkpoint_dir=out / "checkpoint", resume=resume, on_epoch=tracking.epoch
    )
    results = run_results("train", cfg, data)
    if not ddp.is_main():
        return results
    name = cfg.method
    save_trained(model, arch, data, record, out / "models" / name, cfg.seed)
    results["models"][name] = {
        "path": f"models/{name}",
        "clean_accuracy": round(accuracy(model, data.test.to(device)), 6),
        "n_examples": len(data.test),
        "robust_accuracy": {},
        "training": record.to_dict(),
    }
    write_run(out, results, data, cfg.resolved(), "train")
    tracking.results(results, out / "results.json")
    return results
