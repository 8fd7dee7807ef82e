"""The jobs behind the CLI: train, evaluate and the demo. Each writes a run folder and returns results.

Run folder layout::

    RUN/run.json                      data SPEC, seed, split, resolved config, environment
    RUN/models/NAME/                  weights.safetensors + model.json (see bastion.models.checkpoint)
    RUN/defenses/NAME/                defense.json + detector.safetensors (see bastion.defenses.store)
    RUN/results.json                  versioned results (see bastion.artifacts.results)
    RUN/summary.md                    the same numbers, rendered
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion._typing import Norm
from bastion.app.config import DemoConfig, EvalConfig, TrainConfig
from bastion.app.tabular_runs import run_evaluate_tabular
from bastion.artifacts.results import environment, new_results, write_results
from bastion.attacks.worst_case import AttackSequence
from bastion.data.augment import build_augment
from bastion.data.sources import load_dataset
from bastion.data.spec import Dataset
from bastion.defenses.store import build_defense, load_defense, save_defense
from bastion.errors import CheckpointError, ConfigError
from bastion.evaluation import distributed
from bastion.evaluation.accuracy import accuracy
from bastion.evaluation.checks import CheckSettings, run_checks
from bastion.evaluation.evaluate import evaluate, evaluate_defense
from bastion.evaluation.record import Evaluation, eps_key
from bastion.evaluation.runner import CellHook
from bastion.evaluation.suites import build_suite
from bastion.io import atomic_write_json, atomic_write_text
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.render.summary import to_markdown
from bastion.threat import ThreatModel
from bastion.training import distributed as ddp
from bastion.training.methods import MethodConfig, build_method
from bastion.training.trainer import BatchHook, TrainingRecord, TrainSettings, fit

log = logging.getLogger(__name__)


@dataclass
class Hooks:
    """Progress callbacks the CLI plugs in (the library itself never prints)."""

    on_stage: Callable[[str], None] | None = None
    on_batch: BatchHook | None = None
    on_cell: CellHook | None = None
    on_schedule: Callable[[str, list[dict[str, Any]]], None] | None = None
    #: Called with (model name, Evaluation) after each model of ``run_evaluate``: per-example outcomes.
    on_evaluation: Callable[[str, Evaluation], None] | None = None

    def stage(self, text: str) -> None:
        log.info(text)
        if self.on_stage is not None:
            self.on_stage(text)


def _check_settings(n_examples: int, seed: int) -> CheckSettings:
    return CheckSettings(n_examples=n_examples, seed=seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else must be a valid, available device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device


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
) -> tuple[nn.Module, Architecture, TrainingRecord]:
    """Build the architecture from the training data's statistics and train it with cfg's method.

    ``checkpoint_dir`` receives a resumable checkpoint after every epoch; ``resume`` continues from it.
    """
    hooks = hooks or Hooks()
    if len(data.train) == 0:
        raise ConfigError(f"{data.spec.source} has no training examples (a test-only folder?); train on another SPEC")
    mean, std = normalization_stats(data.train.x)
    arch = Architecture(
        name=cfg.model,
        input_shape=data.spec.input_shape,
        num_classes=data.spec.num_classes,
        mean=mean,
        std=std,
        options=dict(cfg.model_options),
    )
    model = build_model(arch, seed=cfg.seed).to(device)
    if cfg.init_from is not None:
        _warm_start(model, cfg.init_from, arch)
    method_cfg = method_config(cfg)
    teacher_record = None
    if cfg.method == "distillation" and cfg.teacher is None and checkpoint_dir is not None:
        teacher_record = _train_teacher(cfg, data, device, hooks, checkpoint_dir, resume)
        method_cfg = replace(method_cfg, teacher=str(checkpoint_dir.parent / "models" / "distillation-teacher"))
    objective, schedule = build_method(cfg.method, method_cfg)
    rows = schedule.rows()
    for row in rows:
        log.info("%s schedule: %s", cfg.method, row)
    if hooks.on_schedule is not None:
        hooks.on_schedule(cfg.method, rows)
    settings = TrainSettings.from_config(cfg.model_dump())
    threat = ThreatModel(norm=Norm(cfg.norm), eps=cfg.eps, domain=data.spec.domain)
    record = fit(
        model,
        data.train,
        objective,
        schedule,
        threat,
        settings=settings,
        val=data.val if cfg.val_examples > 0 else None,
        seed=cfg.seed,
        on_batch=hooks.on_batch,
        augment=build_augment(cfg.augment, data.spec),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    if teacher_record is not None:
        # The teacher is part of the method's cost: its passes are added to the student's totals.
        record.forward_passes += teacher_record.forward_passes
        record.gradient_evaluations += teacher_record.gradient_evaluations
        record.wall_time_s += teacher_record.wall_time_s
        record.events.append({"kind": "teacher", **teacher_record.to_dict()})
    return model, arch, record


def _warm_start(model: nn.Module, path: str, arch: Architecture) -> None:
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
    teacher_dir = checkpoint_dir.parent / "models" / "distillation-teacher"
    teacher_cfg = TrainConfig.parse({**cfg.resolved(), "method": "distillation-teacher"})
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


def _model_entry(run_dir: Path, name: str, clean: float, n: int, record: TrainingRecord | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": f"models/{name}",
        "clean_accuracy": round(clean, 6),
        "n_examples": n,
        "robust_accuracy": {},
    }
    if record is not None:
        entry["training"] = record.to_dict()
    return entry


def _write_run(run_dir: Path, results: dict[str, Any], data: Dataset, config: dict[str, Any], command: str) -> None:
    atomic_write_json(
        run_dir / "run.json",
        {
            "command": command,
            "data": data.spec.source,
            "seed": data.seed,
            "split": data.describe(),
            "config": config,
            "environment": environment(),
        },
    )
    write_results(run_dir / "results.json", results)
    atomic_write_text(run_dir / "summary.md", to_markdown(results))


def run_train(cfg: TrainConfig, out: Path, hooks: Hooks | None = None, *, resume: bool = False) -> dict[str, Any]:
    """``bastion train``: one model into ``out/models/METHOD`` with its training record.

    A resumable checkpoint goes to ``out/checkpoint/`` after every epoch; ``resume`` continues from it.
    Under torchrun every rank trains its shard and rank 0 writes the run folder.
    """
    hooks = hooks or Hooks()
    device = ddp.setup_from_env(resolve_device(cfg.device))
    try:
        return _run_train(cfg, out, hooks, device, resume)
    finally:
        ddp.teardown()


def _run_train(cfg: TrainConfig, out: Path, hooks: Hooks, device: torch.device, resume: bool) -> dict[str, Any]:
    if resume and not (out / "checkpoint" / "last.safetensors").is_file():
        raise CheckpointError(f"--resume: no checkpoint at {out / 'checkpoint' / 'last.safetensors'}")
    data = load_dataset(cfg.data, seed=cfg.seed)
    hooks.stage(f"data {data.spec.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    model, arch, record = train_model(cfg, data, device, hooks, checkpoint_dir=out / "checkpoint", resume=resume)
    results = new_results(
        command="train", data=data.spec.source, seed=cfg.seed, split=data.describe(), config=cfg.resolved()
    )
    if not ddp.is_main():
        return results
    name = cfg.method
    checkpoint.save_model(
        model,
        arch,
        data.spec,
        out / "models" / name,
        extra={"training": record.to_dict(), "seed": cfg.seed, "split": data.describe()},
    )
    clean = accuracy(model, data.test.to(device))
    results["models"][name] = _model_entry(out, name, clean, len(data.test), record)
    _write_run(out, results, data, cfg.resolved(), "train")
    return results


def _check_data_matches(model_dir: Path, data: Dataset) -> None:
    spec = checkpoint.load_spec(model_dir)
    if spec.fingerprint() != data.spec.fingerprint():
        raise CheckpointError(
            f"model {model_dir} was trained on {spec.name} {spec.input_shape} with {spec.num_classes} classes; "
            f"{data.spec.source} provides {data.spec.name} {data.spec.input_shape} with {data.spec.num_classes}"
        )


def run_evaluate(path: Path, cfg: EvalConfig, out: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """``bastion evaluate``: every model (and saved defense) under a run folder, or one model folder."""
    hooks = hooks or Hooks()
    device = resolve_device(cfg.device)
    models = checkpoint.model_dirs(path)
    first = next(iter(models.values()))
    description = checkpoint.read_description(first)
    if description["dataset"].get("modality") == "tabular":
        return run_evaluate_tabular(path, cfg, out, hooks, device=device)
    spec_str = cfg.data or description["dataset"]["source"]
    seed = cfg.seed if cfg.data else int(description.get("seed", cfg.seed))
    data = load_dataset(spec_str, seed=seed)
    test = data.test.take(cfg.n_examples)
    suite = build_suite(cfg.suite)
    threat = ThreatModel(norm=Norm(cfg.norm), eps=max(cfg.eps), domain=data.spec.domain)
    results = new_results(
        command="evaluate",
        data=spec_str,
        seed=seed,
        split=data.describe(),
        config=cfg.resolved(),
        threat={
            "norm": cfg.norm,
            "eps": [eps_key(e) for e in cfg.eps],
            "suite": cfg.suite,
            "attacks": {k: repr(v) for k, v in suite.items()},
            "sequential": isinstance(suite, AttackSequence),
        },
        source=str(path),
    )
    distributed.init_from_env()
    records: dict[str, Any] = {}
    for name, model_dir in models.items():
        _check_data_matches(model_dir, data)
        model = checkpoint.load_model(model_dir, device=device)
        hooks.stage(f"evaluating {name} on {len(test)} test examples")
        ev, _ = evaluate(
            model,
            test,
            suite,
            threat,
            cfg.eps,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            on_cell=hooks.on_cell,
        )
        ev.checks = run_checks(model, test, ev, suite, threat, cfg.eps, _check_settings(cfg.checks_examples, cfg.seed))
        if hooks.on_evaluation is not None:
            hooks.on_evaluation(name, ev)
        if ev.records is not None:
            records[name] = ev.records
        entry = {"path": str(model_dir), **ev.to_dict()}
        training = checkpoint.read_description(model_dir).get("training")
        if training:
            entry["training"] = training
        results["models"][name] = entry
        defense_dir = Path(path) / "defenses" / name
        if defense_dir.is_dir():
            defended = load_defense(defense_dir, model)
            hooks.stage(f"evaluating {name}+defense")
            dev = evaluate_defense(
                defended,
                test,
                suite,
                threat,
                cfg.eps,
                seed=cfg.seed,
                batch_size=cfg.batch_size,
                on_cell=hooks.on_cell,
            )
            dev.checks = run_checks(
                defended, test, dev, suite, threat, cfg.eps, _check_settings(cfg.checks_examples, cfg.seed)
            )
            if hooks.on_evaluation is not None:
                hooks.on_evaluation(f"{name}+defense", dev)
            results["models"][f"{name}+defense"] = {"path": str(defense_dir), **dev.to_dict()}
    if not distributed.is_main():
        return results
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    atomic_write_text(out / "summary.md", to_markdown(results))
    if records:
        atomic_write_json(out / "records.json", records)
    return results


QUICK_DEMO = {"epochs": 8, "suite": "quick", "n_examples": 200}
QUICK_DEFENSE = {"adaptive_steps": 10}


def run_demo(cfg: DemoConfig, out: Path, *, quick: bool = False, hooks: Hooks | None = None) -> dict[str, Any]:
    """The main job: standard vs progressive TRADES, the runtime defense, and an honest evaluation."""
    hooks = hooks or Hooks()
    if quick:
        resolved = cfg.resolved()
        cfg = DemoConfig.parse({**resolved, **QUICK_DEMO, "defense": {**resolved["defense"], **QUICK_DEFENSE}})
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data, seed=cfg.seed)
    hooks.stage(f"data {data.spec.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    common = {
        "data": cfg.data,
        "seed": cfg.seed,
        "device": cfg.device,
        "model": "cnn",
        "epochs": cfg.epochs,
        "eps": cfg.eps_train,
        "batch_size": 64,
    }
    train_cfgs = {
        "standard": TrainConfig.parse({**common, "method": "standard"}),
        "progressive-trades": TrainConfig.parse(
            {
                **common,
                "method": "progressive-trades",
                "n_stages": 3,
                "n_steps": 10,
                "min_steps": 1,
                "beta": 6.0,
            }
        ),
    }
    suite = build_suite(cfg.suite)
    threat = ThreatModel(norm=Norm.LINF, eps=max(cfg.eps), domain=data.spec.domain)
    test = data.test.take(cfg.n_examples)
    results = new_results(
        command="demo",
        data=data.spec.source,
        seed=cfg.seed,
        split=data.describe(),
        config=cfg.resolved(),
        threat={
            "norm": "linf",
            "eps": [eps_key(e) for e in cfg.eps],
            "suite": cfg.suite,
            "attacks": {k: repr(v) for k, v in suite.items()},
        },
    )
    trained: dict[str, nn.Module] = {}
    for name, tcfg in train_cfgs.items():
        hooks.stage(f"training {name} ({tcfg.epochs} epochs)")
        model, arch, record = train_model(tcfg, data, device, hooks)
        trained[name] = model
        model_dir = out / "models" / name
        checkpoint.save_model(
            model,
            arch,
            data.spec,
            model_dir,
            extra={"training": record.to_dict(), "seed": cfg.seed, "split": data.describe()},
        )
        hooks.stage(f"evaluating {name} on {len(test)} test examples")
        ev, _ = evaluate(model, test, suite, threat, cfg.eps, seed=cfg.seed, on_cell=hooks.on_cell)
        ev.checks = run_checks(model, test, ev, suite, threat, cfg.eps, _check_settings(cfg.checks_examples, cfg.seed))
        results["models"][name] = {"path": f"models/{name}", **ev.to_dict(), "training": record.to_dict()}
    robust = trained["progressive-trades"]
    defended = build_defense(robust, cfg.defense, data.train.to(device), data.val.to(device), domain=data.spec.domain)
    save_defense(defended, out / "defenses" / "progressive-trades")
    hooks.stage("evaluating progressive-trades+defense")
    dev = evaluate_defense(
        defended,
        test,
        suite,
        threat,
        cfg.eps,
        seed=cfg.seed,
        on_cell=hooks.on_cell,
        adaptive=cfg.defense.adaptive,
        adaptive_steps=cfg.defense.adaptive_steps,
    )
    dev.checks = run_checks(defended, test, dev, suite, threat, cfg.eps, _check_settings(cfg.checks_examples, cfg.seed))
    results["models"]["progressive-trades+defense"] = {
        "path": "defenses/progressive-trades",
        **dev.to_dict(),
        "training": results["models"]["progressive-trades"]["training"],
    }
    results["notes"] = [
        "All numbers are measured in this run on the held-out test split.",
        (
            "The defense is attacked by the suite (which ignores the detector) and by adaptive attacks "
            f"({', '.join(dev.defense['adaptive_attacks'])}): BPDA through non-differentiable transforms, "
            "EOT for randomized parts, a detector-aware objective, and transfer from the undefended model."
            if dev.defense and dev.defense.get("adaptive")
            else "The defense's detector is evaluated against attacks that do not try to evade it; "
            "detector-aware adaptive attacks would lower its detection rate."
        ),
        f"Suite `{cfg.suite}` is a first line of evaluation, not AutoAttack-grade.",
    ]
    _write_run(out, results, data, cfg.resolved(), "demo")
    return results
