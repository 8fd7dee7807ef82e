"""Attack benchmark on the real MNIST test set: cost per attack step vs the raw-PyTorch floor, and the
standard ensemble's robust accuracy and wall time vs a peer's AutoAttack, on the same model and examples.

    PYTHONPATH=src:bench python bench/attacks.py --data /work/shared/data/mnist --n-examples 500
    python bench/attacks.py --model runs/demo/models/progressive-trades --eps 0.1 --eps 0.2 \
        --n-examples 360 --out bench/results/attacks-demo.json     # the demo's model vs the peer's AutoAttack

Floor = one forward + backward (gradient w.r.t. the input) of the same model on the same batch, timed in
the same run; every per-step time is reported as a ratio to it. Peers (torchattacks, ART, foolbox) are
optional: one that cannot be imported is recorded as such. Writes bench/results/attacks.json and prints a
table. Single intra-op thread, so ratios are not skewed by thread scheduling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion import load_dataset
from bastion.attacks import APGD, PGD, cross_entropy
from bastion.evaluation.suites import build_suite
from bastion.goals import Misclassify
from bastion.io import atomic_write_json
from bastion.threat import ThreatModel

sys.path.insert(0, str(Path(__file__).parent))
from _mnist_model import EPS, load_or_train

STEP = 0.01
LONG_FACTOR = 5
LONG = "pgd-long"


def floor_step(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """The floor: one forward and one backward to the input, nothing else."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    torch.autograd.grad(loss, x)


def peer_runners(model: nn.Module, n_steps: int) -> dict[str, Callable[[Tensor, Tensor], Tensor] | str]:
    """name -> fn(x, y) running a peer's L-inf PGD of n_steps, or the reason it is unavailable."""
    out: dict[str, Callable[[Tensor, Tensor], Tensor] | str] = {}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=n_steps, random_start=True)
        out[f"torchattacks {torchattacks.__version__} PGD"] = lambda x, y: ta(x, y)
        ta_apgd = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=n_steps, loss="ce", seed=0)
        out[f"torchattacks {torchattacks.__version__} APGD-CE"] = lambda x, y: ta_apgd(x, y)
    except Exception as exc:  # an optional peer: record why it is missing
        out["torchattacks"] = f"unavailable: {exc!r}"
    try:
        import art
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0)
        )
        art_pgd = ProjectedGradientDescentPyTorch(
            clf, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=n_steps, num_random_init=1, batch_size=512, verbose=False
        )
        out[f"ART {art.__version__} PGD"] = lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    except Exception as exc:
        out["ART"] = f"unavailable: {exc!r}"
    try:
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
        fb_pgd = foolbox.attacks.LinfPGD(abs_stepsize=STEP, steps=n_steps, random_start=True)
        out[f"foolbox {foolbox.__version__} PGD"] = lambda x, y: fb_pgd(fmodel, x, y, epsilons=EPS)[1]
    except Exception as exc:
        out["foolbox"] = f"unavailable: {exc!r}"
    return out


