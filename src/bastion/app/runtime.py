"""What every job shares: progress hooks, the device, one evaluation plan, the run folder's files.

Run folder layout::

    RUN/run.json                      data SPEC, seed, split, resolved config, environment
    RUN/models/NAME/                  weights.safetensors + model.json (see bastion.models.checkpoint)
    RUN/defenses/NAME/                defense.json + detector.safetensors (see bastion.defenses.store)
    RUN/results.json                  versioned results (see bastion.artifacts.results)
    RUN/summary.md                    the same numbers, rendered
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from bastion._typing import Norm
from bastion.artifacts.results import environment, new_results, write_results
from bastion.attacks import Attack
from bastion.attacks.worst_case import AttackSequence
from bastion.data.spec import Dataset, Split
from bastion.defenses.pipeline import DefendedClassifier
from bastion.errors import ConfigError
from bastion.evaluation.checks import CheckSettings, run_checks
from bastion.evaluation.evaluate import evaluate, evaluate_defense
from bastion.evaluation.headline import grade_label, headline, is_aa_grade
from bastion.evaluation.record import Evaluation, eps_key
from bastion.evaluation.runner import CellHook
from bastion.evaluation.suites import build_suite
from bastion.io import atomic_write_json, atomic_write_text
from bastion.render.summary import to_markdown
from bastion.threat import ThreatModel
from bastion.training.trainer import BatchHook

if TYPE_CHECKING:
    from bastion.app.config import DemoConfig, EvalConfig, TrainConfig
    from bastion.domain import InputDomain

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class Hooks:
    """Progress callbacks the CLI plugs in (the library itself never prints)."""

    on_stage: Callable[[str], None] | None = None
    on_batch: BatchHook | None = None
    on_cell: CellHook | None = None
    on_schedule: Callable[[str, list[dict[str, Any]]], None] | None = None
    #: Called with (model name, Evaluation) after each evaluated model: per-example outcomes.
    on_evaluation: Callable[[str, Evaluation], None] | None = None
    #: A picklable ``label -> context manager yielding Hooks`` a worker process reports through itself.
    worker: Callable[[str], AbstractContextManager[Hooks]] | None = None

    def stage(self, text: str) -> None:
        log.info(text)
        if self.on_stage is not None:
            self.on_stage(text)

    def evaluated(self, name: str, ev: Evaluation) -> None:
        if self.on_evaluation is not None:
            self.on_evaluation(name, ev)


def in_worker(fn: Callable[..., R], worker: Callable[[str], AbstractContextManager[Hooks]] | None, label: str) -> R:
    """``fn(hooks=...)`` in a worker process, with hooks from ``worker(label)`` (or none): the worker reports
    its own progress, since the parent's hooks do not cross processes."""
    if worker is None:
        return fn(hooks=None)
    with worker(label) as hooks:
        return fn(hooks=hooks)


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


def threat_record(
    norm: str, eps: Sequence[float], suite_name: str, suite: dict[str, Attack], **extra: Any
) -> dict[str, Any]:
    """The results.json ``threat`` block: what was attacked with, stated once per run."""
    return {
        "norm": norm,
        "eps": [eps_key(e) for e in eps],
        "suite": suite_name,
        "aa_grade": is_aa_grade(suite_name),
        "grade": grade_label(suite_name, suite),
        "attacks": {k: v.describe() for k, v in suite.items()},
        **extra,
    }


@dataclass(frozen=True)
class EvalPlan:
    """One job's evaluation settings, applied alike to every model and defense it evaluates.

    Each measurement runs the suite, then the sanity checks on the same threat model, so no figure is
    reported without the checks that say whether to trust it.
    """

    suite_name: str
    suite: dict[str, Attack]
    threat: ThreatModel
    eps: Sequence[float]
    seed: int
    checks_examples: int
    batch_size: int = 256
    on_cell: CellHook | None = None
    #: Told when the sanity checks start: they attack again, and take a while on a large model.
    on_stage: Callable[[str], None] | None = None

    @property
    def sequential(self) -> bool:
        return isinstance(self.suite, AttackSequence)

    def model(self, model: nn.Module, test: Split) -> Evaluation:
        ev, _ = evaluate(model, test, self.suite, self.threat, self.eps, **self._options())
        return self._checked(model, test, ev)

    def defense(self, defended: DefendedClassifier, test: Split, **adaptive: Any) -> Evaluation:
        """``adaptive`` forwards ``adaptive`` / ``adaptive_steps`` to :func:`evaluate_defense`."""
        ev = evaluate_defense(defended, test, self.suite, self.threat, self.eps, **self._options(), **adaptive)
        return self._checked(defended, test, ev)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch_size": self.batch_size, "on_cell": self.on_cell}

    def _checked(self, model: nn.Module, test: Split, ev: Evaluation) -> Evaluation:
        settings = CheckSettings(n_examples=self.checks_examples, seed=self.seed)
        if self.on_stage is not None and self.checks_examples > 0:
            self.on_stage(f"sanity checks on {min(self.checks_examples, len(test))} test examples")
        ev.checks = run_checks(model, test, ev, self.suite, self.threat, self.eps, settings)
        ev.headline = headline(ev, self.suite_name, self.suite)
        return ev


