"""``bastion evaluate``: every saved model (and its saved runtime defense) under an attack suite.

A tabular model folder goes to :mod:`bastion.app.evaluate_tabular`, which reads its data through the
model's own preprocessing; image models rebuild their test split from their data SPEC and seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from bastion._typing import Norm
from bastion.app.config import EvalConfig
from bastion.app.evaluate_tabular import run_evaluate_tabular
from bastion.app.runtime import EvalPlan, Hooks, check_out_dir, resolve_device, threat_record, write_outputs
from bastion.artifacts.results import new_results
from bastion.data.sources import load_dataset
from bastion.data.spec import Dataset, Split
from bastion.defenses.store import load_defense
from bastion.errors import CheckpointError, ConfigError
from bastion.evaluation import distributed
from bastion.evaluation.suites import build_suite
from bastion.models import checkpoint
from bastion.threat import ThreatModel


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
    plan = EvalPlan(
        suite_name=cfg.suite,
        suite=build_suite(cfg.suite),
        threat=ThreatModel(norm=Norm(cfg.norm), eps=max(cfg.eps), domain=data.spec.domain),
        eps=cfg.eps,
        seed=cfg.seed,
        checks_examples=cfg.checks_examples,
        batch_size=cfg.batch_size,
        on_cell=hooks.on_cell,
        on_stage=hooks.stage,
    )
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