def bench_steps(model: nn.Module, x: Tensor, y: Tensor, n_steps: int, repeats: int) -> dict[str, Any]:
    """Median time per step of each attack, rounds interleaved with the floor so machine drift hits all alike."""
    threat = ThreatModel(norm="linf", eps=EPS)
    goal = Misclassify(y)
    gen = torch.Generator().manual_seed(0)
    # Lean path (training loops): no early stop, no best-iterate bookkeeping, no checks.
    lean = PGD(n_steps=n_steps, step_size=STEP, early_stop=False, keep_best_iterate=False)
    # Evaluation path: checks, counting, best iterate, clean + final success passes; every example attacked.
    full = PGD(n_steps=n_steps, step_size=STEP, early_stop=False)
    full_long = PGD(n_steps=LONG_FACTOR * n_steps, step_size=STEP, early_stop=False)
    apgd = APGD(loss=cross_entropy, n_steps=n_steps, early_stop=False)
    # A forward+backward costs more on adversarial inputs than on clean ones (measured ~15% here), so the
    # floor is timed on an adversarial batch (a PGD iterate); the clean-input floor is reported too.
    x_adv = PGD(n_steps=5, step_size=STEP, early_stop=False).perturb(model, x, goal, threat, rng=gen)
    candidates: dict[str, Callable[[], object] | str] = {
        "floor": lambda: [floor_step(model, x_adv, y) for _ in range(n_steps)],
        "floor (clean inputs)": lambda: [floor_step(model, x, y) for _ in range(n_steps)],
        "bastion PGD (training path)": lambda: lean.perturb(model, x, goal, threat, rng=gen),
        "bastion PGD (evaluation path)": lambda: full(model, x, goal, threat, rng=gen),
        # Same path with LONG_FACTOR x the steps, timed per *short* step count, so the slope between the two
        # rows is the marginal cost of one more step (the fixed clean/scoring passes cancel out).
        LONG: lambda: full_long(model, x, goal, threat, rng=gen),
        "bastion APGD-CE (evaluation path)": lambda: apgd(model, x, goal, threat, rng=gen),
    }
    for name, runner in peer_runners(model, n_steps).items():
        candidates[name] = runner if isinstance(runner, str) else (lambda runner=runner: runner(x, y))
    times: dict[str, list[float]] = {k: [] for k, v in candidates.items() if not isinstance(v, str)}
    errors: dict[str, str] = {k: v for k, v in candidates.items() if isinstance(v, str)}
    for _ in range(repeats):
        for name in list(times):
            fn = candidates[name]
            assert not isinstance(fn, str)
            start = time.perf_counter()
            try:
                fn()
            except Exception as exc:
                errors[name] = f"failed: {exc!r} {traceback.format_exc(limit=2)}"
                del times[name]
                continue
            times[name].append((time.perf_counter() - start) / n_steps)
    floor_samples = times.pop("floor")
    floor = statistics.median(floor_samples)
    rows: dict[str, Any] = {
        name: {"s_per_step": statistics.median(t), "ratio_to_floor": statistics.median(t) / floor, "samples": t}
        for name, t in times.items()
    }
    rows.update({name: {"error": e} for name, e in errors.items()})
    if LONG in rows and "bastion PGD (evaluation path)" in rows:
        long_row = rows.pop(LONG)
        # times are per n_steps-th of a call: the long call did LONG_FACTOR * n_steps steps.
        slope = (long_row["s_per_step"] - rows["bastion PGD (evaluation path)"]["s_per_step"]) / (LONG_FACTOR - 1)
        rows["bastion PGD (evaluation path, marginal step)"] = {
            "s_per_step": slope,
            "ratio_to_floor": slope / floor,
            "note": f"(T({LONG_FACTOR * n_steps} steps) - T({n_steps} steps)) / {(LONG_FACTOR - 1) * n_steps}",
        }
        rows[f"bastion PGD-{LONG_FACTOR * n_steps} (evaluation path)"] = {
            "s_per_step": long_row["s_per_step"] / LONG_FACTOR,
            "ratio_to_floor": long_row["s_per_step"] / LONG_FACTOR / floor,
            "samples": [t / LONG_FACTOR for t in long_row["samples"]],
        }
    return {
        "batch_size": len(x),
        "n_steps": n_steps,
        "repeats": repeats,
        "floor_s": floor,
        "floor_samples": floor_samples,
        "attacks": rows,
    }


