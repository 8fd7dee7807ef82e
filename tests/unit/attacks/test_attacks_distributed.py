"""Sharded evaluation on 2 CPU processes (gloo) equals the single-process run, example for example."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bastion.attacks import APGD, FGSM, Square
from bastion.attacks.probe import Probed
from bastion.attacks.worst_case import AttackSequence
from bastion.data.spec import Split
from bastion.evaluation import distributed
from bastion.evaluation.evaluate import evaluate
from bastion.threat import ThreatModel


def _problem() -> tuple[torch.nn.Module, Split, AttackSequence, ThreatModel]:
    from attack_fixtures import small_mlp

    model = small_mlp(6, 5, seed=7)
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(7))
    y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 5  # some clean mistakes
    suite = AttackSequence(
        {
            "fgsm": FGSM(),
            "apgd": APGD(n_steps=5),
            "square": Square(n_queries=20),
            "probed": Probed(base=Square(n_queries=40), n_probe_prior=2),  # runs once, on every rank's survivors
        }
    )
    return model, Split(x.detach(), y), suite, ThreatModel(norm="linf", eps=0.1)


def _run(model, split, suite, threat) -> dict:
    ev, _ = evaluate(model, split, suite, threat, [0.05, 0.1], seed=3, batch_size=8)
    return {"results": ev.to_dict(), "records": ev.records}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        assert distributed.rank_and_world() == (rank, world)
        assert len(distributed.my_batches(30, 8)) == 2  # batches 0, 2 or 1, 3
        result = _run(*_problem())
        if distributed.is_main():
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one(tmp_path) -> None:
    out = tmp_path / "sharded.json"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    sharded = json.loads(out.read_text())
    single = json.loads(json.dumps(_run(*_problem())))
    for key in ("clean_accuracy", "robust_accuracy", "n_examples"):
        assert sharded["results"][key] == single["results"][key]
    assert sharded["records"] == single["records"]
    cost_s, cost_1 = sharded["results"]["attack_cost"], single["results"]["attack_cost"]
    for name in cost_1:
        for k in cost_1[name]:
            assert cost_s[name][k]["forward_passes"] == cost_1[name][k]["forward_passes"]
    assert distributed.rank_and_world() == (0, 1) and distributed.gather(5) == [5]
