"""GTSRB on this CPU: a standard model vs the dual-phase defense, against the paper's GTSRB claims.

Trains on the shared GTSRB training set (``gtsrb:PATH``: 32x32, split by physical track, so no frame of a
test track was seen in training), then evaluates on held-out test tracks at L-inf eps 8/255:
- ``standard``: cross-entropy training;
- ``progressive-trades``: progressive multi-stage TRADES (eps and attack steps grow over 3 stages), or
  the training method named by ``--method`` (TRADES, PGD-AT, MART, fast FGSM-AT), warm-started from the
  standard model unless ``--no-warm-start``;
- ``progressive-trades+defense``: that model behind the runtime defense (bit-depth squeezing, attacked
  through BPDA, and a Mahalanobis detector calibrated to 5% false positives on clean validation data).
Each gets clean accuracy, FGSM and PGD-50x2 robust accuracy and, when the ``standard`` suite is
registered, its ensemble robust accuracy; the paper's claims (clean >= 89.2%, FGSM(8/255) >= 70.5%) are
compared with the measured numbers, stronger attacks next to them.

``python bench/gtsrb.py --out DIR`` writes DIR/results.json in the shared schema, with the models under
DIR/models and the defense under DIR/defenses, so ``bastion evaluate DIR --data gtsrb:OTHER --eps 0.0313725``
re-evaluates them on other test data (e.g. the official Final_Test layout).

Every run also projects the wall time of the full default configuration from its own per-stage timings
(seconds per training example-epoch of each stage, per attacked test example of each attack), so a short
smoke run (``--limit 2000 --epochs 3 --std-epochs 1 --n-test 200``) predicts the full run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bastion.app.config import TrainConfig
from bastion.app.train import method_config, train_model
from bastion.artifacts.results import new_results, write_results
from bastion.data import load_dataset
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense, save_defense
from bastion.evaluation.evaluate import ENSEMBLE, eps_key, evaluate, evaluate_defense
from bastion.evaluation.suites import SUITES, build_suite
from bastion.io import atomic_write_json, atomic_write_text
from bastion.models import checkpoint
from bastion.render.summary import to_markdown
from bastion.threat import ThreatModel
from bastion.training.methods import build_method
from bastion.training.trainer import TrainingRecord

REPO = Path(__file__).resolve().parents[1]
EPS = 8 / 255
PAPER = {"clean_accuracy": 0.892, "fgsm": 0.705}
#: The full configuration (what the lead runs on a free machine); a smoke run overrides some of it.
FULL = {"epochs": 8, "std_epochs": 6, "limit": None, "n_test": 1000}


def default_data() -> str:
    root = Path(os.environ.get("BASTION_DATA", REPO.parent / "shared" / "data")) / "gtsrb"
    return f"gtsrb:{root}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default=default_data(), help="gtsrb:PATH (default: ../shared/data/gtsrb)")
    p.add_argument("--epochs", type=int, default=FULL["epochs"], help="epochs of --method (3 stages when progressive)")
    p.add_argument("--std-epochs", type=int, default=FULL["std_epochs"], help="standard training epochs")
    p.add_argument("--limit", type=int, default=FULL["limit"], help="train on the first N training examples")
    p.add_argument("--n-test", type=int, default=FULL["n_test"], help="test examples attacked")
    p.add_argument(
        "--n-test-suite", type=int, default=1000, help="test examples for the AA-grade suite: a prefix of --n-test"
    )
    p.add_argument("--model", default="cnn")
    p.add_argument("--model-options", type=json.loads, default={"channels": [32, 64], "hidden": 256})
    p.add_argument(
        "--method",
        default="progressive-trades",
        choices=["progressive-trades", "trades", "pgd-at", "mart", "fast-at"],
        help="the dual-phase defense's training method",
    )
    p.add_argument(
        "--method-options",
        type=json.loads,
        default={},
        help='more TrainConfig keys for --method, as JSON: \'{"guard": "none"}\' makes fast-at FGSM-RS; '
        '\'{"stages": [...], "policy": "gap"}\' gives progressive TRADES an explicit schedule',
    )
    p.add_argument(
        "--defense", action=argparse.BooleanOptionalAction, default=True, help="fit and judge the runtime defense"
    )
    p.add_argument("--n-steps", type=int, default=5, help="attack steps (of the last stage, when progressive)")
    p.add_argument(
        "--beta", type=float, default=2.0, help="TRADES weight of the robust term (2 beat 6 on GTSRB: docs/recipes.md)"
    )
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--augment", default="auto", help="none, crop or auto (= crop: GTSRB is never flipped)")
    p.add_argument("--bit-depth", type=int, default=5, help="squeezer of the runtime defense")
    p.add_argument("--suite", default="auto", help="'auto': standard if registered, else default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="1 on a busy machine: oversubscribed threads spin")
    p.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--method starts from the standard model's weights (its cost is added to the count)",
    )
    p.add_argument(
        "--reuse", action="store_true", help="load models already saved in OUT/models instead of training them"
    )
    return p.parse_args(argv)


def project(record: dict[str, Any], n_train: int, epochs_ratio: dict[int, float], full_train: int) -> float:
    """Full-run training seconds from this run's per-stage seconds per example-epoch."""
    total = 0.0
    for stage in record["stages"]:
        per_example_epoch = stage["wall_time_s"] / (stage["epochs"] * n_train)
        total += per_example_epoch * full_train * stage["epochs"] * epochs_ratio[stage["stage"]]
    validation_per_epoch = record["validation_time_s"] / max(1, len(record["history"]))
    return total + validation_per_epoch * sum(s["epochs"] * epochs_ratio[s["stage"]] for s in record["stages"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    started = time.perf_counter()
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    data = load_dataset(args.data, seed=args.seed)
    full_train = len(data.train)
    if args.limit is not None:
        data = replace(data, train=data.train.take(args.limit))
    test = data.test.take(args.n_test)
    load_s = time.perf_counter() - t0

    suite_name = ("standard" if "standard" in SUITES else "default") if args.suite == "auto" else args.suite
    attacks = build_suite("default")  # FGSM and PGD-50x2: the paper's attack and a stronger one
    strong = build_suite(suite_name) if suite_name != "default" else None
    threat = ThreatModel(norm="linf", eps=EPS, domain=data.spec.domain)
    common = {
        "data": args.data,
        "seed": args.seed,
        "device": "cpu",
        "model": args.model,
        "model_options": args.model_options,
        "eps": EPS,
        "batch_size": args.batch_size,
        "optimizer": "adam",
        "lr": args.lr,
        "lr_schedule": "cosine",
        "augment": args.augment,
        "val_examples": 256,
    }
    method = args.method
    robust_options: dict[str, Any] = {"method": method, "epochs": args.epochs, "n_steps": args.n_steps}
    if method in ("trades", "progressive-trades", "mart"):
        robust_options["beta"] = args.beta
    if method == "progressive-trades":
        robust_options.update(n_stages=3, min_steps=1)
    robust_options.update(args.method_options)
    if "stages" in robust_options:
        robust_options.pop("epochs")  # the stages say how many
    configs = {
        "standard": TrainConfig.parse({**common, "method": "standard", "epochs": args.std_epochs}),
        method: TrainConfig.parse({**common, **robust_options}),
    }
    results = new_results(
        command="bench-gtsrb",
        data=data.spec.source,
        seed=args.seed,
        split={**data.describe(), "train_used": len(data.train), "test_used": len(test)},
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        threat={
            "norm": "linf",
            "eps": [eps_key(EPS)],
            "suite": "default" + (f" + {suite_name}" if strong else ""),
            "attacks": {k: repr(v) for k, v in {**attacks, **(strong or {})}.items()},
        },
    )
    timing: dict[str, Any] = {"load_data_s": round(load_s, 2)}
    cpu_share: dict[str, float] = {}  # process CPU seconds per wall second of each phase
    trained = {}
    for name, cfg in configs.items():
        saved = out / "models" / name
        if args.reuse and (saved / checkpoint.DESCRIPTION).is_file():
            extra = checkpoint.read_description(saved)
            saved_record = TrainingRecord.from_dict(extra["training"])
            _, wanted = build_method(cfg.method, method_config(cfg))
            if saved_record.method != cfg.method or saved_record.schedule != wanted.to_list():
                raise SystemExit(
                    f"--reuse: {saved} was trained with {saved_record.method} {saved_record.schedule}, not with "
                    f"this run's {cfg.method} {wanted.to_list()}; pass the options it was trained with"
                )
            trained[name] = (checkpoint.load_model(saved), saved_record)
            # The projection needs the training's CPU share; older saves lack it: assume the threads were busy.
            cpu_share[name] = extra.get("train_cpu_share", float(args.threads))
            logging.info("%s: reusing the model saved in %s", name, saved)
            continue
        if name == method and args.warm_start:
            cfg = TrainConfig.parse({**cfg.resolved(), "init_from": str(out / "models" / "standard")})
        t0, c0 = time.perf_counter(), time.process_time()
        # A checkpoint per epoch: a killed run continues where it stopped (rerun with the same arguments).
        ckpt_dir = out / "checkpoints" / name
        resume = (ckpt_dir / "last.safetensors").is_file()
        model, arch, record = train_model(cfg, data, torch.device("cpu"), checkpoint_dir=ckpt_dir, resume=resume)
        if name == method and args.warm_start:
            # The warm start's compute is part of the method's cost: count the standard training too.
            base = trained["standard"][1]
            record.events.append({"kind": "warm_start", "from": "standard", **base.to_dict()})
            record.wall_time_s += base.wall_time_s
            record.gradient_evaluations += base.gradient_evaluations
            record.forward_passes += base.forward_passes
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        timing[f"train_{name}_s"] = round(wall, 2)
        timing[f"train_{name}_cpu_s"] = round(cpu, 2)
        cpu_share[name] = cpu / wall
        checkpoint.save_model(
            model,
            arch,
            data.spec,
            out / "models" / name,
            extra={
                "training": record.to_dict(),
                "train_cpu_share": cpu_share[name],
                "seed": args.seed,
                "split": data.describe(),
            },
        )
        trained[name] = (model, record)

    robust, record = trained[method]
    targets: list[tuple[str, Any]] = [(n, m) for n, (m, _) in trained.items()]
    timing["fit_defense_s"] = 0.0
    if args.defense:
        t0 = time.perf_counter()
        defense_cfg = DefenseConfig(bit_depth=args.bit_depth, target_fpr=0.05)
        defended = build_defense(robust, defense_cfg, data.train, data.val)
        save_defense(defended, out / "defenses" / method)
        timing["fit_defense_s"] = round(time.perf_counter() - t0, 2)
        targets.append((f"{method}+defense", defended))

    eval_costs: dict[str, float] = {}
    eval_cpu: dict[str, float] = {}
    for name, target in targets:
        t0, c0 = time.perf_counter(), time.process_time()
        run = evaluate_defense if name.endswith("+defense") else evaluate
        ev = run(target, test, attacks, threat, [EPS], seed=args.seed)  # type: ignore[operator]
        ev = ev[0] if isinstance(ev, tuple) else ev
        entry = ev.to_dict()
        if strong is not None:
            suite_test = test.take(args.n_test_suite)
            entry["n_examples_suite"] = len(suite_test)
            sev = run(target, suite_test, strong, threat, [EPS], seed=args.seed)  # type: ignore[operator]
            sev = sev[0] if isinstance(sev, tuple) else sev
            for attack, by_eps in sev.robust_accuracy.items():
                key = f"{suite_name}-{attack}" if attack == ENSEMBLE else attack
                entry["robust_accuracy"][key] = by_eps
                entry["robust_accuracy_ci"][key] = sev.robust_accuracy_ci[attack]
            for attack, by_eps in sev.attack_cost.items():
                entry["attack_cost"][attack] = by_eps
        eval_costs[name] = time.perf_counter() - t0
        eval_cpu[name] = time.process_time() - c0
        timing[f"evaluate_{name}_s"] = round(eval_costs[name], 2)
        timing[f"evaluate_{name}_cpu_s"] = round(eval_cpu[name], 2)
        base = name.removesuffix("+defense")
        path = f"defenses/{base}" if name.endswith("+defense") else f"models/{name}"
        results["models"][name] = {"path": path, **entry, "training": trained[base][1].to_dict()}

    key = eps_key(EPS)
    comparison = {}
    for name, entry in results["models"].items():
        clean, fgsm = entry["clean_accuracy"], entry["robust_accuracy"]["fgsm"][key]
        comparison[name] = {
            "clean_accuracy": clean,
            "fgsm": fgsm,
            "pgd-50x2": entry["robust_accuracy"]["pgd-50x2"][key],
            "worst_case": min(v[key] for v in entry["robust_accuracy"].values()),
            "meets_paper_clean": clean >= PAPER["clean_accuracy"],
            "meets_paper_fgsm": fgsm >= PAPER["fgsm"],
        }
    timing["total_s"] = round(time.perf_counter() - started, 2)

    # Projection of the full configuration from this run's own timings.
    n_train = len(data.train)
    std_record = trained["standard"][1].to_dict()
    pt_record = record.to_dict()
    # Explicit stages are the full schedule already; a generated one is rebuilt at the full epoch count.
    explicit = "stages" in robust_options
    full_cfg = (
        configs[method] if explicit else TrainConfig.parse({**configs[method].resolved(), "epochs": FULL["epochs"]})
    )
    _, full_schedule = build_method(method, method_config(full_cfg))
    pt_ratio = {
        i: full.epochs / max(1, stage["epochs"])
        for i, (full, stage) in enumerate(zip(full_schedule.stages, pt_record["stages"], strict=False))
    }
    std_ratio = {0: FULL["std_epochs"] / args.std_epochs}
    # Attacks skip examples already misclassified, so evaluation time scales with the correctly classified
    # examples; projecting as if the full run's models classified every test example is an upper bound.
    attacked = {name: max(1, round(e["clean_accuracy"] * e["n_examples"])) for name, e in results["models"].items()}
    eval_ratio = {name: FULL["n_test"] / n for name, n in attacked.items()}
    projected = {
        "train_standard_s": project(std_record, n_train, std_ratio, full_train),
        f"train_{method}_s": project(pt_record, n_train, pt_ratio, full_train),
        "evaluate_s": sum(eval_costs[name] * eval_ratio[name] for name in eval_costs),
        "load_and_defense_s": load_s + timing["fit_defense_s"],
    }
    projected["total_s"] = sum(projected.values())
    # CPU seconds: what the same work costs a core nobody else uses (contention inflates wall time only).
    projected_cpu = {
        "train_standard_s": projected["train_standard_s"] * cpu_share["standard"],
        f"train_{method}_s": projected[f"train_{method}_s"] * cpu_share[method],
        "evaluate_s": sum(eval_cpu[name] * eval_ratio[name] for name in eval_cpu),
        "load_and_defense_s": projected["load_and_defense_s"],
    }
    projected_cpu["total_s"] = sum(projected_cpu.values())
    results["paper_claims"] = {"clean_accuracy": PAPER["clean_accuracy"], "fgsm": PAPER["fgsm"], "eps": key}
    results["comparison"] = comparison
    results["timing"] = timing
    results["projection_full_run"] = {
        "config": {**FULL, "limit": None, "train_examples": full_train},
        "wall_seconds_at_this_load": {k: round(v, 1) for k, v in projected.items()},
        "cpu_seconds": {k: round(v, 1) for k, v in projected_cpu.items()},
        "wall_minutes_on_free_cores": round(projected_cpu["total_s"] / args.threads / 60, 1),
        "note": "scaled from this run's per-stage seconds per training example-epoch and per attacked test "
        "example (evaluation as if every test example were classified correctly: an upper bound). "
        "cpu_seconds is process CPU time; on cores nobody else uses, wall time is about "
        "cpu_seconds / threads (perfect thread scaling assumed)",
    }
    results["conditions"] = {
        "threads": args.threads,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "torch": torch.__version__,
    }
    results["notes"] = [
        "Test examples are held-out physical tracks of the GTSRB training release (no frame of a test track "
        "was trained on); re-evaluate on the official test set with `bastion evaluate`.",
        "FGSM is the paper's attack; PGD-50x2 and the suite ensemble are stronger and are the numbers to trust.",
        "Every attack on the defense goes through the squeezer by BPDA; detector-aware PGD also targets the "
        "detector, the others ignore it. Robust accuracy ignores the detector's flag (an input counts when it "
        "is classified correctly); the failure-rate table counts a flagged input as caught.",
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    atomic_write_text(out / "summary.md", to_markdown(results))
    atomic_write_json(
        out / "run.json",
        {"command": "bench/gtsrb.py", "data": data.spec.source, "seed": args.seed, "split": data.describe()},
    )

    print(f"GTSRB, L-inf eps 8/255, {len(test)} test examples, {len(data.train)} training examples")
    header = f"{'model':<30}{'clean':>8}{'fgsm':>8}{'pgd-50x2':>10}{'worst':>8}  paper (89.2 / 70.5)"
    print(header)
    for name, c in comparison.items():
        verdict = "meets" if c["meets_paper_clean"] and c["meets_paper_fgsm"] else "below"
        print(
            f"{name:<30}{c['clean_accuracy']:>8.3f}{c['fgsm']:>8.3f}{c['pgd-50x2']:>10.3f}{c['worst_case']:>8.3f}"
            f"  {verdict}"
        )
    print(
        f"wall time {timing['total_s']:.0f} s; projected full run: {projected['total_s'] / 60:.1f} min at this load, "
        f"{projected_cpu['total_s'] / 60:.1f} CPU-min = "
        f"{results['projection_full_run']['wall_minutes_on_free_cores']} min on {args.threads} free cores; {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
