"""The shipped recipes (configs/*.yaml) stay valid: they parse, and everything they name exists."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from bastion.app.config import EvalConfig, TrainConfig
from bastion.app.train import method_config
from bastion.data import DATASETS, DatasetSpec, parse_spec
from bastion.data.augment import build_augment
from bastion.domain import BoxDomain
from bastion.evaluation.suites import SUITES
from bastion.models import MODELS
from bastion.training import build_method

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TRAIN = [p for p in CONFIGS if not p.name.startswith("eval-")]
EVAL = [p for p in CONFIGS if p.name.startswith("eval-")]
EPS = 8 / 255
SHAPES = {"cifar10": ((3, 32, 32), 10, True), "gtsrb": ((3, 32, 32), 43, False)}


def test_recipes_exist() -> None:
    assert len(TRAIN) >= 9 and len(EVAL) >= 2


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.name)
def test_train_recipe(path: Path) -> None:
    cfg = TrainConfig.from_yaml(path)
    dataset, data_path = parse_spec(cfg.data)
    assert dataset in DATASETS and data_path is not None
    assert cfg.eps == pytest.approx(EPS, abs=1e-6) and cfg.norm == "linf"
    _, schedule = build_method(cfg.method, method_config(cfg))
    assert schedule.total_epochs == cfg.epochs and schedule.final_eps == pytest.approx(cfg.eps)
    shape, classes, flip = SHAPES[dataset]
    spec = DatasetSpec(
        name=dataset,
        source=cfg.data,
        modality="image",
        classes=tuple(map(str, range(classes))),
        input_shape=shape,
        domain=BoxDomain.unit(),
        flip_preserves_label=flip,
    )
    augment = build_augment(cfg.augment, spec)
    assert augment is not None and getattr(augment, "flip", None) is flip  # never flips traffic signs
    # the options are ones the model takes (building WRN-34-10 itself is left to the model tests)
    factory = MODELS.get(cfg.model)
    inspect.signature(factory).bind(
        input_shape=shape, num_classes=classes, mean=torch.zeros(3), std=torch.ones(3), **cfg.model_options
    )
    assert path.name in (REPO / "docs" / "recipes.md").read_text(), "docs/recipes.md lists every recipe"


@pytest.mark.parametrize("path", EVAL, ids=lambda p: p.name)
def test_eval_recipe(path: Path) -> None:
    cfg = EvalConfig.from_yaml(path)
    assert cfg.suite in SUITES
    assert any(e == pytest.approx(EPS, abs=1e-6) for e in cfg.eps)


def test_recipes_compare_the_three_methods() -> None:
    seen = set()
    for path in TRAIN:
        cfg = TrainConfig.from_yaml(path)
        seen.add((parse_spec(cfg.data)[0], cfg.model, cfg.model_options.get("depth"), cfg.method))
    methods = {"progressive-trades", "trades", "pgd-at"}
    for dataset, model, depth in (
        ("cifar10", "wrn", 34),
        ("cifar10", "preact-resnet18", None),
        ("gtsrb", "preact-resnet18", None),
    ):
        assert {m for d, mo, de, m in seen if (d, mo, de) == (dataset, model, depth)} == methods