def bench_ensemble(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, eps: float = EPS, n_classes: int = 10
) -> dict[str, Any]:
    """The standard suite as a worst-case sequence vs torchattacks' AutoAttack (standard version), both on
    the same batches; bastion's probed Square runs once on every batch's survivors, as in an evaluation."""
    from bastion.attacks.worst_case import worst_case_in_batches

    threat = ThreatModel(norm="linf", eps=eps)
    suite = build_suite("standard")
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    start = time.perf_counter()
    r = worst_case_in_batches(
        model,
        x,
        y,
        suite,
        threat,
        batches=[(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)],
        rng_of=lambda i: torch.Generator().manual_seed(i),
    )
    broken: dict[str, int] = {}
    for b in r.broken_by:
        if b is not None:
            broken[b] = broken.get(b, 0) + 1
    cost = r.cost
    ours_time = time.perf_counter() - start
    ours_acc = float(r.robust.float().mean())
    verified = verify(model, x, r.x_adv, y, r.robust, threat)
    out: dict[str, Any] = {
        "n_examples": len(x),
        "eps": eps,
        "clean_accuracy": clean,
        "bastion_standard": {
            "robust_accuracy": ours_acc,
            "wall_time_s": ours_time,
            "broken_by": broken,
            "cost": cost,
            "verified": verified,
        },
        "peers": {},
    }
    for name, runner in autoattack_peers(model, eps, n_classes).items():
        if isinstance(runner, str):
            out["peers"][name] = {"error": runner}
            continue
        start = time.perf_counter()
        try:
            batches = range(0, len(x), batch_size)
            advs = torch.cat([runner(x[i : i + batch_size], y[i : i + batch_size]) for i in batches])
        except Exception as exc:
            out["peers"][name] = {"error": f"failed: {exc!r}"}
            continue
        peer_time = time.perf_counter() - start
        with torch.no_grad():
            peer_robust = model(advs).argmax(1) == y
        peer_acc = float(peer_robust.float().mean())
        out["peers"][name] = {
            "robust_accuracy": peer_acc,
            "wall_time_s": peer_time,
            "difference_points": 100 * (ours_acc - peer_acc),
            "wall_time_ratio": ours_time / peer_time,
            "verified": verify(model, x, advs, y, peer_robust, threat),
            "broken_by_peer_only": int(r.robust[~peer_robust].sum()),
            "broken_by_bastion_only": int((peer_robust & ~r.robust).sum()),
        }
    return out


def verify(
    model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, robust: Tensor, threat: ThreatModel
) -> dict[str, Any]:
    """Re-check an attack's claim with plain torch: budget, domain, and the model's answer on x_adv."""
    with torch.no_grad():
        wrong = model(x_adv.detach()).argmax(1) != y
    linf = (x_adv.detach() - x).flatten(1).abs().amax(1)
    return {
        "max_linf": float(linf.max()),
        "within_eps": bool((linf <= threat.eps + 1e-6).all()),
        "in_domain": bool(((x_adv >= 0) & (x_adv <= 1)).all()),
        "claim_matches_model": bool(torch.equal(wrong, ~robust)),
    }


def autoattack_peers(
    model: nn.Module, eps: float = EPS, n_classes: int = 10, *, stock: bool = True
) -> dict[str, Callable[[Tensor, Tensor], Tensor] | str]:
    """Peers' AutoAttack: torchattacks' stock one, the same built from its parts at the paper's settings."""
    out: dict[str, Callable[[Tensor, Tensor], Tensor] | str] = {}
    try:
        import torchattacks as ta

        v = ta.__version__
        if stock:
            aa = ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=0)
            out[f"torchattacks {v} AutoAttack (standard, stock: its APGD/APGD-T/FAB default to 10 steps)"] = aa
        paper = ta.MultiAttack(
            [
                ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
                ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=n_classes, seed=0),
                ta.FAB(
                    model,
                    norm="Linf",
                    eps=eps,
                    steps=100,
                    n_restarts=1,
                    multi_targeted=True,
                    n_classes=n_classes,
                    seed=0,
                ),
                ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0),
            ]
        )
        out[f"torchattacks {v} AutoAttack components at the paper's settings (100 steps, cascaded)"] = paper
    except Exception as exc:
        out["torchattacks"] = f"unavailable: {exc!r}"
    return out


