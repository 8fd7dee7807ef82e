"""The worst-case sequence: never weaker than a member, monotone, records per example, ranks defenses right."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks import APGD, APGDT, FGSM, PGD, Square, cross_entropy, margin
from bastion.attacks.worst_case import CLEAN, AttackSequence, worst_case
from bastion.evaluation.evaluate import ENSEMBLE, eps_key, evaluate
from bastion.evaluation.suites import SUITES, build_suite
from bastion.threat import ThreatModel


def cheap_sequence() -> AttackSequence:
    return AttackSequence(
        {
            "fgsm": FGSM(),
            "apgd-ce": APGD(loss=cross_entropy, n_steps=10),
            "apgd-t": APGDT(n_steps=8, n_targets=3),
            "square": Square(n_queries=60),
        }
    )


def test_worst_case_is_monotone_and_never_above_its_first_member(standard_model, digits) -> None:
    x, y = digits.test.x[:80], digits.test.y[:80]
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    seq = cheap_sequence()
    r = worst_case(standard_model, x, y, seq, threat, rng=torch.Generator().manual_seed(0))
    accs = [float(v.float().mean()) for v in r.robust_after.values()]
    assert accs == sorted(accs, reverse=True)
    assert torch.equal(r.robust, r.robust_after["square"])
    alone = FGSM()(standard_model, x, torch_misclassify(y), threat)
    assert float(r.robust.float().mean()) <= float(alone.robust.float().mean())
    # Records: every non-robust example names what broke it, and that attack really did.
    with torch.no_grad():
        clean_wrong = standard_model(x).argmax(1) != y
        adv_wrong = standard_model(r.x_adv).argmax(1) != y
    for i, b in enumerate(r.broken_by):
        assert (b is None) == bool(r.robust[i])
        if b == CLEAN:
            assert clean_wrong[i]
        elif b is not None:
            assert adv_wrong[i] and b in seq
    assert threat.contains(r.x_adv, x).all()
    attacked = [c["examples_attacked"] for c in r.cost.values()]
    assert attacked == sorted(attacked, reverse=True), "later attacks only see survivors"
    assert (r.forward >= 1).all() and (r.backward >= 0).all()


def torch_misclassify(y):
    from bastion.goals import Misclassify

    return Misclassify(y)


@pytest.mark.parametrize("sequential", [True, False])
def test_evaluate_ensemble_is_never_above_any_member(sequential, standard_model, digits) -> None:
    attacks = {"fgsm": FGSM(), "pgd": PGD(n_steps=5), "square": Square(n_queries=40)}
    suite = AttackSequence(attacks) if sequential else attacks
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    ev, _ = evaluate(standard_model, digits.test.take(60), suite, threat, [0.05, 0.1], batch_size=32)
    for eps in (0.05, 0.1):
        k = eps_key(eps)
        ensemble = ev.robust_accuracy[ENSEMBLE][k]
        assert all(ensemble <= ev.robust_accuracy[name][k] for name in attacks)
        assert ensemble <= ev.clean_accuracy
    assert (ev.records is not None) == sequential
    if sequential:
        assert ev.records is not None
        broken = ev.records["eps"]["0.1"]["broken_by"]
        assert len(broken) == 60
        assert sum(b is None for b in broken) / 60 == pytest.approx(ev.robust_accuracy[ENSEMBLE]["0.1"], abs=1e-6)
        assert "ensemble" not in ev.to_dict()["attack_cost"] and "records" not in ev.to_dict()


def test_defended_model_ranks_above_undefended(standard_model, trades_model, digits) -> None:
    test = digits.test.take(100)
    seq = AttackSequence({"apgd-ce": APGD(loss=cross_entropy, n_steps=20), "square": Square(n_queries=100)})
    threat = ThreatModel(norm="linf", eps=0.15, domain=digits.spec.domain)
    std, _ = evaluate(standard_model, test, seq, threat, [0.15])
    rob, _ = evaluate(trades_model, test, seq, threat, [0.15])
    assert rob.robust_accuracy[ENSEMBLE]["0.15"] > std.robust_accuracy[ENSEMBLE]["0.15"] + 0.1


def test_suites_are_registered_and_binary_avoids_dlr() -> None:
    assert {"quick", "default", "standard", "binary"} <= set(SUITES.names())
    standard = build_suite("standard")
    assert isinstance(standard, AttackSequence)
    assert list(standard) == ["apgd-ce", "apgd-t", "deepfool", "square"]
    binary = build_suite("binary")
    assert isinstance(binary, AttackSequence) and "apgd-t" not in binary
    assert binary["apgd-margin"].loss is margin  # type: ignore[attr-defined]


def test_binary_suite_runs_on_a_two_class_model() -> None:
    from attack_fixtures import small_mlp

    model = small_mlp(6, 2, seed=1)
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    suite = AttackSequence(
        {"apgd-ce": APGD(n_steps=5), "apgd-margin": APGD(loss=margin, n_steps=5), "square": Square(n_queries=20)}
    )
    r = worst_case(model, x, y, suite, ThreatModel(norm="l2", eps=0.3), rng=torch.Generator().manual_seed(0))
    assert r.robust.shape == (16,)


def test_sequential_evaluation_keeps_adversarial_inputs_per_attack(standard_model, digits) -> None:
    test = digits.test.take(40)
    seq = AttackSequence({"fgsm": FGSM(), "pgd": PGD(n_steps=5)})
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    ev, adv = evaluate(standard_model, test, seq, threat, [0.1], keep_adversarial=True)
    assert set(adv) == {("fgsm", 0.1), ("pgd", 0.1)}
    broken = ev.records["eps"]["0.1"]["broken_by"]  # type: ignore[index]
    with torch.no_grad():
        wrong_after_fgsm = standard_model(adv[("fgsm", 0.1)]).argmax(1) != test.y
        wrong_after_pgd = standard_model(adv[("pgd", 0.1)]).argmax(1) != test.y
    for i, b in enumerate(broken):
        assert bool(wrong_after_fgsm[i]) == (b in ("clean", "fgsm"))
        assert bool(wrong_after_pgd[i]) == (b is not None)
        assert threat.contains(adv[("pgd", 0.1)][i : i + 1], test.x[i : i + 1]).all()
