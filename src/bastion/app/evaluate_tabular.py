"""``bastion evaluate`` for tabular models: the model's own preprocessing, asymmetric evasion, export.

A tabular model folder's model.json holds its dataset spec, whose TabularDomain holds the fitted
preprocessing. ``--data SPEC`` is read through that preprocessing (every row of the file is a test row;
nothing is refitted); without it, the model's own data SPEC and seed rebuild its test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bastion._typing import Norm
from bastion.app.config import EvalConfig
from bastion.app.runtime import Hooks, threat_record, write_outputs
from bastion.artifacts.results import new_results
from bastion.attacks import Attack
from bastion.data import TabularData, load_tabular
from bastion.data.spec import Split
from bastion.data.tabular.domain import TabularDomain
from bastion.data.tabular.export import write_records
from bastion.errors import CheckpointError, ConfigError, DataFormatError
from bastion.evaluation.checks import CheckSettings, run_checks
from bastion.evaluation.headline import headline
from bastion.evaluation.record import ENSEMBLE, Evaluation, eps_key
from bastion.evaluation.runner import model_device
from bastion.evaluation.suites import build_suite
from bastion.evaluation.tabular import TabularAttackOutcome, evaluate_tabular, malicious_rows
from bastion.models import checkpoint
from bastion.threat import ThreatModel


def model_domain(model_dir: Path) -> TabularDomain:
    spec = checkpoint.load_spec(model_dir)
    if not isinstance(spec.domain, TabularDomain):
        raise CheckpointError(f"{model_dir} is not a tabular model (its domain is {type(spec.domain).__name__})")
    return spec.domain


def load_eval_data(model_dir: Path, cfg: EvalConfig, description: dict[str, Any]) -> TabularData:
    """The test rows through the model's own preprocessing (see the module docstring)."""
    domain = model_domain(model_dir)
    on_bad_rows = getattr(cfg, "on_bad_rows", None)
    if cfg.data:
        return load_tabular(cfg.data, seed=cfg.seed, preprocessor=domain.preprocessor, on_bad_rows=on_bad_rows)
    source = description["dataset"]["source"]
    seed = int(description.get("seed", cfg.seed))
    data = load_tabular(source, seed=seed, on_bad_rows=on_bad_rows)
    if data.preprocessor.to_dict() != domain.preprocessor.to_dict():
        raise CheckpointError(
            f"rebuilding {source} with seed {seed} fits a different preprocessing than {model_dir} holds; "
            "pass the test file with --data so the model's own preprocessing is used"
        )
    return TabularData(data.dataset, domain.preprocessor, data.tables, data.kind, data.options)


def run_evaluate_tabular(
    path: Path, cfg: EvalConfig, out: Path, hooks: Hooks | None = None, *, device: torch.device | None = None
) -> dict[str, Any]:
    """Every tabular model under ``path`` on the test rows, on ``device`` (default CPU), with the sanity
    checks; writes results.json, summary.md and, with ``cfg.save_adversarial``, the adversarial records of
    the first model (strongest budget)."""
    device = device or torch.device("cpu")
    hooks = hooks or Hooks()
    models = checkpoint.model_dirs(path)
    first = next(iter(models.values()))
    description = checkpoint.read_description(first)
    data = load_eval_data(first, cfg, description)
    test = data.dataset.test
    table = data.tables["test"]
    if cfg.n_examples is not None:
        test = test.take(cfg.n_examples)
        table = table.select(np.arange(len(test)))
    suite = build_suite(cfg.suite)
    spec = data.dataset.spec
    if spec.benign is None:
        raise ConfigError(f"{spec.name} has no benign class; evasion needs one")
    source = cfg.data or description["dataset"]["source"]
    if len(test) == 0:
        raise DataFormatError(f"{source}: the test split holds no rows to evaluate on")
    n_malicious = int((test.y != spec.benign).sum())
    if n_malicious == 0:
        raise DataFormatError(
            f"{source}: none of the {len(test)} test rows is malicious (all are {spec.classes[spec.benign]!r}); "
            "an evasion evaluation attacks malicious rows, so there is nothing to measure"
        )
    results = new_results(
        command="evaluate",
        data=cfg.data or description["dataset"]["source"],
        seed=cfg.seed,
        split=data.dataset.describe(),
        config=cfg.resolved(),
        threat=threat_record(cfg.norm, cfg.eps, cfg.suite, suite, domain=repr(spec.domain)),
        source=str(path),
        bad_rows={"count": table.bad_rows.count, "rows": [list(r) for r in table.bad_rows.rows[:100]]},
    )
    saved = False
    for name, model_dir in models.items():
        domain = model_domain(model_dir)
        if domain.preprocessor.to_dict() != data.preprocessor.to_dict():
            raise CheckpointError(f"{model_dir} was trained with another preprocessing than {first}")
        model = checkpoint.load_model(model_dir, device=device)
        hooks.stage(f"evaluating {name} on {len(test)} rows ({int((test.y != spec.benign).sum())} malicious)")
        ev, outcomes = evaluate_and_check(model, test, table.features, domain, spec.benign, suite, cfg, hooks)
        hooks.evaluated(name, ev)
        training = checkpoint.read_description(model_dir).get("training")
        entry = ev.to_dict()
        results["models"][name] = {"path": str(model_dir), **entry, **({"training": training} if training else {})}
        target = getattr(cfg, "save_adversarial", None)
        if target and not saved:
            margin = float(getattr(cfg, "min_margin", 0.0))
            written = save_adversarial(
                Path(target), data, table, test, domain, outcomes, spec.benign, max(cfg.eps), margin
            )
            results["adversarial_file"] = str(target)
            results["adversarial_records"] = written
            saved = True
    write_outputs(out, results)
    return results


