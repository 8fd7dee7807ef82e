"""Targeted attacks reach their target; APGD's schedule and losses follow the paper."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import small_mlp

from bastion.attacks import APGD, APGDT, CW, MIFGSM, PGD, Square, cross_entropy, dlr_targeted
from bastion.attacks.apgd import checkpoints
from bastion.goals import Misclassify, Reach
from bastion.threat import ThreatModel


@pytest.mark.parametrize(
    ("attack", "norm", "eps"),
    [
        (PGD(n_steps=20), "linf", 0.5),
        (MIFGSM(n_steps=20), "linf", 0.5),
        (APGD(loss=cross_entropy, n_steps=20), "linf", 0.5),
        (APGDT(n_steps=20), "linf", 0.5),
        (Square(n_queries=300), "linf", 0.5),
        (CW(n_steps=50, n_search=3, c_init=1.0, lr=0.05), "l2", 3.0),
    ],
    ids=["pgd", "mifgsm", "apgd", "apgd-t", "square", "cw"],
)
def test_targeted_attacks_hit_their_target(attack, norm, eps) -> None:
    model = small_mlp(16, 6, seed=5)
    x = torch.rand(24, 16, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    target = (y + 1) % 6
    threat = ThreatModel(norm=norm, eps=eps)
    result = attack(model, x, Reach(target), threat, rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred == target)
    assert result.success.float().mean() >= 0.6


def test_apgd_checkpoints_match_the_paper() -> None:
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_targeted_dlr_needs_four_classes_and_rises_toward_the_target() -> None:
    logits = torch.tensor([[4.0, 1.0, 0.5, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([1])
    closer = torch.tensor([[3.0, 2.0, 0.5, 0.0]])
    assert dlr_targeted(closer, y, t) > dlr_targeted(logits, y, t)
    with pytest.raises(ValueError, match="4 classes"):
        dlr_targeted(logits[:, :3], y, t)


def test_apgd_t_breaks_more_than_the_single_best_target_and_reports_queries() -> None:
    model = small_mlp(8, 6, seed=4)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(32, 8, generator=gen)
    y = model(x).argmax(1)
    threat = ThreatModel(norm="linf", eps=0.08)
    one = APGDT(n_targets=1, n_steps=20)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    five = APGDT(n_targets=5, n_steps=20)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert five.success.sum() >= one.success.sum()
    assert five.n_queries is not None and int(five.n_queries.max()) <= 2 + 1 + 5 * 21


def _clean_gaps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) clean logit gaps z_y - z_t to the k most likely wrong classes, nearest first."""
    with torch.no_grad():
        logits = model(x)
    wrong = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), -torch.inf)
    return logits.gather(1, y[:, None]) - wrong.sort(dim=1, descending=True).values[:, :k]


def test_apgd_t_gap_ratio_skips_only_far_targets() -> None:
    model = small_mlp(8, 6, seed=4)
    x = torch.rand(48, 8, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    threat = ThreatModel(norm="linf", eps=0.03)
    gaps = _clean_gaps(model, x, y, 5)
    near = (gaps <= 1.2 * gaps[:, :1]).sum(1)  # targets each example may be attacked with
    assert (near == 1).any() and (near > 1).any()  # the data exercise both cases
    out = APGDT(n_targets=5, n_steps=20, max_gap_ratio=1.2)(
        model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0)
    )
    assert out.n_queries is not None
    # 3 forward passes outside the runs (as in the test above), then 21 per target attacked.
    assert bool((out.n_queries <= 3 + 21 * near).all())
    full = APGDT(n_targets=5, n_steps=20)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert bool((full.n_queries[~full.success] == 3 + 5 * 21).all())  # without the ratio: every target
    assert int(out.n_queries.sum()) < int(full.n_queries.sum())


def test_apgd_t_gap_ratio_large_enough_changes_nothing() -> None:
    model = small_mlp(8, 6, seed=4)
    x = torch.rand(32, 8, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(1)
    threat = ThreatModel(norm="linf", eps=0.05)
    runs = [
        APGDT(n_targets=5, n_steps=15, max_gap_ratio=ratio)(
            model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0)
        )
        for ratio in (None, 1e9)
    ]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert torch.equal(runs[0].n_queries, runs[1].n_queries)
