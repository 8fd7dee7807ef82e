"""Runtime defenses on MNIST: non-adaptive vs adaptive failure rate, detection AUROC, latency ratio.

A small CNN is adversarially trained with bastion's trainer (progressive TRADES up to eps 0.3; cached
on disk so reruns skip it). Each defense wraps that same model and is evaluated with
``evaluate_defense`` on the same test examples at eps 0.3 (L-inf): the non-adaptive PGD (through the
transforms by straight-through BPDA, ignoring the detector) and the adaptive attacks (BPDA-PGD,
detector-aware PGD, transfer from the undefended model). The failure rate is the share of all test
inputs that end misclassified AND unflagged; "worst" is the per-input worst case over all attacks.

Goal (issue 5): the hybrid defense's worst-case adaptive failure rate is below the bare adversarially
trained model's at the same eps, with <= 2 points clean-accuracy loss and <= 3x latency. The script
prints whether each defense meets it, with the numbers.

Usage: python bench/defense.py [--data /work/shared/data/mnist] [--n-test 500] [--out bench/results]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion import load_dataset
from bastion.artifacts.results import environment
from bastion.attacks import PGD
from bastion.data import Dataset
from bastion.defenses import (
    BitDepth,
    Defense,
    JPEGQuantize,
    KDEDetector,
    LIDDetector,
    MahalanobisDetector,
    SqueezeDetector,
)
from bastion.evaluation.defense import evaluate_defense
from bastion.evaluation.evaluate import eps_key
from bastion.io import atomic_write_json
from bastion.threat import ThreatModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_model import EPS, load_or_train


def defenses(model: nn.Module, data: Dataset, fpr: float, only: list[str] | None = None) -> dict[str, Defense]:
    """The configurations compared, all around the same adversarially trained model."""
    dom = data.spec.domain
    configs: dict[str, tuple[list[Any], list[Any]]] = {
        "bare": ([], []),
        "jpeg+mahalanobis": ([JPEGQuantize(75)], [MahalanobisDetector(model)]),
        "hybrid": ([BitDepth(2)], [MahalanobisDetector(model), KDEDetector(model, uncertainty="none")]),
        "hybrid+lid+squeeze": (
            [BitDepth(2)],
            [MahalanobisDetector(model), LIDDetector(model), SqueezeDetector(model, squeezers=[BitDepth(1)])],
        ),
    }
    out = {}
    for name, (transforms, detectors) in configs.items():
        if only and name not in only:
            continue
        d = Defense(model, transforms, detectors, domain=dom, target_fpr=fpr)
        out[name] = d.fit(data.train.x, data.train.y).calibrate(data.val.x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/mnist")
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=12, help="training epochs when the cached model is missing")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps, non-adaptive and adaptive")
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--cache", default="bench/results/mnist_trades", help="the attack benchmark's model")
    parser.add_argument("--only", nargs="*", help="defense names to run (default: all)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_dataset(f"mnist:{args.data}", seed=0)
    model, train_info = load_or_train(data, Path(args.cache), epochs=args.epochs)
    test = data.test.take(args.n_test)
    threat = ThreatModel(norm="linf", eps=EPS, domain=data.spec.domain)
    suite = {f"pgd-{args.steps}": PGD(n_steps=args.steps)}
    rows: dict[str, Any] = {}
    for name, defense in defenses(model, data, args.fpr, args.only).items():
        t0 = time.perf_counter()
        ev = evaluate_defense(defense, test, suite, threat, [EPS], adaptive_steps=args.steps)
        d = ev.defense or {}
        key = eps_key(EPS)
        fail = {a: by[key] for a, by in d["failure_rate"].items()}
        adaptive = {a: fail[a] for a in d["adaptive_attacks"]}
        rows[name] = {
            "clean_accuracy": ev.clean_accuracy,
            "clean_accuracy_bare": d["clean_accuracy_bare"],
            "false_positive_rate": d["false_positive_rate"],
            "reject_rate": d.get("reject_rate"),
            "failure_rate": fail,
            "failure_rate_ci": {a: by[key] for a, by in d["failure_rate_ci"].items()},
            "non_adaptive_failure": fail[f"pgd-{args.steps}"],
            "adaptive_failure_max": max(adaptive.values()),
            "worst_case_failure": fail.get("ensemble"),
            "auroc": {a: by[key] for a, by in d["auroc"].items()},
            "detection_rate": {a: by[key] for a, by in d["detection_rate"].items()},
            "latency_ratio": d["latency_ratio"],
            "latency_ms_per_input": d["latency_ms_per_input"],
            "description": d["description"],
            "eval_time_s": round(time.perf_counter() - t0, 1),
        }
    bare = rows.get("bare")
    for name, r in rows.items():
        if bare is None or name == "bare":
            continue
        loss = bare["clean_accuracy"] - r["clean_accuracy"]
        r["goal"] = {
            "worst_case_failure_below_bare": r["worst_case_failure"] < bare["worst_case_failure"],
            "clean_accuracy_loss_points": round(100 * loss, 2),
            "clean_loss_ok": loss <= 0.02,
            "latency_ok": r["latency_ratio"] <= 3.0,
        }
        r["goal"]["met"] = all(v for k, v in r["goal"].items() if k.endswith(("_ok", "_bare")))
    result = {
        "benchmark": "defense",
        "data": data.spec.source,
        "split": data.describe(),
        "n_test": len(test),
        "threat": {"norm": "linf", "eps": EPS},
        "attack_steps": args.steps,
        "target_fpr": args.fpr,
        "model": train_info,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "environment": environment(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "defenses": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "defense.json", result)
    attacks = list(dict.fromkeys(a for r in rows.values() for a in r["failure_rate"] if a != "ensemble"))
    attacks.append("ensemble")
    print(f"MNIST test n={len(test)}, L-inf eps={EPS}, PGD steps {args.steps}, target FPR {args.fpr}")
    print("failure rate = misclassified AND unflagged; ensemble = per-input worst case over all attacks")
    header = ["defense", "clean", "FPR", *attacks, "AUROC(det-aware)", "latency", "goal"]
    print(" | ".join(header))
    for name, r in rows.items():
        auc = r["auroc"].get("detector-aware-pgd")
        cells = [
            name,
            f"{100 * r['clean_accuracy']:.1f}%",
            f"{100 * r['false_positive_rate']:.1f}%",
            *[f"{100 * r['failure_rate'][a]:.1f}%" if a in r["failure_rate"] else "-" for a in attacks],
            "n/a" if auc is None else f"{auc:.3f}",
            f"{r['latency_ratio']:.2f}x",
            "-" if "goal" not in r else ("met" if r["goal"]["met"] else "NOT met"),
        ]
        print(" | ".join(cells))
    print(f"wrote {out / 'defense.json'} in {result['wall_time_s']:.0f}s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
