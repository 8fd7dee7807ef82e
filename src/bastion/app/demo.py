"""``bastion demo``: the dual-phase defense end to end on one dataset (digits by default).

Standard training against progressive TRADES, the runtime defense around the robust model, and every
model attacked by the same suite with its sanity checks; one run folder holds all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion._typing import Norm
from bastion.app.config import DemoConfig, TrainConfig
from bastion.app.runtime import EvalPlan, Hooks, resolve_device, threat_record, write_run
from bastion.app.train import save_trained, train_model
from bastion.artifacts.results import new_results
from bastion.data.sources import load_dataset
from bastion.defenses.store import build_defense, save_defense
from bastion.evaluation.headline import is_aa_grade
from bastion.evaluation.record import Evaluation
from bastion.evaluation.suites import build_suite
from bastion.threat import ThreatModel

QUICK_DEMO = {"epochs": 8, "suite": "quick", "n_examples": 200}
QUICK_DEFENSE = {"adaptive_steps": 10}
ROBUST = "progressive-trades"


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


def run_demo(cfg: DemoConfig, out: Path, *, quick: bool = False, hooks: Hooks | None = None) -> dict[str, Any]:
    """The main job: standard vs progressive TRADES, the runtime defense, and an honest evaluation."""
    hooks = hooks or Hooks()
    if quick:
        resolved = cfg.resolved()
        cfg = DemoConfig.parse({**resolved, **QUICK_DEMO, "defense": {**resolved["defense"], **QUICK_DEFENSE}})
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data, seed=cfg.seed)
    hooks.stage(f"data {data.spec.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    plan = EvalPlan(
        suite_name=cfg.suite,
        suite=build_suite(cfg.suite),
        threat=ThreatModel(norm=Norm.LINF, eps=max(cfg.eps), domain=data.spec.domain),
        eps=cfg.eps,
        seed=cfg.seed,
        checks_examples=cfg.checks_examples,
        on_cell=hooks.on_cell,
    )
    test = data.test.take(cfg.n_examples)
    results = new_results(
        command="demo",
        data=data.spec.source,
        seed=cfg.seed,
        split=data.describe(),
        config=cfg.resolved(),
        threat=threat_record("linf", cfg.eps, cfg.suite, plan.suite),
    )
    trained = {}
    for name, tcfg in demo_train_configs(cfg).items():
        hooks.stage(f"training {name} ({tcfg.epochs} epochs)")
        model, arch, record = train_model(tcfg, data, device, hooks)
        trained[name] = model
        save_trained(model, arch, data, record, out / "models" / name, cfg.seed)
        hooks.stage(f"evaluating {name} on {len(test)} test examples")
        ev = plan.model(model, test)
        results["models"][name] = {"path": f"models/{name}", **ev.to_dict(), "training": record.to_dict()}
    defended = build_defense(
        trained[ROBUST], cfg.defense, data.train.to(device), data.val.to(device), domain=data.spec.domain
    )
    save_defense(defended, out / "defenses" / ROBUST)
    hooks.stage(f"evaluating {ROBUST}+defense")
    dev = plan.defense(defended, test, adaptive=cfg.defense.adaptive, adaptive_steps=cfg.defense.adaptive_steps)
    results["models"][f"{ROBUST}+defense"] = {
        "path": f"defenses/{ROBUST}",
        **dev.to_dict(),
        "training": results["models"][ROBUST]["training"],
    }
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
