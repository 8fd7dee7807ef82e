"""The fit loop's options: collapse detection, best checkpoint, EMA, augmentation hook, CUDA-only flags, and
the progressive schedule's new options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel
from bastion.training import PGDAT, TRADES, Schedule, Stage, Standard, TrainSettings, fit, progressive
from bastion.training import trainer as trainer_module
from bastion.training.state import BEST, load_state
from bastion.training.trainer import detect_collapse

THREAT = ThreatModel(norm="linf", eps=0.1)


def tiny(seed: int = 0) -> nn.Module:
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    return build_model(arch, seed=seed)


def weights(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_collapse_detector_fires_only_on_a_collapse() -> None:
    def h(pgd: float, fgsm: float) -> dict[str, float]:
        return {"val_robust_acc": pgd, "val_fgsm_acc": fgsm}

    assert detect_collapse([h(0.5, 0.6), h(0.6, 0.65), h(0.02, 0.9)], drop=0.25)
    assert not detect_collapse([h(0.5, 0.6), h(0.6, 0.65), h(0.3, 0.7)], drop=0.25)  # no collapse
    assert not detect_collapse([h(0.5, 0.6), h(0.6, 0.65), h(0.02, 0.3)], drop=0.25)  # FGSM fell too
    assert not detect_collapse([h(0.05, 0.2), h(0.01, 0.4)], drop=0.25)  # never robust in the first place
    assert not detect_collapse([h(0.5, 0.6)], drop=0.25)


@pytest.mark.parametrize("action", ["record", "stop", "rollback"])
def test_constructed_collapse_is_recorded_and_acted_on(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, action: str
) -> None:
    """Validation scripted as fast AT's failure: PGD accuracy crashes to ~0 while FGSM accuracy jumps."""
    script = iter([(0.5, 0.6), (0.6, 0.65), (0.01, 0.95), (0.0, 0.97), (0.0, 0.98)])

    def scripted(model, val, threat, s, seed):  # type: ignore[no-untyped-def]
        pgd, fgsm = next(script)
        return {"val_clean_acc": 0.9, "val_fgsm_acc": fgsm, "val_robust_acc": pgd}

    monkeypatch.setattr(trainer_module, "_validate", scripted)
    model = tiny()
    record = fit(
        model,
        digits.train.take(64),
        Standard(),
        Schedule((Stage(epochs=5, eps=0.1, n_steps=1),)),
        THREAT,
        settings=TrainSettings(batch_size=32, val_examples=16, collapse_action=action),  # type: ignore[arg-type]
        val=digits.val,
        checkpoint_dir=tmp_path,
    )
    events = [e for e in record.events if e["kind"] == "catastrophic-overfitting"]
    assert events and events[0]["epoch"] == 2 and events[0]["action"] == action
    assert record.best == {"epoch": 1, "val_robust_acc": 0.6}
    assert len(record.history) == (5 if action == "record" else 3)
    best, _ = load_state(tmp_path / BEST)
    at_best = all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert at_best == (action == "rollback")


def test_restore_best_keeps_the_most_robust_epoch(digits: Dataset, tmp_path: Path) -> None:
    model = tiny()
    record = fit(
        model,
        digits.train.take(128),
        PGDAT(),
        Schedule((Stage(epochs=3, eps=0.1, n_steps=1),)),
        THREAT,
        settings=TrainSettings(batch_size=32, val_examples=32, restore_best=True, lr=1e-2),
        val=digits.val,
        checkpoint_dir=tmp_path,
    )
    robust = [h["val_robust_acc"] for h in record.history]
    assert record.best is not None and record.best["val_robust_acc"] == max(robust)
    assert record.best["epoch"] == robust.index(max(robust))
    best, _ = load_state(tmp_path / BEST)
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_ema_returns_averaged_weights(digits: Dataset) -> None:
    train, schedule = digits.train.take(128), Schedule((Stage(epochs=2, eps=0.0),))
    plain, averaged = tiny(), tiny()
    fit(plain, train, Standard(), schedule, THREAT, settings=TrainSettings(batch_size=32, val_examples=0))
    fit(
        averaged,
        train,
        Standard(),
        schedule,
        THREAT,
        settings=TrainSettings(batch_size=32, val_examples=0, ema_decay=0.5),
    )
    start = weights(tiny())
    # EMA weights trail the raw ones: closer to the start, but not equal to either.
    assert not torch.equal(weights(plain), weights(averaged))
    assert (weights(averaged) - start).norm() < (weights(plain) - start).norm()


def test_augment_hook_sees_every_training_batch(digits: Dataset) -> None:
    seen: list[int] = []

    def augment(x: Tensor, gen: torch.Generator) -> Tensor:
        seen.append(x.shape[0])
        noise = torch.rand(x.shape, generator=gen, device=x.device) * 0.01
        return (x + noise).clamp(0, 1)

    fit(
        tiny(),
        digits.train.take(80),
        Standard(),
        Schedule((Stage(epochs=2, eps=0.0),)),
        THREAT,
        settings=TrainSettings(batch_size=32, val_examples=0),
        augment=augment,
    )
    assert seen == [32, 32, 16] * 2


