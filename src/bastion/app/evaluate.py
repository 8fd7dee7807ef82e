"""``bastion evaluate``: every saved model (and its saved runtime defense) under an attack suite.

A tabular model folder goes to :mod:`bastion.app.evaluate_tabular`, which reads its data through the
model's own preprocessing; image models rebuild their test split from their data SPEC and seed. A user's
own ``nn.Module`` (``module:PACKAGE.MODULE:FACTORY``, or :func:`evaluate_module` from Python) gets the same
suite, sanity checks and headline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.app.config import EvalConfig
from bastion.app.evaluate_tabular import run_evaluate_tabular
from bastion.app.runtime import (
    EvalPlan,
    Hooks,
    check_out_dir,
    plan_for,
    resolve_device,
    run_results,
    threat_record,
    write_outputs,
)
from bastion.artifacts.results import new_results
from bastion.data.sources import load_dataset
from bastion.data.spec import Dataset, Split
from bastion.defenses.store import load_defense
from bastion.domain import BoxDomain, InputDomain
from bastion.errors import CheckpointError, ConfigError, InputValidationError
from bastion.evaluation import distributed
from bastion.evaluation.record import Evaluation
from bastion.models import checkpoint
from bastion.models.external import ModuleSpec, build_module, check_module, describe_module, is_module_spec


def check_data_matches(model_dir: Path, data: Dataset) -> None:
    """A model is only evaluated on data of the shape and classes it was trained on."""
    spec = checkpoint.load_spec(model_dir)
    if spec.fingerprint() != data.spec.fingerprint():
        raise CheckpointError(
            f"model {model_dir} was trained on {spec.name} {spec.input_shape} with {spec.num_classes} classes; "
            f"{data.spec.source} provides {data.spec.name} {data.spec.input_shape} with {data.spec.num_classes}"
        )


def run_evaluate(path: Path, cfg: EvalConfig, out: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Every model (and saved defense) under a run folder, or one model folder; writes ``out``."""
    hooks = hooks or Hooks()
    check_out_dir(out)
    if is_module_spec(str(path)):
        return run_evaluate_module(str(path), cfg, out, hooks)
    device = resolve_device(cfg.device)
    models = checkpoint.model_dirs(path)
    description = checkpoint.read_description(next(iter(models.values())))
    if description["dataset"].get("modality") == "tabular":
        return run_evaluate_tabular(path, cfg, out, hooks, device=device)
    if cfg.save_adversarial:
        raise ConfigError(
            f"--save-adversarial writes adversarial records in a tabular file's format; {path} holds image "
            "models, for which it is not supported (drop the option)"
        )
    spec_str = cfg.data or description["dataset"]["source"]
    seed = cfg.seed if cfg.data else int(description.get("seed", cfg.seed))
    data = load_dataset(spec_str, seed=seed)
    test = data.test.take(cfg.n_examples)
    plan = _plan(cfg, data.spec.domain, hooks)
    results = new_results(
        command="evaluate",
        data=spec_str,
        seed=seed,
        split=data.describe(),
        config=cfg.resolved(),
        threat=threat_record(cfg.norm, cfg.eps, cfg.suite, plan.suite, sequential=plan.sequential),
        source=str(path),
    )
    distributed.init_from_env()
    records: dict[str, Any] = {}
    for name, model_dir in models.items():
        check_data_matches(model_dir, data)
        model = checkpoint.load_model(model_dir, device=device)
        entries, per_example = _evaluate_one(name, model, model_dir, Path(path) / "defenses" / name, test, plan, hooks)
        results["models"].update(entries)
        if per_example is not None:
            records[name] = per_example
    if distributed.is_main():
        write_outputs(out, results, records)
    return results


def _evaluate_one(
    name: str, model: nn.Module, model_dir: Path, defense_dir: Path, test: Split, plan: EvalPlan, hooks: Hooks
) -> tuple[dict[str, dict[str, Any]], Any]:
    """One model, then its saved defense if the run holds one: their results entries and per-example records."""
    hooks.stage(f"evaluating {name} on {len(test)} test examples")
    ev = plan.model(model, test)
    hooks.evaluated(name, ev)
    entry = {"path": str(model_dir), **ev.to_dict()}
    training = checkpoint.read_description(model_dir).get("training")
    if training:
        entry["training"] = training
    entries = {name: entry}
    if defense_dir.is_dir():
        defended = load_defense(defense_dir, model)
        hooks.stage(f"evaluating {name}+defense")
        dev = plan.defense(defended, test)
        hooks.evaluated(f"{name}+defense", dev)
        entries[f"{name}+defense"] = {"path": str(defense_dir), **dev.to_dict()}
    return entries, ev.records


