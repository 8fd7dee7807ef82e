"""``bastion demo``: the dual-phase defense end to end on one dataset (digits by default).

Standard training against progressive TRADES, the runtime defense around the robust model, and every
model attacked by the same suite with its sanity checks; one run folder holds all of it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion._typing import Norm
from bastion.app.config import DemoConfig, TrainConfig
from bastion.app.parallel import Task, run_graph, worker_count
from bastion.app.runtime import (
    EvalPlan,
    Hooks,
    in_worker,
    plan_for,
    resolve_device,
    run_results,
    threat_record,
    write_run,
)
from bastion.app.train import save_trained, train_model
from bastion.data.sources import load_dataset
from bastion.data.spec import Dataset
from bastion.defenses.store import build_defense, load_defense, save_defense
from bastion.evaluation.headline import is_aa_grade
from bastion.evaluation.record import Evaluation
from bastion.evaluation.suites import build_suite
from bastion.models.checkpoint import load_model

QUICK_DEMO = {"epochs": 8, "suite": "quick", "n_examples": 200}
QUICK_DEFENSE = {"adaptive_steps": 10}
ROBUST = "progressive-trades"
DEFENDED = "+defense"
#: The demo's evaluation batch: the whole digits test split (360) in one.
EVAL_BATCH = 512


def demo_train_configs(cfg: DemoConfig) -> dict[str, TrainConfig]:
    """The two models the demo compares, on the same data, seed, budget and epochs."""
    common = {
        "data": cfg.data,
        "seed": cfg.seed,
        "device": cfg.device,
        "model": "cnn",
        "epochs": cfg.epochs,
        "eps": cfg.eps_train,
        "batch_size": 64,
    }
    progressive = {"method": ROBUST, "n_stages": 3, "n_steps": 10, "min_steps": 1, "beta": 6.0}
    return {
        "standard": TrainConfig.parse({**common, "method": "standard"}),
        ROBUST: TrainConfig.parse({**common, **progressive}),
    }


def demo_plan(cfg: DemoConfig, data: Dataset, hooks: Hooks | None = None) -> EvalPlan:
    """The one evaluation every demo model and the defense get. The test split is small enough to be one
    batch (512), so each AA-grade attack, and Square's probe, runs once per eps rather than once per batch."""
    return plan_for(
        cfg, data.spec.domain, norm=Norm.LINF, batch_size=EVAL_BATCH, on_cell=hooks.on_cell if hooks else None
    )


def train_part(cfg: DemoConfig, name: str, out: Path, hooks: Hooks | None = None) -> dict[str, Any]:
    """Train one demo model into ``out/models/NAME``; its training record."""
    data = load_dataset(cfg.data, seed=cfg.seed)
    model, arch, record = train_model(demo_train_configs(cfg)[name], data, resolve_device(cfg.device), hooks)
    save_trained(model, arch, data, record, out / "models" / name, cfg.seed)
    return record.to_dict()


def evaluate_part(cfg: DemoConfig, name: str, out: Path, hooks: Hooks | None = None) -> Evaluation:
    """Evaluate the saved model ``name`` on the test split; for ``ROBUST+defense``, first build the runtime
    defense around it (fitted on the training split, calibrated on validation) and save it to
    ``out/defenses/ROBUST``."""
    data = load_dataset(cfg.data, seed=cfg.seed)
    device = resolve_device(cfg.device)
    test = data.test.take(cfg.n_examples)
    plan = demo_plan(cfg, data, hooks)
    model = load_model(out / "models" / name.removesuffix(DEFENDED), device=device)
    if not name.endswith(DEFENDED):
        return plan.model(model, test)
    built = build_defense(model, cfg.defense, data.train.to(device), data.val.to(device), domain=data.spec.domain)
    save_defense(built, out / "defenses" / ROBUST)
    defended = load_defense(out / "defenses" / ROBUST, model)  # what was saved is what is evaluated
    return plan.defense(defended, test, adaptive=cfg.defense.adaptive, adaptive_steps=cfg.defense.adaptive_steps)


