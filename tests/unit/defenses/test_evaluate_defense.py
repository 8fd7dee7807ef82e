"""evaluate_defense runs the adaptive attacks automatically and reports failure rate, AUROC, latency."""

from __future__ import annotations

import torch
from torch import nn

from bastion.artifacts.results import new_results, validate_results
from bastion.attacks import FGSM
from bastion.data import Dataset
from bastion.defenses import BitDepth, Defense, GaussianNoise, MahalanobisDetector
from bastion.evaluation.defense import adaptive_attacks, evaluate_defense
from bastion.evaluation.evaluate import evaluate_defense as reexported
from bastion.render.summary import to_markdown
from bastion.threat import ThreatModel


def test_adaptive_evaluation_reports_every_attack(digits: Dataset, trades_model: nn.Module) -> None:
    assert reexported is evaluate_defense
    defense = Defense(trades_model, [BitDepth(3)], [MahalanobisDetector(trades_model)], domain=digits.spec.domain)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    test = digits.test.take(48)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    ev = evaluate_defense(defense, test, {"fgsm": FGSM()}, threat, [0.2], adaptive_steps=3)
    d = ev.defense
    assert d is not None and d["adaptive"] is True
    assert d["adaptive_attacks"] == ["bpda-pgd", "detector-aware-pgd", "transfer-pgd"]
    assert set(d["failure_rate"]) == {"fgsm", *d["adaptive_attacks"], "ensemble"}
    for attack in ["fgsm", *d["adaptive_attacks"]]:
        fail, robust = d["failure_rate"][attack]["0.2"], ev.robust_accuracy[attack]["0.2"]
        assert 0 <= fail <= 1 - robust + 1e-9  # failing needs a misclassification
        assert d["failure_rate"]["ensemble"]["0.2"] >= fail
    assert d["latency_ratio"] > 0 and 0 <= d["false_positive_rate"] <= 1
    results = new_results(command="test", data="digits", seed=0)
    results["models"]["m+defense"] = {"path": "x", **ev.to_dict()}
    validate_results(results)
    summary = to_markdown(results)
    assert "detector-aware-pgd" in summary and "worst case over all attacks" in summary


def test_randomized_defenses_get_eot(trades_model: nn.Module) -> None:
    attacks = adaptive_attacks(Defense(trades_model, [GaussianNoise(0.1)]), eot_samples=4)
    assert set(attacks) == {"eot-pgd", "transfer-pgd"}
    assert attacks["eot-pgd"].eot_samples == 4  # type: ignore[attr-defined]


