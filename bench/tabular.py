"""Tabular security benchmark: standard vs PGD-AT vs progressive TRADES MLPs under constrained evasion.

Datasets (from ../shared/data or $BASTION_DATA): NSL-KDD binary (train KDDTrain+_20Percent, test
KDDTest+), UCI phishing and ClaMP (stratified 70/10/20 splits). Per model: clean accuracy, detection
rate on malicious test rows under constrained PGD and the gradient-free search at 3 budgets (robust =
1 - evasion rate, counting only adversarial records the raw validator accepts), the valid share, what
the same attacks claim without constraints, and the training cost. NSL-KDD adds a transfer matrix
(MLP <-> gradient boosting / random forest) and a drift table (attack names seen in training vs only in
KDDTest+).

    python bench/tabular.py --out DIR [--quick] [--datasets nsl-kdd phishing malware]

writes DIR/results.json (bastion.results schema) and DIR/summary.md, and prints the main table.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bastion.attacks import PGD, CoordinateSearch
from bastion.data.tabular.sources import load_tabular
from bastion.evaluation.evaluate import eps_key
from bastion.evaluation.tabular import evaluate_tabular
from bastion.evaluation.transfer import SklearnClassifier, drift_accuracy, transfer_matrix
from bastion.goals import Reach
from bastion.io import atomic_write_text
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.results import new_results, write_results
from bastion.summary import to_markdown
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit

REPO = Path(__file__).resolve().parents[1]

#: name -> (SPEC relative to the data root, norm, training eps, evaluation budgets)
DATASETS: dict[str, tuple[str, str, float, tuple[float, ...]]] = {
    "nsl-kdd": ("nsl-kdd/?train=KDDTrain+_20Percent.txt", "linf", 0.3, (0.05, 0.1, 0.3)),
    "phishing": ("phishing", "linf", 0.5, (0.25, 0.5, 1.0)),
    "malware": ("malware", "linf", 0.3, (0.05, 0.1, 0.3)),
}
METHODS = ("standard", "pgd-at", "progressive-trades")


def data_root() -> Path:
    env = os.environ.get("BASTION_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def train(
    name: str, method: str, data: Any, eps: float, norm: str, epochs: int, seed: int, beta: float = 6.0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    spec = data.dataset.spec
    mean, std = normalization_stats(data.dataset.train.x)
    arch = Architecture(
        name="mlp",
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        mean=mean,
        std=std,
        options={"hidden": [128, 64]},
    )
    model = build_model(arch, seed=seed)
    objective, schedule = build_method(
        method, MethodConfig(epochs=epochs, eps=eps, n_steps=5, beta=beta, n_stages=3, min_steps=1)
    )
    threat = ThreatModel(norm=norm, eps=eps, domain=spec.domain)
    record = fit(
        model,
        data.dataset.train,
        objective,
        schedule,
        threat,
        settings=TrainSettings(batch_size=256, lr=2e-3, val_examples=0),
        seed=seed,
    )
    return model.eval(), record.to_dict()


def nsl_kdd_studies(
    data: Any, models: dict[str, torch.nn.Module], eps: float, n_rows: int, seed: int
) -> dict[str, Any]:
    """Transfer matrix (evasion rates) and drift (detection of seen vs unseen attack names)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    ds = data.dataset
    x_tr, y_tr = ds.train.x.numpy(), ds.train.y.numpy()
    started = time.perf_counter()
    hgb = HistGradientBoostingClassifier(random_state=seed).fit(x_tr, y_tr)
    rf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(x_tr, y_tr)
    fit_s = time.perf_counter() - started
    trees = {"gradient-boosting": SklearnClassifier(hgb), "random-forest": SklearnClassifier(rf)}
    benign = ds.spec.benign
    malicious = (ds.test.y != benign).nonzero().squeeze(1)[:n_rows]
    x = ds.test.x[malicious]
    goal = Reach(torch.full((len(x),), benign, dtype=torch.long))
    threat = ThreatModel(norm="linf", eps=eps, domain=ds.spec.domain)
    crafted: dict[str, torch.Tensor] = {}
    rng = torch.Generator().manual_seed(seed)
    crafted["mlp-standard (pgd-50)"] = PGD(n_steps=50)(models["standard"], x, goal, threat, rng=rng).x_adv
    search = CoordinateSearch(n_iters=20, n_candidates=8)
    for name, clf in trees.items():
        crafted[f"{name} (search, black-box)"] = search(clf, x, goal, threat, rng=rng).x_adv
    crafted["clean rows"] = x
    targets = {f"mlp-{m}": models[m] for m in models} | trees
    matrix = transfer_matrix(crafted, targets, benign)
    drift = drift_accuracy(
        {**{f"mlp-{m}": models[m] for m in models}, **trees},
        ds.test.x,
        data.tables["test"],
        data.tables["train"],
        benign,
    )
    return {
        "transfer": {
            "eps": eps_key(eps),
            "norm": "linf",
            "n_rows": len(x),
            "metric": "evasion rate on malicious test rows (source crafts, target classifies)",
            "matrix": matrix,
            "tree_fit_wall_time_s": round(fit_s, 2),
        },
        "drift": drift,
    }