def demo_tasks(cfg: DemoConfig, out: Path, hooks: Hooks, workers: int) -> dict[str, Task]:
    """The two trainings and the three evaluations, each evaluation after the training it needs, longest
    first among those ready together: the standard model is evaluated while the robust one still trains."""

    def task(part: Callable[..., Any], name: str, after: tuple[str, ...] = ()) -> Task:
        if workers > 1:  # each worker reports its own progress through hooks.worker
            return Task(in_worker, (functools.partial(part, cfg, name, out), hooks.worker, name), after)
        return Task(part, (cfg, name, out, hooks), after)

    return {
        f"train {ROBUST}": task(train_part, ROBUST),
        "train standard": task(train_part, "standard"),
        f"evaluate {ROBUST + DEFENDED}": task(evaluate_part, ROBUST + DEFENDED, (f"train {ROBUST}",)),
        f"evaluate {ROBUST}": task(evaluate_part, ROBUST, (f"train {ROBUST}",)),
        "evaluate standard": task(evaluate_part, "standard", ("train standard",)),
    }


def run_demo(cfg: DemoConfig, out: Path, *, quick: bool = False, hooks: Hooks | None = None) -> dict[str, Any]:
    """The main job: standard vs progressive TRADES, the runtime defense, and an honest evaluation.

    The two trainings and the three evaluations are tasks, each evaluation after its training: on CPU they
    run in parallel worker processes (``cfg.workers``; bastion.app.parallel.run_graph).
    """
    hooks = hooks or Hooks()
    if quick:
        resolved = cfg.resolved()
        cfg = DemoConfig.parse({**resolved, **QUICK_DEMO, "defense": {**resolved["defense"], **QUICK_DEFENSE}})
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data, seed=cfg.seed)
    hooks.stage(f"data {data.spec.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    test = data.test.take(cfg.n_examples)
    results = run_results("demo", cfg, data, threat=threat_record("linf", cfg.eps, cfg.suite, build_suite(cfg.suite)))
    names = list(demo_train_configs(cfg))
    workers = worker_count(cfg.workers, device, 2)
    hooks.stage(
        f"training ({cfg.epochs} epochs) and evaluating on {len(test)} test examples: {', '.join(names)}, "
        f"{ROBUST + DEFENDED} ({workers} worker process(es))"
    )
    started = time.perf_counter()
    done = run_graph(
        demo_tasks(cfg, out, hooks, workers),
        workers,
        on_done=lambda name, _: hooks.stage(f"done: {name} ({time.perf_counter() - started:.0f} s)"),
    )
    records = [done[f"train {name}"] for name in names]
    by_name = {name: done[f"evaluate {name}"] for name in [*names, ROBUST + DEFENDED]}
    training = dict(zip(names, records, strict=True))
    for name in names:
        results["models"][name] = {"path": f"models/{name}", **by_name[name].to_dict(), "training": training[name]}
    dev = by_name[ROBUST + DEFENDED]
    results["models"][ROBUST + DEFENDED] = {"path": f"defenses/{ROBUST}", **dev.to_dict(), "training": training[ROBUST]}
    results["notes"] = demo_notes(cfg, dev)
    write_run(out, results, data, cfg.resolved(), "demo")
    return results


def demo_notes(cfg: DemoConfig, dev: Evaluation) -> list[str]:
    """What a reader must know to read the demo's numbers: where they come from and what they do not cover."""
    return [
        "All numbers are measured in this run on the held-out test split.",
        (
            "The defense is attacked by the suite (which ignores the detector) and by adaptive attacks "
            f"({', '.join(dev.defense['adaptive_attacks'])}): BPDA through non-differentiable transforms, "
            "EOT for randomized parts, a detector-aware objective, and transfer from the undefended model."
            if dev.defense and dev.defense.get("adaptive")
            else "The defense's detector is evaluated against attacks that do not try to evade it; "
            "detector-aware adaptive attacks would lower its detection rate."
        ),
        (
            f"Robust accuracy is the per-example worst case of the AA-grade suite `{cfg.suite}`."
            if is_aa_grade(cfg.suite)
            else f"Suite `{cfg.suite}` is a first line of evaluation, not AutoAttack-grade: its robust accuracy is "
            "an upper bound. `bastion demo` without --quick runs the AA-grade `standard` suite."
        ),
    ]