#: What a run folder holds (and ``train --force`` replaces); any other file in it is left alone.
RUN_ENTRIES = ("run.json", "results.json", "summary.md", "records.json", "models", "defenses", "checkpoint")


def plan_for(
    cfg: EvalConfig | DemoConfig,
    domain: InputDomain,
    *,
    norm: str,
    batch_size: int,
    on_cell: CellHook | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> EvalPlan:
    """The evaluation a config asks for: its suite, up to its largest eps under ``norm``, with its seed."""
    return EvalPlan(
        suite_name=cfg.suite,
        suite=build_suite(cfg.suite),
        threat=ThreatModel(norm=Norm(norm), eps=max(cfg.eps), domain=domain),
        eps=cfg.eps,
        seed=cfg.seed,
        checks_examples=cfg.checks_examples,
        batch_size=batch_size,
        on_cell=on_cell,
        on_stage=on_stage,
    )


def run_results(
    command: str, cfg: TrainConfig | EvalConfig | DemoConfig, data: Dataset, **extra: Any
) -> dict[str, Any]:
    """A new results.json document for a job on ``data``, with the config it resolved (``extra``: the threat,
    the model source)."""
    return new_results(
        command=command, data=data.spec.source, seed=cfg.seed, split=data.describe(), config=cfg.resolved(), **extra
    )


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that is an existing file, or lies under one, before any work is done."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            what = f"{out}" if path == out else f"{out} (its parent {path})"
            raise ConfigError(f"{option} {what} is an existing file, not a folder; choose another {option}")


def prepare_run_dir(out: Path, *, force: bool, resume: bool) -> list[Path]:
    """Check that training may write the run folder ``out``; return the previous run's entries to replace.

    A folder holding a previous run (any of :data:`RUN_ENTRIES`) is refused unless ``force`` (replace that
    run: its entries are removed by :func:`clear_run_entries` once the new training is about to start) or
    ``resume`` (continue it). Other files in ``out`` are never touched.

    Raises:
        ConfigError: ``out`` is a file, or holds a run and neither ``force`` nor ``resume`` is set.
    """
    check_out_dir(out)
    if resume or not out.is_dir():
        return []
    previous = [out / name for name in RUN_ENTRIES if (out / name).exists() or (out / name).is_symlink()]
    if previous and not force:
        names = ", ".join(p.name for p in previous)
        raise ConfigError(
            f"--out {out} already holds a run ({names}); pass --force to replace that run, --resume to continue "
            "it, or choose another --out"
        )
    return previous


def clear_run_entries(entries: Sequence[Path]) -> None:
    """Remove a previous run's entries (see :func:`prepare_run_dir`), so no stale model survives a rerun."""
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_outputs(out: Path, results: dict[str, Any], records: dict[str, Any] | None = None) -> None:
    """results.json, summary.md and (when given) per-example records.json, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    atomic_write_text(out / "summary.md", to_markdown(results))
    if records:
        atomic_write_json(out / "records.json", records)


def write_run(run_dir: Path, results: dict[str, Any], data: Dataset, config: dict[str, Any], command: str) -> None:
    """A run folder's run.json (what produced it) next to its results."""
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
    write_outputs(run_dir, results)


#: Per-model keys of results.json that ``--json`` prints: the figures, not the per-class, ROC and cost detail.
DOCUMENT_MODEL_KEYS = (
    "path",
    "clean_accuracy",
    "clean_accuracy_ci",
    "n_examples",
    "denominator",
    "headline",
    "robust_accuracy",
    "robust_accuracy_ci",
    "checks",
)


def results_document(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """What ``--json`` prints: results.json cut to its headline, in results.json's own keys (schema 1).

    Per model the headline (the worst case per eps, AA-grade or an upper bound, with its label), clean
    accuracy, every attack's robust accuracy by name and the sanity checks; a training's method, cost and
    final epoch; a defense's false-positive and worst-case failure rates. ``results`` names the full file.
    """
    models: dict[str, Any] = {}
    for name, m in results["models"].items():
        entry = {k: m[k] for k in DOCUMENT_MODEL_KEYS if k in m}
        training = m.get("training")
        if training:
            entry["training"] = {
                k: training[k] for k in ("method", "gradient_evaluations", "wall_time_s") if k in training
            }
            if training.get("history"):
                entry["training"]["history"] = training["history"][-1:]
        defense = m.get("defense")
        if defense:
            entry["defense"] = {
                k: defense[k]
                for k in ("false_positive_rate", "false_positive_rate_ci", "failure_rate", "adaptive")
                if k in defense
            }
        models[name] = entry
    document: dict[str, Any] = {
        k: results[k] for k in ("schema", "command", "created", "data", "seed", "threat") if k in results
    }
    document["results"] = str(out / "results.json")
    document["models"] = models
    return document