def test_cuda_only_flags_are_no_ops_on_cpu(digits: Dataset) -> None:
    train, schedule = digits.train.take(64), Schedule((Stage(epochs=1, eps=0.1, n_steps=1),))
    a, b = tiny(), tiny()
    fit(a, train, TRADES(), schedule, THREAT, settings=TrainSettings(batch_size=32, val_examples=0))
    fit(
        b,
        train,
        TRADES(),
        schedule,
        THREAT,
        settings=TrainSettings(batch_size=32, val_examples=0, amp=True, channels_last=True),
    )
    assert torch.equal(weights(a), weights(b))


def test_progressive_single_step_stage_and_rows() -> None:
    s = progressive(epochs=8, eps=0.3, n_stages=3, max_steps=10, min_steps=2, single_step_epochs=2)
    assert s.total_epochs == 8 and len(s.stages) == 4
    assert s.stages[0].n_steps == 1 and s.stages[0].step_fraction == 1.25
    assert s.stages[0].eps == s.stages[1].eps
    s.check_progressive()
    rows = s.rows()
    assert [r["stage"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["epochs"] == "1-2" and rows[-1]["epochs"].endswith("-8")
    assert rows[-1]["step_size"] == pytest.approx(0.3 * 2.5 / 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"single_step_epochs": -1}, "single_step_epochs"),
        ({"single_step_epochs": 7}, "cannot hold"),
        ({"n_stages": 0}, "n_stages"),
        ({"min_steps": 5, "max_steps": 2}, "min_steps"),
        ({"final_fraction": 0.0}, "final_fraction"),
    ],
)
def test_bad_progressive_options_are_rejected(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        progressive(**{"epochs": 8, "eps": 0.3, "n_stages": 3, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"collapse_action": "panic"}, "collapse_action"),
        ({"collapse_drop": 0.0}, "collapse_drop"),
    ],
)
def test_bad_trainer_settings_are_rejected(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainSettings(**settings)  # type: ignore[arg-type]


def test_restore_best_without_validation_is_rejected(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="restore_best needs validation"):
        fit(
            tiny(),
            digits.train.take(32),
            Standard(),
            Schedule((Stage(epochs=1, eps=0.0),)),
            THREAT,
            settings=TrainSettings(restore_best=True),
        )


def test_resuming_another_run_is_refused(digits: Dataset, tmp_path: Path) -> None:
    from bastion.errors import CheckpointError

    train = digits.train.take(32)
    fit(tiny(), train, Standard(), Schedule((Stage(epochs=1, eps=0.0),)), THREAT, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="differs in: schedule"):
        fit(
            tiny(),
            train,
            Standard(),
            Schedule((Stage(epochs=2, eps=0.0),)),
            THREAT,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_warm_start_loads_a_saved_model_and_refuses_another_architecture(digits: Dataset, tmp_path: Path) -> None:
    from bastion.app.train import warm_start
    from bastion.models.checkpoint import save_model

    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    saved = save_model(build_model(arch, seed=11), arch, digits.spec, tmp_path / "m")
    model = tiny(0)
    warm_start(model, str(saved), arch)
    assert torch.equal(weights(model), weights(build_model(arch, seed=11)))
    other = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [16]}
    )
    with pytest.raises(ConfigError, match="do not fit"):
        warm_start(build_model(other, seed=0), str(saved), other)


@settings(max_examples=60, deadline=None)
@given(
    epochs=st.integers(1, 40),
    n_stages=st.integers(1, 6),
    min_steps=st.integers(1, 5),
    extra_steps=st.integers(0, 10),
    single=st.integers(0, 5),
    growth=st.sampled_from(["linear", "cosine"]),
    final_fraction=st.floats(0.05, 1.0),
)
def test_generated_progressive_schedules_are_valid(
    epochs: int, n_stages: int, min_steps: int, extra_steps: int, single: int, growth: str, final_fraction: float
) -> None:
    """Any schedule progressive() accepts covers exactly ``epochs``, never decreases and ends at full strength."""
    try:
        s = progressive(
            epochs=epochs,
            eps=0.3,
            n_stages=n_stages,
            max_steps=min_steps + extra_steps,
            min_steps=min_steps,
            growth=growth,  # type: ignore[arg-type]
            final_fraction=final_fraction,
            single_step_epochs=single,
        )
    except ConfigError:
        assert epochs - single < n_stages
        return
    assert s.total_epochs == epochs
    s.check_progressive()
    assert s.final_eps == pytest.approx(0.3) and s.stages[-1].n_steps == min_steps + extra_steps
    assert [s.stage_at(e)[0] for e in range(epochs)] == sorted(s.stage_at(e)[0] for e in range(epochs))