def art_autoattack(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict[str, Any]:
    """ART's AutoAttack (its defaults: APGD-CE and APGD-DLR with 5 restarts, DeepFool, Square 5 x 5,000) vs ours."""
    from bastion.attacks.worst_case import worst_case

    threat = ThreatModel(norm="linf", eps=EPS)
    out: dict[str, Any] = {"n_examples": len(x)}
    start = time.perf_counter()
    r = worst_case(model, x, y, build_suite("standard"), threat, rng=torch.Generator().manual_seed(0))
    out["bastion_standard"] = {
        "robust_accuracy": float(r.robust.float().mean()),
        "wall_time_s": time.perf_counter() - start,
        "verified": verify(model, x, r.x_adv, y, r.robust, threat),
    }
    try:
        import art
        import numpy as np
        from art.attacks.evasion import AutoAttack
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0)
        )
        aa = AutoAttack(clf, norm=np.inf, eps=EPS, eps_step=0.1, batch_size=batch_size)
        start = time.perf_counter()
        adv = torch.from_numpy(aa.generate(x.numpy(), y=y.numpy())).to(x.dtype)
        peer_time = time.perf_counter() - start
        with torch.no_grad():
            peer_robust = model(adv).argmax(1) == y
        acc = float(peer_robust.float().mean())
        out[f"ART {art.__version__} AutoAttack (defaults)"] = {
            "robust_accuracy": acc,
            "wall_time_s": peer_time,
            "verified": verify(model, x, adv, y, peer_robust, threat),
        }
        out["difference_points"] = 100 * (out["bastion_standard"]["robust_accuracy"] - acc)
        out["wall_time_ratio"] = out["bastion_standard"]["wall_time_s"] / peer_time
    except Exception as exc:
        out["ART AutoAttack"] = {"error": f"unavailable or failed: {exc!r}"}
    return out


