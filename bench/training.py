"""Training methods head to head: same architecture, data, epochs, seed and budget.

Trains standard, PGD-AT, TRADES, fast AT (N-FGSM) and progressive multi-stage TRADES (two schedules) on
the real MNIST split, evaluates each on the test split under FGSM and PGD-50 with 2 restarts, and writes
DIR/results.json (schema 1, one model entry per method with its ``training`` block) plus the saved models.

    python bench/training.py --out runs/bench-training            # MNIST (../shared/data/mnist)
    python bench/training.py --out /tmp/b --data digits --epochs 2 --n-eval 200   # smoke run

Compute is counted (per-example forward passes and gradient evaluations); ratios are taken within
this one run because the machine's speed varies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bastion.artifacts.results import new_results, write_results
from bastion.data.sources import load_dataset
from bastion.evaluation.evaluate import ENSEMBLE, eps_key, evaluate
from bastion.evaluation.suites import build_suite
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, Schedule, TrainSettings, build_method, fit
from bastion.training.objectives import TRADES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = f"mnist:{REPO.parent / 'shared' / 'data' / 'mnist'}"


def progressive_variants(epochs: int, eps: float, n_steps: int) -> dict[str, list[dict[str, Any]]]:
    """Two hand-written schedules of the same length as the baselines (the schedule search space here).

    ``grow-eps``: half the epochs single-step at eps/2, then single-step at eps, then a final epoch
    block at full strength. ``grow-steps``: full eps throughout, steps grow from 1 to n_steps // 2 + 1.
    """
    half = max(1, epochs // 2)
    last = max(1, epochs - half - 1) if epochs > 2 else 1
    mid = epochs - half - last
    grow_eps = [{"epochs": half, "eps": eps / 2, "n_steps": 1}]
    if mid > 0:
        grow_eps.append({"epochs": mid, "eps": eps, "n_steps": 1})
    grow_eps.append({"epochs": last, "eps": eps, "n_steps": n_steps})
    grow_steps = [
        {"epochs": half, "eps": eps, "n_steps": 1},
        {"epochs": epochs - half, "eps": eps, "n_steps": n_steps // 2 + 1},
    ]
    return {"progressive-trades": grow_eps, "progressive-trades-steps": grow_steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--eps", type=float, default=0.1, help="training and evaluation budget (L-inf, pixels in [0, 1])")
    p.add_argument("--steps", type=int, default=5, help="PGD-AT / TRADES inner steps")
    p.add_argument("--beta", type=float, default=6.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-eval", type=int, default=500, help="test examples attacked")
    p.add_argument(
        "--n-eval-suite", type=int, default=200, help="test examples for the standard (AutoAttack-grade) suite; 0: skip"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods to run")
    p.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='extra progressive-TRADES schedule, e.g. p2=\'[{"epochs": 2, "eps": 0.05, "n_steps": 1}, ...]\'',
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)

    data = load_dataset(args.data, seed=args.seed)
    mean, std = normalization_stats(data.train.x)
    arch = Architecture(
        name="cnn",
        input_shape=data.spec.input_shape,
        num_classes=data.spec.num_classes,
        mean=mean,
        std=std,
        options={"channels": [8, 16], "hidden": 64},
    )
    threat = ThreatModel(norm="linf", eps=args.eps, domain=data.spec.domain)
    settings = TrainSettings(batch_size=args.batch_size, val_examples=200, lr=1e-3)
    base = MethodConfig(epochs=args.epochs, eps=args.eps, n_steps=args.steps, beta=args.beta)
    variants = progressive_variants(args.epochs, args.eps, args.steps)
    for stages in variants.values():
        for st in stages:
            st["beta"] = args.beta
    # The methods the goal compares first, so an interrupted run still answers it.
    plans: dict[str, tuple[Any, Schedule]] = {
        "trades": build_method("trades", base),
        "progressive-trades": (TRADES(name="progressive-trades"), Schedule.from_list(variants["progressive-trades"])),
        "pgd-at": build_method("pgd-at", base),
        "fast-at": build_method("fast-at", base),
        "standard": build_method("standard", base),
        "progressive-trades-steps": (
            TRADES(name="progressive-trades-steps"),
            Schedule.from_list(variants["progressive-trades-steps"]),
        ),
    }
    for spec in args.schedule:
        name, _, stages_json = spec.partition("=")
        stages = json.loads(stages_json)
        for st in stages:
            st.setdefault("beta", args.beta)
        plans[f"progressive-trades-{name}"] = (TRADES(name=f"progressive-trades-{name}"), Schedule.from_list(stages))
    if args.methods:
        plans = {k: v for k, v in plans.items() if k in args.methods}
    suite = build_suite("default")
    strong = build_suite("standard")
    test = data.test.take(args.n_eval)
    results = new_results(
        command="bench-training",
        data=data.spec.source,
        seed=args.seed,
        split=data.describe(),
        config={**vars(args), "out": str(args.out), "architecture": arch.to_dict(), "settings": settings.__dict__},
        threat={
            "norm": "linf",
            "eps": [eps_key(args.eps)],
            "suite": "default + standard",
            "attacks": {k: repr(v) for k, v in {**suite, **strong}.items()},
        },
    )
    rows = []
    for name, (objective, schedule) in plans.items():
        model = build_model(arch, seed=args.seed)
        logging.info("training %s: %s", name, schedule.rows())
        record = fit(model, data.train, objective, schedule, threat, settings=settings, val=data.val, seed=args.seed)
        model_dir = args.out / "models" / name
        checkpoint.save_model(
            model,
            arch,
            data.spec,
            model_dir,
            extra={"training": record.to_dict(), "seed": args.seed, "split": data.describe()},
        )
        t0 = time.perf_counter()
        ev, _ = evaluate(model, test, suite, threat, [args.eps], seed=args.seed)
        entry = {"path": f"models/{name}", **ev.to_dict(), "training": record.to_dict()}
        if args.n_eval_suite:
            # The AutoAttack-grade number the goal is judged on (a prefix of the same test examples).
            sev, _ = evaluate(model, test.take(args.n_eval_suite), strong, threat, [args.eps], seed=args.seed)
            entry["n_examples_suite"] = args.n_eval_suite
            entry["clean_accuracy_suite"] = sev.clean_accuracy
            for attack, by_eps in sev.robust_accuracy.items():
                tag = f"standard-{attack}" if attack == ENSEMBLE else attack
                entry["robust_accuracy"][tag] = by_eps
                entry["robust_accuracy_ci"][tag] = sev.robust_accuracy_ci[attack]
        entry["evaluation_time_s"] = round(time.perf_counter() - t0, 1)
        results["models"][name] = entry
        write_results(args.out / "results.json", results)  # partial results survive an interrupted run
        rows.append(name)

    key = eps_key(args.eps)
    ref = results["models"].get("trades", {}).get("training", {}).get("gradient_evaluations")
    header = (
        f"{'method':<26}{'clean':>7}{'pgd50x2':>9}{'95% CI':>15}{'fgsm':>7}{'AA-grade':>9}"
        f"{'grad evals':>13}{'vs TRADES':>10}{'train s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in rows:
        m = results["models"][name]
        t = m["training"]
        ci = m["robust_accuracy_ci"]["pgd-50x2"][key]
        ratio = f"{t['gradient_evaluations'] / ref:.2f}" if ref else "-"
        print(
            f"{name:<26}{m['clean_accuracy']:>7.3f}{m['robust_accuracy']['pgd-50x2'][key]:>9.3f}"
            f"{f'[{ci[0]:.3f}, {ci[1]:.3f}]':>15}{m['robust_accuracy']['fgsm'][key]:>7.3f}"
            f"{m['robust_accuracy'].get('standard-ensemble', {}).get(key, float('nan')):>9.3f}"
            f"{t['gradient_evaluations']:>13,}{ratio:>10}{t['wall_time_s']:>9.1f}"
        )
    results["notes"] = [
        f"Trained on {len(data.train)} examples for {args.epochs} epochs at eps {args.eps}; evaluated on the first "
        f"{len(test)} test examples with FGSM and PGD-50 (2 random restarts); "
        "`ensemble` is the per-example worst case.",
        f"AA-grade: the `standard` suite's per-example worst case (APGD-CE, APGD-T, DeepFool, Square) on the first "
        f"{args.n_eval_suite} of those examples, stored as `standard-ensemble`.",
        "gradient_evaluations are per-example backward passes, counted; wall times are on a shared, contended CPU.",
    ]
    write_results(args.out / "results.json", results)
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