def test_transfer_on_a_bare_model_is_the_white_box_attack(standard_model: nn.Module, digits: Dataset) -> None:
    from bastion.attacks import PGD, Transfer
    from bastion.goals import Misclassify

    x, y = digits.test.x[:20], digits.test.y[:20]
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    a = Transfer(base=PGD(n_steps=3))(standard_model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    b = PGD(n_steps=3)(standard_model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert torch.equal(a.success, b.success)


def test_adaptive_attacks_are_never_weaker_than_the_plain_attacks(digits: Dataset, trades_model: nn.Module) -> None:
    """A strong plain attack against weak (2-step) adaptive ones: each adaptive attack keeps, per input, the
    plain attacks' evasions, so its failure rate is at least every plain attack's at every eps."""
    from bastion.attacks import PGD

    defense = Defense(trades_model, [BitDepth(3)], [MahalanobisDetector(trades_model)], domain=digits.spec.domain)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    plain = {"pgd": PGD(n_steps=20, n_restarts=2), "fgsm": FGSM()}
    ev = evaluate_defense(defense, digits.test.take(60), plain, threat, [0.1, 0.2], adaptive_steps=2)
    d = ev.defense
    assert d is not None
    for eps in ("0.1", "0.2"):
        strongest_plain = max(d["failure_rate"][a][eps] for a in plain)
        for attack in d["adaptive_attacks"]:
            assert d["failure_rate"][attack][eps] >= strongest_plain
    assert sum(d["kept_plain_evasions"]["bpda-pgd"].values()) > 0  # the 2-step attack alone was weaker


def test_eot_draws_are_chosen_by_convergence(digits: Dataset, trades_model: nn.Module) -> None:
    from bastion.evaluation.defense import eot_samples_needed

    x, y = digits.test.x[:32], digits.test.y[:32]
    assert eot_samples_needed(Defense(trades_model, [BitDepth(3)]), x, y) == 1
    noisy = eot_samples_needed(Defense(trades_model, [GaussianNoise(0.3)]), x, y, max_samples=64)
    assert noisy > 1
    ev = evaluate_defense(
        Defense(trades_model, [GaussianNoise(0.3)], domain=digits.spec.domain),
        digits.test.take(16),
        {"fgsm": FGSM()},
        ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain),
        [0.1],
        adaptive_steps=2,
    )
    assert ev.defense is not None and ev.defense["eot_samples"] > 1


def test_a_sequence_suite_attacks_only_the_inputs_still_standing(digits: Dataset, trades_model: nn.Module) -> None:
    """Under an AttackSequence each plain attack skips the inputs an earlier one already made fail, and the
    per-attack robust accuracy is cumulative; the worst case is the same as running every attack on all."""
    from bastion.attacks import PGD
    from bastion.attacks.worst_case import AttackSequence

    defense = Defense(trades_model, [BitDepth(3)], [MahalanobisDetector(trades_model)], domain=digits.spec.domain)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    test = digits.test.take(60)
    attacks = {"fgsm": FGSM(), "pgd": PGD(n_steps=10)}
    seq = evaluate_defense(defense, test, AttackSequence(attacks), threat, [0.2], adaptive=False)
    alone = evaluate_defense(defense, test, attacks, threat, [0.2], adaptive=False)
    assert seq.defense is not None and alone.defense is not None
    failed_by_fgsm = round(seq.defense["failure_rate"]["fgsm"]["0.2"] * len(test))
    assert failed_by_fgsm > 0
    fgsm_passes = seq.attack_cost["fgsm"]["0.2"]["backward_passes"]
    assert seq.attack_cost["pgd"]["0.2"]["backward_passes"] <= 10 * fgsm_passes * (len(test) - failed_by_fgsm) / len(
        test
    )
    assert seq.robust_accuracy["pgd"]["0.2"] <= seq.robust_accuracy["fgsm"]["0.2"]
    assert seq.robust_accuracy["pgd"]["0.2"] <= alone.robust_accuracy["pgd"]["0.2"]
    assert seq.defense["failure_rate"]["ensemble"]["0.2"] >= alone.defense["failure_rate"]["pgd"]["0.2"]


def test_in_a_sequence_the_query_attack_skips_misclassified_inputs_and_gradient_attacks_skip_failed_ones(
    digits: Dataset, trades_model: nn.Module
) -> None:
    """After FGSM, a gradient attack still runs on every input that has not failed (misclassified but
    flagged inputs included: re-attacking them finds unflagged evasions), a Probed query attack only on the
    inputs still classified correctly (it ignores the detector, so a misclassification there is no gain)."""
    from dataclasses import dataclass, field

    from bastion.attacks import Attack
    from bastion.attacks.probe import Probed
    from bastion.attacks.worst_case import AttackSequence
    from bastion.goals import Goal

    @dataclass(frozen=True, kw_only=True)
    class Recorder(Attack):
        calls: list[int] = field(default_factory=list)
        early_stop: bool = False  # see every input handed over, clean-misclassified ones included

        def _perturb(
            self, model: nn.Module, x: torch.Tensor, goal: Goal, threat: ThreatModel, rng: object
        ) -> torch.Tensor:
            self.calls.append(x.shape[0])
            return x.clone()

    defense = Defense(trades_model, [BitDepth(3)], [MahalanobisDetector(trades_model)], domain=digits.spec.domain)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.3, domain=digits.spec.domain)
    test = digits.test.take(80)
    gradient, query = Recorder(), Recorder()
    suite = AttackSequence(
        {
            "fgsm": FGSM(),
            "gradient": gradient,
            "query": Probed(base=query, n_probe=1000, n_probe_prior=1000, early_stop=False),
        }
    )
    ev = evaluate_defense(defense, test, suite, threat, [0.3], adaptive=False)
    assert ev.defense is not None
    failed = round(ev.defense["failure_rate"]["fgsm"]["0.3"] * len(test))
    wrong = len(test) - round(ev.robust_accuracy["fgsm"]["0.3"] * len(test))
    assert wrong > failed  # the case that matters: some misclassified inputs were flagged
    assert gradient.calls == [len(test) - failed]
    assert query.calls == [len(test) - wrong]
    # the recorders change nothing: the later columns keep FGSM's inputs
    assert ev.defense["failure_rate"]["query"]["0.3"] == ev.defense["failure_rate"]["fgsm"]["0.3"]
    assert ev.robust_accuracy["query"]["0.3"] == ev.robust_accuracy["fgsm"]["0.3"]


def test_in_a_sequence_the_query_attack_is_told_how_near_the_plain_attacks_got(
    digits: Dataset, trades_model: nn.Module
) -> None:
    """The probed Square of a defense's sequence orders its inputs by the lowest margin of the defense's
    label that the clean input or any earlier plain attack reached, as in a model's worst case."""
    from dataclasses import dataclass, field

    from bastion.attacks.losses import goal_score
    from bastion.attacks.probe import Probed
    from bastion.attacks.worst_case import AttackSequence
    from bastion.goals import Misclassify

    @dataclass(frozen=True, kw_only=True)
    class PriorRecorder(Probed):
        priors: list[torch.Tensor | None] = field(default_factory=list)

        def _perturb_after(self, model, x, goal, threat, rng, prior_score):  # type: ignore[no-untyped-def]
            self.priors.append(prior_score)
            return x.clone()

    defense = Defense(trades_model, [BitDepth(3)], [MahalanobisDetector(trades_model)], domain=digits.spec.domain)
    defense.fit(digits.train.x, digits.train.y).calibrate(digits.val.x)
    threat = ThreatModel(norm="linf", eps=0.2, domain=digits.spec.domain)
    test = digits.test.take(80)
    query = PriorRecorder(base=FGSM())
    suite = AttackSequence({"fgsm": FGSM(), "query": query})
    ev = evaluate_defense(defense, test, suite, threat, [0.2], adaptive=False)

    def margins(x: torch.Tensor) -> torch.Tensor:
        probs = defense.decide(x).probabilities
        assert probs is not None
        return goal_score(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), Misclassify(test.y))

    x_fgsm = FGSM()(defense, test.x, Misclassify(test.y), threat).x_adv
    nearest = torch.minimum(margins(test.x), margins(x_fgsm))
    standing = nearest > 0  # correct on the clean input and after FGSM: what the query attack is handed
    assert round(ev.robust_accuracy["fgsm"]["0.2"] * len(test)) == int(standing.sum())
    assert len(query.priors) == 1 and query.priors[0] is not None
    torch.testing.assert_close(query.priors[0], nearest[standing])
    assert bool((query.priors[0] > 0).all())