def bench_apgd_t(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict[str, Any]:
    """APGD-T alone, ours vs torchattacks', on the same examples: locates a gap between the ensembles."""
    from bastion.attacks import APGDT

    threat = ThreatModel(norm="linf", eps=EPS)
    out: dict[str, Any] = {"n_examples": len(x)}
    start = time.perf_counter()
    robust = [
        APGDT(n_targets=9, n_steps=100)(
            model,
            x[i : i + batch_size],
            Misclassify(y[i : i + batch_size]),
            threat,
            rng=torch.Generator().manual_seed(i),
        ).robust
        for i in range(0, len(x), batch_size)
    ]
    out["bastion APGD-T"] = {
        "robust_accuracy": float(torch.cat(robust).float().mean()),
        "wall_time_s": time.perf_counter() - start,
    }
    try:
        import torchattacks

        peer = torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=100, n_classes=10, seed=0)
        start = time.perf_counter()
        advs = torch.cat([peer(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        with torch.no_grad():
            acc = float((model(advs).argmax(1) == y).float().mean())
        out[f"torchattacks {torchattacks.__version__} APGD-T"] = {
            "robust_accuracy": acc,
            "wall_time_s": time.perf_counter() - start,
        }
    except Exception as exc:
        out["torchattacks APGD-T"] = {"error": f"unavailable: {exc!r}"}
    return out


def saved_model_vs_autoattack(args: argparse.Namespace) -> None:
    """``--model DIR``: a saved bastion model (e.g. the demo's) on its own test split, per eps, against the
    peer's AutoAttack at the paper's settings; prints the table the issue's goals are judged by."""
    from bastion.models import checkpoint

    model = checkpoint.load_model(args.model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    description = checkpoint.read_description(args.model)
    data = load_dataset(args.spec or description["dataset"]["source"], seed=int(description.get("seed", 0)))
    n = min(args.n_examples, len(data.test))
    x, y = data.test.x[:n], data.test.y[:n]
    results: dict[str, Any] = {
        "model": str(args.model),
        "data": data.spec.source,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "by_eps": {},
    }
    for eps in args.eps:
        results["by_eps"][str(eps)] = bench_ensemble(model, x, y, args.batch_size, eps, data.spec.num_classes)
        atomic_write_json(Path(args.out), results)
    print(f"{'eps':>6} {'bastion':>9} {'peer AA':>9} {'diff pts':>9} {'time ratio':>11}")
    for eps, r in results["by_eps"].items():
        ours = r["bastion_standard"]
        for name, peer in r["peers"].items():
            if "robust_accuracy" in peer and "paper" in name:
                print(
                    f"{eps:>6} {100 * ours['robust_accuracy']:>8.1f}% {100 * peer['robust_accuracy']:>8.1f}% "
                    f"{peer['difference_points']:>+9.1f} {peer['wall_time_ratio']:>11.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="a saved bastion model folder: compare on it instead of MNIST")
    parser.add_argument("--spec", help="with --model: data SPEC (default: the model's own)")
    parser.add_argument("--eps", type=float, action="append", help="with --model: budget; repeat for several")
    parser.add_argument("--data", default="../shared/data/mnist")
    parser.add_argument("--cache", default="bench/results/mnist_trades")
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-ensemble", action="store_true", help="keep the ensemble section of --out if any")
    parser.add_argument("--skip-steps", action="store_true", help="keep the per-step section of --out if any")
    parser.add_argument("--apgd-t", action="store_true", help="also run APGD-T alone, ours and torchattacks'")
    parser.add_argument("--art-examples", type=int, default=0, help="compare with ART's AutoAttack on N examples")
    parser.add_argument("--out", default="bench/results/attacks.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model is not None:
        args.eps = args.eps or [EPS]
        saved_model_vs_autoattack(args)
        return
    data = load_dataset(f"mnist:{args.data}", seed=0)
    model, model_info = load_or_train(data, Path(args.cache))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = data.test
    x, y = test.x[: args.batch_size], test.y[: args.batch_size]
    results: dict[str, Any] = {
        "data": f"mnist:{args.data} (test split of the 10k official test set)",
        "model": {"arch": "cnn channels (16, 32) hidden 64", **model_info},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.skip_steps and "steps" in previous:
        results["steps"] = previous["steps"]
    else:
        results["steps"] = bench_steps(model, x, y, args.n_steps, args.repeats)
    n = min(args.n_examples, len(test))
    if not args.skip_ensemble:
        results["ensemble"] = bench_ensemble(model, test.x[:n], test.y[:n], args.batch_size)
    elif "ensemble" in previous:
        results["ensemble"] = previous["ensemble"]
    if args.apgd_t:
        results["apgd_t_alone"] = bench_apgd_t(model, test.x[:n], test.y[:n], args.batch_size)
    elif "apgd_t_alone" in previous:
        results["apgd_t_alone"] = previous["apgd_t_alone"]
    if args.art_examples:
        m = min(args.art_examples, len(test))
        results["art_autoattack"] = art_autoattack(model, test.x[:m], test.y[:m], args.batch_size)
    elif "art_autoattack" in previous:
        results["art_autoattack"] = previous["art_autoattack"]
    atomic_write_json(out, results)
    steps = results["steps"]
    print(f"floor (fwd+bwd, batch {steps['batch_size']}): {1000 * steps['floor_s']:.2f} ms")
    print(f"{'attack':44s} {'ms/step':>9s} {'x floor':>8s}")
    for name, row in steps["attacks"].items():
        if "error" in row:
            print(f"{name:44s} {row['error'][:60]}")
        else:
            print(f"{name:44s} {1000 * row['s_per_step']:9.2f} {row['ratio_to_floor']:8.3f}")
    if "ensemble" in results:
        e = results["ensemble"]
        ours = e["bastion_standard"]
        print(f"\nn={e['n_examples']} eps={e['eps']} clean accuracy {e['clean_accuracy']:.4f}")
        print(f"{'bastion standard':44s} robust {ours['robust_accuracy']:.4f}  {ours['wall_time_s']:.1f} s")
        print(f"  verified independently: {ours['verified']}")
        for name, peer in e["peers"].items():
            if "error" in peer:
                print(f"{name}: {peer['error'][:100]}")
                continue
            print(f"{name}\n{'':44s} robust {peer['robust_accuracy']:.4f}  {peer['wall_time_s']:.1f} s")
            print(
                f"{'':44s} bastion - peer: {peer['difference_points']:+.2f} points; "
                f"wall time ratio {peer['wall_time_ratio']:.2f}; broken only by peer {peer['broken_by_peer_only']}, "
                f"only by bastion {peer['broken_by_bastion_only']}"
            )
    if "art_autoattack" in results:
        a = results["art_autoattack"]
        print(f"\nART comparison on n={a['n_examples']}:")
        for name, row in a.items():
            if isinstance(row, dict) and "robust_accuracy" in row:
                print(f"{name:44s} robust {row['robust_accuracy']:.4f}  {row['wall_time_s']:.1f} s")
            elif isinstance(row, dict) and "error" in row:
                print(f"{name}: {row['error'][:100]}")
    for name, row in results.get("apgd_t_alone", {}).items():
        if isinstance(row, dict) and "robust_accuracy" in row:
            print(f"{name:44s} robust {row['robust_accuracy']:.4f}  {row['wall_time_s']:.1f} s (alone)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
