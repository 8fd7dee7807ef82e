"""Training methods head to head: same architecture, data, epochs, seed, optimiser and budget.

Trains standard, FGSM-RS (fast AT, Wong et al. 2020), PGD-AT, TRADES and progressive TRADES (cheap
carried-perturbation stages under the ``gap`` transition policy) on the real MNIST split, and judges each
by the AA-grade ``standard`` suite (APGD-CE, APGD-T, DeepFool, Square; per-example worst case) on the
first ``--n-eval`` test examples, with FGSM and PGD-50x2 as extra columns. Writes DIR/results.json
(schema 1, one model entry per method and seed with its ``training`` block, per-example outcomes for
paired tests, and a ``comparison`` block: intervals over seeds, paired t-tests and McNemar tests).

    python bench/training.py --out runs/bench-training --seeds 0 1 2          # MNIST (../shared/data/mnist)
    python bench/training.py --out /tmp/b --data digits --epochs 2 --n-eval 100 --eps 0.2   # smoke run
    python bench/training.py --out runs/select --eval-on val --methods progressive-trades \\
        --schedule 'a=[{"epochs": 8, "eps": 0.3, "n_steps": 1, "start": "carry"}]'      # choosing defaults

``--eval-on val`` evaluates on validation examples 300-799 instead (never on test examples): the trainer
validates on examples 0-199 and the transition policy measures on 0-99, so these 500 are untouched by
training. Choose schedules and policy defaults that way; report only ``--eval-on test`` runs.

A rerun with the same ``--out`` skips (method, seed) pairs already in results.json, so an interrupted
run continues. Compute is counted (per-example forward passes and gradient evaluations, the policy's
measurements included); wall times are on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.artifacts.results import new_results, write_results
from bastion.data.sources import load_dataset
from bastion.data.spec import Split
from bastion.evaluation.evaluate import ENSEMBLE, eps_key, evaluate
from bastion.evaluation.significance import mcnemar, mean_ci, paired_t
from bastion.evaluation.suites import build_suite
from bastion.models import checkpoint
from bastion.models.registry import build_model
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, Schedule, TrainSettings, build_method, fit
from bastion.training.objectives import TRADES
from bastion.training.schedules import GapPolicy

sys.path.insert(0, str(Path(__file__).parent))
from _mnist_model import small_cnn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = f"mnist:{REPO.parent / 'shared' / 'data' / 'mnist'}"
#: Validation examples the trainer (0-199) and the transition policy (0-99) see; selection uses the rest.
SELECTION_START = 300


#: Progressive TRADES' robust-term weight, chosen on validation data (docs/training.md): a one-step carried
#: attack finds weaker points than TRADES' five steps, and a larger weight on them closes the gap.
PROGRESSIVE_BETA = 10.0


def progressive_stages(epochs: int, eps: float, beta: float = PROGRESSIVE_BETA) -> list[dict[str, Any]]:
    """The benchmark's progressive TRADES schedule (chosen on the validation split, docs/training.md):
    every epoch at full eps with a one-step KL attack of 0.5 eps from each example's carried perturbation,
    so the attack accumulates across epochs (with FGSM-RS's 1.25 eps step the carried attack masked on
    validation data); the ``gap`` policy adds steps when a one-step attack overstates robustness on
    held-out data."""
    return [{"epochs": epochs, "eps": eps, "n_steps": 1, "start": "carry", "rel_step_size": 0.5, "beta": beta}]


def _bits(t: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in t.tolist())


def _unbits(s: str) -> np.ndarray:
    return np.array([c == "1" for c in s], dtype=bool)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--eps", type=float, default=0.3, help="training and evaluation budget (L-inf, pixels in [0, 1])")
    p.add_argument("--steps", type=int, default=5, help="PGD-AT / TRADES inner steps (and the policy's max)")
    p.add_argument("--beta", type=float, default=6.0, help="TRADES weight of the robust term (the baseline's)")
    p.add_argument("--progressive-beta", type=float, default=PROGRESSIVE_BETA, help="progressive TRADES' weight")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-eval", type=int, default=1000, help="test examples: clean, FGSM, PGD-50x2 and the suite")
    p.add_argument("--no-suite", action="store_true", help="skip the AA-grade suite (selection smoke runs only)")
    p.add_argument("--eval-on", choices=["test", "val"], default="test")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods to run")
    p.add_argument("--policy", choices=["fixed", "gap"], default="gap", help="progressive TRADES transition policy")
    p.add_argument("--policy-gap", type=float, default=GapPolicy().gap)
    p.add_argument("--policy-confidence", type=float, default=GapPolicy().confidence)
    p.add_argument("--policy-examples", type=int, default=GapPolicy().examples)
    p.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='extra progressive-TRADES schedule, e.g. p2=\'[{"epochs": 2, "eps": 0.15, "n_steps": 1}, ...]\'',
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="RESULTS",
        help="combine results.json files of runs with the same settings (e.g. seeds run in parallel) into --out",
    )
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out / "results.json", eps_key(args.eps))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)

    threat_eps = args.eps
    suite = build_suite("default")
    strong = build_suite("standard")
    key = eps_key(threat_eps)
    path = args.out / "results.json"
    done: dict[str, Any] = json.loads(path.read_text())["models"] if path.is_file() else {}
    results: dict[str, Any] | None = None

    for seed in args.seeds:
        data = load_dataset(args.data, seed=seed)
        arch = small_cnn(data, channels=(8, 16))
        threat = ThreatModel(norm="linf", eps=threat_eps, domain=data.spec.domain)
        settings = TrainSettings(batch_size=args.batch_size, val_examples=200, lr=1e-3)
        base = MethodConfig(epochs=args.epochs, eps=args.eps, n_steps=args.steps, beta=args.beta)
        policy = (
            GapPolicy(
                gap=args.policy_gap,
                max_steps=args.steps,
                confidence=args.policy_confidence,
                examples=args.policy_examples,
            )
            if args.policy == "gap"
            else None
        )
        progressive = Schedule.from_list(progressive_stages(args.epochs, args.eps, args.progressive_beta)).with_policy(
            policy
        )
        plans: dict[str, tuple[Any, Schedule]] = {
            "trades": build_method("trades", base),
            "progressive-trades": (TRADES(name="progressive-trades"), progressive),
            "pgd-at": build_method("pgd-at", base),
            "fast-at": build_method("fast-at", MethodConfig(epochs=args.epochs, eps=args.eps, guard="none")),
            "standard": build_method("standard", base),
        }
        for spec in args.schedule:
            name, _, stages_json = spec.partition("=")
            stages = [{"beta": args.beta, **st} for st in json.loads(stages_json)]
            plans[f"progressive-trades-{name}"] = (
                TRADES(name=f"progressive-trades-{name}"),
                Schedule.from_list(stages).with_policy(policy),
            )
        if args.methods:
            plans = {k: v for k, v in plans.items() if k in args.methods}
        if args.eval_on == "test":
            held_out = data.test.take(args.n_eval)
        else:
            held_out = Split(data.val.x[SELECTION_START:], data.val.y[SELECTION_START:]).take(args.n_eval)
        if results is None:
            results = new_results(
                command="bench-training",
                data=data.spec.source,
                seed=args.seeds[0],
                split=data.describe(),
                config={
                    **vars(args),
                    "out": str(args.out),
                    "architecture": arch.to_dict(),
                    "settings": settings.__dict__,
                    "policy": policy.to_dict() if policy else None,
                },
                threat={
                    "norm": "linf",
                    "eps": [key],
                    "suite": "default + standard",
                    "attacks": {k: repr(v) for k, v in {**suite, **strong}.items()},
                },
            )
            results["models"].update(done)
        for name, (objective, schedule) in plans.items():
            tag = f"{name}@seed{seed}"
            if tag in results["models"]:
                logging.info("skipping %s: already in %s", tag, path)
                continue
            model = build_model(arch, seed=seed)
            logging.info("training %s: %s policy=%s", tag, schedule.rows(), schedule.policy)
            record = fit(model, data.train, objective, schedule, threat, settings=settings, val=data.val, seed=seed)
            model_dir = args.out / "models" / tag
            checkpoint.save_model(model, arch, data.spec, model_dir, extra={"training": record.to_dict(), "seed": seed})
            t0 = time.perf_counter()
            ev, _ = evaluate(model, held_out, suite, threat, [threat_eps], seed=seed)
            entry = {
                "path": f"models/{tag}",
                "method": name,
                "seed": seed,
                **ev.to_dict(),
                "training": record.to_dict(),
            }
            entry["outcomes"] = {"clean": _bits(ev.clean_correct) if ev.clean_correct is not None else None}
            entry["outcomes"]["fgsm"] = _bits(ev.outcomes["fgsm"][key])
            if not args.no_suite:
                sev, _ = evaluate(model, held_out, strong, threat, [threat_eps], seed=seed)
                for attack, by_eps in sev.robust_accuracy.items():
                    label = f"standard-{attack}" if attack == ENSEMBLE else attack
                    entry["robust_accuracy"][label] = by_eps
                    entry["robust_accuracy_ci"][label] = sev.robust_accuracy_ci[attack]
                entry["outcomes"]["aa"] = _bits(sev.outcomes[ENSEMBLE][key])
            entry["evaluated_on"] = args.eval_on
            entry["evaluation_time_s"] = round(time.perf_counter() - t0, 1)
            results["models"][tag] = entry
            write_results(path, results)  # partial results survive an interrupted run
    assert results is not None
    results["comparison"] = compare(results["models"], key)
    results["notes"] = [
        f"Trained for {args.epochs} epochs at eps {args.eps}; evaluated on the first {args.n_eval} "
        f"{args.eval_on} examples (validation examples from {SELECTION_START} on when 'val').",
        "AA-grade: the `standard` suite's per-example worst case (APGD-CE, APGD-T, DeepFool, Square 5,000 "
        "queries), stored as `standard-ensemble`; FGSM and PGD-50x2 are extra columns.",
        "gradient_evaluations are per-example backward passes, counted, the transition policy's measurements "
        "included (also given alone as policy_gradient_evaluations); wall times are on a shared CPU.",
    ]
    write_results(path, results)
    print_table(results, key)
    print(f"results: {path}")
    return 0


def merge(paths: list[Path], out: Path, key: str) -> int:
    """One results file from several runs: the first run's header, every run's model entries, the comparison
    recomputed over all of them, and the merged files named in ``config.merged_from``."""
    runs = [json.loads(p.read_text()) for p in paths]
    results = runs[0]
    for other in runs[1:]:
        results["models"].update(other["models"])
    results["config"]["merged_from"] = [str(p) for p in paths]
    results["config"]["seeds"] = sorted({m["seed"] for m in results["models"].values()})
    results["comparison"] = compare(results["models"], key)
    write_results(out, results)
    print_table(results, key)
    print(f"results: {out}")
    return 0


def compare(models: dict[str, Any], key: str) -> dict[str, Any]:
    """Intervals over seeds per method, and progressive TRADES against each baseline: a paired t-test over
    seeds (when >= 2 common seeds) and McNemar per seed on the same test examples (AA-grade outcomes)."""
    by_method: dict[str, dict[int, Any]] = {}
    for m in models.values():
        by_method.setdefault(m["method"], {})[m["seed"]] = m
    out: dict[str, Any] = {"methods": {}, "tests": []}
    for method, seeds in by_method.items():
        aa = [s["robust_accuracy"].get("standard-ensemble", {}).get(key) for s in seeds.values()]
        if all(v is not None for v in aa):
            out["methods"][method] = {
                "seeds": sorted(seeds),
                "aa_grade": mean_ci(aa).to_dict() if len(aa) > 1 else None,
            }
    ours = by_method.get("progressive-trades", {})
    for other in ("trades", "pgd-at", "fast-at", "standard"):
        theirs = by_method.get(other, {})
        common = sorted(set(ours) & set(theirs))
        if not common or any("aa" not in ours[s]["outcomes"] or "aa" not in theirs[s]["outcomes"] for s in common):
            continue
        entry: dict[str, Any] = {"a": "progressive-trades", "b": other, "seeds": common}
        entry["mcnemar"] = {
            s: mcnemar(_unbits(ours[s]["outcomes"]["aa"]), _unbits(theirs[s]["outcomes"]["aa"])).to_dict()
            for s in common
        }
        if len(common) >= 2:
            a = [ours[s]["robust_accuracy"]["standard-ensemble"][key] for s in common]
            b = [theirs[s]["robust_accuracy"]["standard-ensemble"][key] for s in common]
            entry["paired_t"] = paired_t(a, b).to_dict()
        out["tests"].append(entry)
    return out


def print_table(results: dict[str, Any], key: str) -> None:
    ref = {
        m["seed"]: m["training"]["gradient_evaluations"] for m in results["models"].values() if m["method"] == "trades"
    }
    header = (
        f"{'method':<28}{'seed':>5}{'clean':>7}{'FGSM':>7}{'PGD50x2':>8}{'AA-grade':>9}{'95% CI':>16}"
        f"{'grad evals':>12}{'(policy)':>9}{'vs TRADES':>10}{'train s':>9}{'eval s':>8}"
    )
    print(header)
    print("-" * len(header))
    for m in results["models"].values():
        t, ra = m["training"], m["robust_accuracy"]
        aa = ra.get("standard-ensemble", {}).get(key)
        ci = m["robust_accuracy_ci"].get("standard-ensemble", {}).get(key)
        r = ref.get(m["seed"])
        ratio = f"{t['gradient_evaluations'] / r:.2f}" if r else "-"
        print(
            f"{m['method']:<28}{m['seed']:>5}{m['clean_accuracy']:>7.3f}{ra['fgsm'][key]:>7.3f}"
            f"{ra['pgd-50x2'][key]:>8.3f}{(f'{aa:.3f}' if aa is not None else '-'):>9}"
            f"{(f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '-'):>16}{t['gradient_evaluations']:>12,}"
            f"{t.get('policy_gradient_evaluations', 0):>9,}{ratio:>10}"
            f"{t['wall_time_s']:>9.1f}{m['evaluation_time_s']:>8.1f}"
        )
    for test in results.get("comparison", {}).get("tests", []):
        line = f"{test['a']} vs {test['b']}:"
        for s, mc in test["mcnemar"].items():
            line += f" seed {s} McNemar diff {100 * mc['difference']:+.1f} pts p={mc['p_value']:.3g};"
        if "paired_t" in test:
            pt = test["paired_t"]
            line += f" paired t over seeds diff {100 * pt['difference']:+.1f} pts p={pt['p_value']:.3g}"
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
