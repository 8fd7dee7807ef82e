"""Which survivors does Square break? Their rank by the margin the gradient attacks left vs by clean loss.

The probed Square of the ``standard`` suite attacks survivors nearest-first and stops after a chunk that
breaks none, so its strength rests on the order. This runs the suite's gradient part (APGD-CE, APGD-T,
DeepFool, in sequence), then the full 5,000-query Square on every survivor for each seed, and reports
where each example Square broke ranked (0 = nearest) by the lowest margin the gradient attacks reached
(``prior_score``, the suite's order) and by the clean cross-entropy (the order without it).

    PYTHONPATH=src:bench python bench/probe_order.py --model runs/test0/models/trades@seed0 --eps 0.3 \\
        --start 0 --n-examples 200 --seeds 0 1 --out bench/results/probe-order.json

Single intra-op thread. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bastion import load_dataset
from bastion.attacks import Square, cross_entropy
from bastion.attacks.worst_case import worst_case
from bastion.evaluation.suites import build_suite
from bastion.goals import Misclassify
from bastion.io import atomic_write_json
from bastion.models.checkpoint import load_model
from bastion.threat import ThreatModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", default="mnist:../shared/data/mnist")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--start", type=int, default=0, help="first test example")
    p.add_argument("--n-examples", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/probe-order.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    data = load_dataset(args.data)
    x = data.test.x[args.start : args.start + args.n_examples]
    y = data.test.y[args.start : args.start + args.n_examples]
    threat = ThreatModel(norm="linf", eps=args.eps, domain=data.spec.domain)

    gradient_part = {k: v for k, v in build_suite("standard").items() if k != "square"}
    t0 = time.perf_counter()
    result = worst_case(model, x, y, gradient_part, threat, rng=torch.Generator().manual_seed(0))
    gradient_s = time.perf_counter() - t0
    idx = result.robust.nonzero().squeeze(1)
    goal = Misclassify(y[idx])
    with torch.no_grad():
        clean_loss = cross_entropy(model(x[idx]), y[idx])
    prior = result.nearest[idx]  # the prior_score the suite hands Square
    by_margin = prior.argsort(stable=True).argsort()
    by_loss = clean_loss.argsort(descending=True, stable=True).argsort()

    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        sq = Square(n_queries=5000)(model, x[idx], goal, threat, rng=torch.Generator().manual_seed(seed))
        broken = sq.success.nonzero().squeeze(1).tolist()
        rows.append(
            {
                "seed": seed,
                "square_s": round(time.perf_counter() - t0, 2),
                "broken": [int(idx[b]) + args.start for b in broken],
                "margin_ranks": sorted(int(by_margin[b]) for b in broken),
                "clean_loss_ranks": sorted(int(by_loss[b]) for b in broken),
            }
        )
    report = {
        "model": str(args.model),
        "data": args.data,
        "eps": args.eps,
        "examples": [args.start, args.start + args.n_examples],
        "survivors": int(idx.numel()),
        "gradient_part_s": round(gradient_s, 2),
        "seeds": rows,
    }
    atomic_write_json(args.out, report)
    print(f"{report['survivors']} survivors of {args.n_examples} after APGD-CE, APGD-T, DeepFool ({gradient_s:.1f} s)")
    print(f"{'seed':>4}  {'Square s':>8}  {'broken':>6}  {'margin ranks':<20}  clean-loss ranks")
    for r in rows:
        print(
            f"{r['seed']:>4}  {r['square_s']:>8}  {len(r['broken']):>6}  {r['margin_ranks']!s:<20}  "
            f"{r['clean_loss_ranks']}"
        )


if __name__ == "__main__":
    main()