def evaluate_and_check(
    model: nn.Module,
    test: Split,
    raw: pd.DataFrame,
    domain: TabularDomain,
    benign: int,
    suite: dict[str, Attack],
    cfg: EvalConfig,
    hooks: Hooks,
) -> tuple[Evaluation, dict[tuple[str, float], TabularAttackOutcome]]:
    """One model's evasion evaluation and its sanity checks, which attack the same malicious rows toward
    benign within the same constrained threat model."""
    ev, outcomes = evaluate_tabular(
        model,
        test,
        raw,
        domain,
        benign,
        suite,
        cfg.norm,
        cfg.eps,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        on_cell=hooks.on_cell,
    )
    target = malicious_rows(test.to(model_device(model)), raw, domain, benign)
    threat = ThreatModel(norm=Norm(cfg.norm), eps=max(cfg.eps), domain=domain)
    settings = CheckSettings(n_examples=cfg.checks_examples, seed=cfg.seed)
    ev.checks = run_checks(model, target.split, ev, suite, threat, cfg.eps, settings, target=target)
    ev.headline = headline(ev, cfg.suite, suite)
    return ev, outcomes


def save_adversarial(
    target: Path,
    data: TabularData,
    table: Any,
    test: Any,
    domain: TabularDomain,
    outcomes: dict[tuple[str, float], TabularAttackOutcome],
    benign: int,
    eps: float,
    min_margin: float = 0.0,
) -> dict[str, Any]:
    """Write the real evasions at ``eps``: malicious rows the model detected clean and an attack turned
    into a valid record classified benign (by ``min_margin`` at least), each with the first attack's
    example that did, in the input's own textual format. The sidecar gives per row its line, the attack,
    the budget, the benign margin, how many rules the validator checked and which fields changed.

    Returns what was written: counts and the constraint set's id, for results.json.
    """
    malicious = np.flatnonzero((test.y != benign).cpu().numpy())
    names = [a for a, e in outcomes if e == eps and a != ENSEMBLE]
    n = len(malicious)
    chosen = torch.zeros_like(outcomes[(names[0], eps)].x_adv) if names else test.x[malicious].cpu()
    which = np.array([""] * n, dtype=object)
    margin = np.zeros(n)
    written = np.zeros(n, dtype=bool)
    for name in names:
        o = outcomes[(name, eps)]
        hit = o.real_evasions(min_margin).numpy() & ~written
        chosen[hit] = o.x_adv[hit]
        which[hit] = name
        if o.margin is not None:
            margin[hit] = o.margin.numpy()[hit]
        written |= hit
    rows = np.flatnonzero(written)
    constraints = domain.constraints
    records = domain.textual_records(chosen[rows]) if len(rows) else table.features.iloc[:0].copy()
    if constraints is not None:
        records = constraints.rounded(records)
    original = table.select(malicious[rows])
    clean = test.x[malicious[rows]].cpu()
    pre = domain.preprocessor
    changed: list[list[str]] = [[] for _ in rows]
    for name in pre.schema_.names:  # unchanged features keep their exact original value
        cols = pre.feature_slices_[name]
        same = (chosen[rows][:, cols] == clean[:, cols]).all(dim=1).numpy()
        values = records[name].to_numpy(copy=True)
        values[same] = original.features[name].to_numpy()[same]
        records[name] = values
        for i in np.flatnonzero(~same):
            changed[i].append(name)
    n_checked = len(pre.schema_.relations) + (
        0 if constraints is None else len(constraints.rules) + len(constraints.grids) + len(constraints.relations)
    )
    write_records(
        target,
        records.reset_index(drop=True),
        original,
        header=data.has_header,
        formats=None if constraints is None else constraints.formatters(),
        sidecar={
            "attack": which[rows].tolist(),
            "eps": [eps_key(eps)] * len(rows),
            "margin": [f"{m:.4f}" for m in margin[rows]],
            "rules_checked": [n_checked] * len(rows),
            "changed_fields": [";".join(c) for c in changed],
        },
    )
    first = outcomes[(names[0], eps)] if names else None
    missed = 0 if first is None or first.clean_detected is None else int((~first.clean_detected).sum())
    return {
        "file": str(target),
        "eps": eps_key(eps),
        "n_written": len(rows),
        "n_malicious": n,
        "clean_missed_not_written": missed,
        "min_margin": min_margin,
        "rules_checked": n_checked,
        "constraints": None if constraints is None else constraints.set_hash()[:16],
    }