def _threat(per_dataset: dict[str, Any]) -> dict[str, Any]:
    """Top-level threat block (what summary.md reads) over per-dataset settings."""
    eps = sorted({e for t in per_dataset.values() for e in t["eps"]}, key=float)
    return {
        "norm": "linf",
        "eps": eps,
        "suite": "pgd-50 + search (constrained; and the same attacks unconstrained)",
        "per_dataset": per_dataset,
    }


def studies_markdown(results: dict[str, Any]) -> str:
    """The NSL-KDD transfer matrix and drift table, rendered."""
    studies = results.get("nsl_kdd_studies")
    if not studies:
        return ""
    t = studies["transfer"]
    targets = list(next(iter(t["matrix"].values())))
    lines = [
        "",
        f"## NSL-KDD transfer (evasion rate, {t['norm']} eps {t['eps']}, {t['n_rows']} malicious test rows)",
        "",
        "Rows: where the examples were crafted; columns: the model they are replayed on.",
        "",
        "| crafted on | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for src, row in t["matrix"].items():
        lines.append(f"| {src} | " + " | ".join(f"{100 * row[c]:.1f}%" for c in targets) + " |")
    d = studies["drift"]
    lines += [
        "",
        f"## NSL-KDD drift: {d['n_seen_attack_rows']} KDDTest+ attack rows of names seen in training, "
        f"{d['n_unseen_attack_rows']} of {len(d['unseen_names'])} names never seen",
        "",
        "| model | detection (seen names) | detection (unseen names) | benign accuracy |",
        "|---|---|---|---|",
    ]
    for name, m in d["models"].items():
        cells = [m["seen_attack_detection"], m["unseen_attack_detection"], m["benign_accuracy"]]
        lines.append(f"| {name} | " + " | ".join("n/a" if v is None else f"{100 * v:.1f}%" for v in cells) + " |")
    return "\n".join(lines) + "\n"


def merge(parts: list[Path], out: Path) -> int:
    """One results.json from per-dataset runs (e.g. run in parallel); models and studies are combined."""
    from bastion.results import read_results

    merged: dict[str, Any] | None = None
    for part in parts:
        r = read_results(part / "results.json")
        if merged is None:
            merged = r
            continue
        merged["data"] += "+" + r["data"]
        clash = bool(set(r["models"]) & set(merged["models"]))  # e.g. a second run with another --train-eps
        for name, entry in r["models"].items():
            merged["models"][f"{name} ({part.name})" if clash else name] = entry
        known = merged["threat"].get("per_dataset", merged["threat"])
        for name, threat in r["threat"].get("per_dataset", r["threat"]).items():
            known[f"{name} ({part.name})" if name in known else name] = threat
        merged["threat"] = {"per_dataset": known}
        merged.setdefault("datasets", {}).update(r.get("datasets", {}))
        if "nsl_kdd_studies" in r:
            merged["nsl_kdd_studies"] = r["nsl_kdd_studies"]
    assert merged is not None
    per_dataset = merged["threat"].get("per_dataset", merged["threat"])
    merged["threat"] = _threat(per_dataset)
    merged["merged_from"] = [str(p) for p in parts]
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", merged)
    text = to_markdown(merged) + studies_markdown(merged)
    atomic_write_text(out / "summary.md", text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--quick", action="store_true", help="fewer epochs and rows (a smoke run)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None, help="test rows to evaluate per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-eps", type=float, default=None, help="override each dataset's training eps")
    parser.add_argument("--beta", type=float, default=6.0, help="TRADES trade-off (progressive TRADES)")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="combine the results.json of runs made with --datasets into --out"
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (2 if args.quick else 10)
    n_eval = args.n_eval or (200 if args.quick else 1000)
    root = data_root()
    results = new_results(
        command="bench/tabular.py",
        data="+".join(f"{d}:{root / DATASETS[d][0]}" for d in args.datasets),
        seed=args.seed,
        config={
            "epochs": epochs,
            "n_eval": n_eval,
            "mlp_hidden": [128, 64],
            "train_n_steps": 5,
            "threads": args.threads,
        },
        threat=_threat(
            {
                d: {
                    "norm": DATASETS[d][1],
                    "train_eps": args.train_eps if args.train_eps is not None else DATASETS[d][2],
                    "trades_beta": args.beta,
                    "eps": [eps_key(e) for e in DATASETS[d][3]],
                }
                for d in args.datasets
            }
        ),
    )
    results["notes"] = [
        "robust_accuracy = detection rate on malicious test rows under attack (1 - evasion rate); an evasion "
        "counts only when the adversarial raw record passes validate_raw against the original row.",
        "clean_accuracy is over all evaluated test rows (benign and malicious).",
        "Measured on a shared 2-core CPU machine; wall times are noisy, compare ratios within this run.",
    ]
    attacks = {"pgd-50": PGD(n_steps=50), "search": CoordinateSearch(n_iters=20, n_candidates=8)}
    lines = []
    for dname in args.datasets:
        spec_rel, norm, train_eps, budgets = DATASETS[dname]
        train_eps = args.train_eps if args.train_eps is not None else train_eps
        data = load_tabular(f"{dname}:{root / spec_rel}", seed=args.seed)
        ds = data.dataset
        test = ds.test.take(n_eval)
        raw = data.tables["test"].features.iloc[: len(test)]
        trained: dict[str, torch.nn.Module] = {}
        for method in METHODS:
            model, record = train(dname, method, data, train_eps, norm, epochs, args.seed, args.beta)
            trained[method] = model
            entry, _ = evaluate_tabular(
                model, test, raw, ds.spec.domain, ds.spec.benign, attacks, norm, budgets, seed=args.seed
            )
            entry["training"] = record
            entry["path"] = f"{dname}/{method}"
            results["models"][f"{dname}/{method}"] = entry
            rob = entry["robust_accuracy"]["ensemble"]
            lines.append(
                f"{dname:9s} {method:19s} clean {100 * entry['clean_accuracy']:5.1f}%  "
                + "  ".join(f"eps {e}: {100 * rob[e]:5.1f}%" for e in rob)
                + f"  valid {min(min(v.values()) for v in entry['tabular']['valid_share'].values()) * 100:.0f}%"
                + f"  train {record['wall_time_s']:.0f}s"
            )
            print(lines[-1], flush=True)
        if dname == "nsl-kdd":
            results["nsl_kdd_studies"] = nsl_kdd_studies(data, trained, max(budgets), min(n_eval, 500), args.seed)
        results.setdefault("datasets", {})[dname] = {
            "split": ds.describe(),
            "n_features": ds.spec.input_shape[0],
            "domain": repr(ds.spec.domain),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out / "results.json", results)
    atomic_write_text(args.out / "summary.md", to_markdown(results) + studies_markdown(results))
    print("\n".join(["", *lines]))
    if "nsl_kdd_studies" in results:
        studies = results["nsl_kdd_studies"]
        print("\ntransfer (evasion rate, rows = crafted on, columns = replayed on):")
        for src, row in studies["transfer"]["matrix"].items():
            print(f"  {src:36s} " + "  ".join(f"{t}={100 * v:.1f}%" for t, v in row.items()))
        print("drift (detection on attack names seen in training vs only in KDDTest+):")
        for name, d in studies["drift"]["models"].items():
            print(
                f"  {name:24s} seen {d['seen_attack_detection']}  unseen {d['unseen_attack_detection']}  "
                f"benign acc {d['benign_accuracy']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