def _plan(cfg: EvalConfig, domain: InputDomain, hooks: Hooks) -> EvalPlan:
    return plan_for(cfg, domain, norm=cfg.norm, batch_size=cfg.batch_size, on_cell=hooks.on_cell, on_stage=hooks.stage)


def evaluate_module(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | list[float],
    suite: str = "default",
    norm: str = "linf",
    domain: InputDomain | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    checks_examples: int = 100,
    batch_size: int = 256,
    hooks: Hooks | None = None,
) -> Evaluation:
    """Any ``nn.Module`` under an attack suite, with the sanity checks and the headline, as ``bastion evaluate``.

    Args:
        model: maps inputs in ``domain`` to logits (N, C); its own normalisation lives inside it. It is
            attacked on the device its parameters are on, in eval mode (its mode is restored).
        x: (N, *S) inputs inside ``domain``.  y: (N,) labels in [0, C).
        eps: one budget or several, in input units (pixels in [0, 1]).
        suite: a registered suite (``bastion.evaluation.suites.SUITES``); ``standard`` is AA-grade.
        domain: legal inputs; default the [0, 1] box.
        num_classes: C, checked against the model's output; default: the model's output width.
    Returns:
        The evaluation record; ``.headline`` is the figure to state, ``.to_dict()`` a results.json entry.
    Raises:
        ConfigError: unknown suite or norm, bad eps, or a model whose output is not (N, C) logits.
        InputValidationError: x outside the domain, or x and y disagree in length or type.
    """
    hooks = hooks or Hooks()
    cfg = EvalConfig.parse(
        {
            "suite": suite,
            "norm": norm,
            "eps": eps if isinstance(eps, list) else [eps],
            "seed": seed,
            "checks_examples": checks_examples,
            "batch_size": batch_size,
        },
        "evaluate_module",
    )
    domain = domain or BoxDomain.unit()
    parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    y = torch.as_tensor(y, device=device)
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.dim() != 1 or len(y) == 0:
        raise InputValidationError(
            f"y must be a non-empty 1-D tensor of integer labels, got {y.dtype} {tuple(y.shape)}"
        )
    test = Split(x, y.long())
    if not bool(domain.is_feasible(test.x).all()):
        raise InputValidationError(
            f"x lies outside the input domain {domain.to_dict()}: pass inputs in the data's own domain "
            "([0, 1] pixels) and keep the normalisation inside the model"
        )
    n_classes = check_module(model, test.x, num_classes)
    if int(test.y.min()) < 0 or int(test.y.max()) >= n_classes:
        raise InputValidationError(
            f"labels run from {int(test.y.min())} to {int(test.y.max())} but the model has {n_classes} outputs"
        )
    plan = _plan(cfg, domain, hooks)
    hooks.stage(f"evaluating {type(model).__name__} on {len(test)} examples")
    return plan.model(model, test)


def run_evaluate_module(spec_text: str, cfg: EvalConfig, out: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """``bastion evaluate module:PACKAGE.MODULE:FACTORY --data SPEC``: a user's model on a dataset's test split.

    The model is built by the factory, checked to map the data's inputs to (N, num_classes) logits, moved
    to the device and evaluated like a saved model; results.json records where it came from.
    """
    hooks = hooks or Hooks()
    spec = ModuleSpec.parse(spec_text)
    if cfg.data is None:
        raise ConfigError(f"{spec} needs --data SPEC: a user model carries no data of its own (e.g. --data digits)")
    if cfg.save_adversarial:
        raise ConfigError("--save-adversarial is for tabular bastion models; drop it for a module: model")
    device = resolve_device(cfg.device)
    model = build_module(spec).to(device)
    data = load_dataset(cfg.data, seed=cfg.seed)
    if data.spec.modality != "image":
        raise ConfigError(
            f"{spec}: {data.spec.source} is {data.spec.modality} data, evaluated through a bastion model's saved "
            "preprocessing and constraints; module: models are evaluated on image data"
        )
    test = data.test.take(cfg.n_examples).to(device)
    check_module(model, test.x, data.spec.num_classes, what=str(spec))
    plan = _plan(cfg, data.spec.domain, hooks)
    results = run_results(
        "evaluate",
        cfg,
        data,
        threat=threat_record(cfg.norm, cfg.eps, cfg.suite, plan.suite, sequential=plan.sequential),
        source=str(spec),
    )
    hooks.stage(f"evaluating {spec.name} on {len(test)} test examples")
    ev = plan.model(model, test)
    hooks.evaluated(spec.name, ev)
    results["models"][spec.name] = {"path": str(spec), "model": describe_module(model, spec), **ev.to_dict()}
    if distributed.is_main():
        write_outputs(out, results, {spec.name: ev.records} if ev.records is not None else None)
    return results
