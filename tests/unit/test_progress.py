"""Progress inside an attack cell: every per-batch loop of an evaluation reports where it is, to a listener."""

from __future__ import annotations

import torch
from torch import nn

from bastion import progress
from bastion.attacks import FGSM, PGD
from bastion.attacks.worst_case import AttackSequence
from bastion.evaluation.evaluate import evaluate
from bastion.progress import Step
from bastion.threat import ThreatModel


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def test_steps_carry_their_tasks_and_go_nowhere_without_a_listener() -> None:
    progress.advance(1, 2, "batches")  # no listener: nothing happens, nothing fails
    steps: list[Step] = []
    with progress.listening(steps.append), progress.task("outer"):
        with progress.task("inner"):
            progress.advance(1, 3, "attacks", current="square")
        with progress.task("swapped", replace=True):
            progress.advance(2, 2, "batches")
    progress.advance(1, 1, "batches")
    assert [s.where for s in steps] == [("outer", "inner"), ("swapped",)]
    assert steps[0].describe() == "outer, inner: 1/3 attacks (now square)"
    assert steps[1].describe() == "swapped: 2/2 batches"  # finished: no "now"


def test_a_plain_suite_reports_every_batch_of_every_cell(digits) -> None:
    steps: list[Step] = []
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    with progress.listening(steps.append):
        evaluate(tiny_model(), digits.test.take(25), {"fgsm": FGSM()}, threat, [0.05, 0.1], batch_size=10)
    assert [(s.label, s.done, s.total) for s in steps] == [
        (f"fgsm eps {eps}", done, 3) for eps in ("0.05", "0.1") for done in range(4)
    ]


def test_a_worst_case_sequence_reports_its_batches_and_each_attack_on_them(digits) -> None:
    steps: list[Step] = []
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    suite = AttackSequence(fgsm=FGSM(), pgd=PGD(n_steps=2))
    with progress.listening(steps.append):
        evaluate(tiny_model(), digits.test.take(15), suite, threat, [0.1], batch_size=10)
    lines = [s.describe() for s in steps]
    assert lines == [
        "eps 0.1, worst case: 0/2 batches",
        "eps 0.1, worst case, batch 1/2: 0/2 attacks (now fgsm)",
        "eps 0.1, worst case, batch 1/2: 1/2 attacks (now pgd)",
        "eps 0.1, worst case, batch 1/2: 2/2 attacks",
        "eps 0.1, worst case: 1/2 batches",
        "eps 0.1, worst case, batch 2/2: 0/2 attacks (now fgsm)",
        "eps 0.1, worst case, batch 2/2: 1/2 attacks (now pgd)",
        "eps 0.1, worst case, batch 2/2: 2/2 attacks",
        "eps 0.1, worst case: 2/2 batches",
    ]
