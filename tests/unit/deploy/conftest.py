"""Run folders and bundles for the deployment tests, built once per session from the shared models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from deploy_fixtures import TABULAR, flow_records

from bastion.artifacts.bundle import Bundle, export_bundle, load_bundle
from bastion.artifacts.results import new_results, write_results
from bastion.data import Dataset
from bastion.data.spec import DatasetSpec
from bastion.data.tabular import TabularPreprocessor
from bastion.data.tabular.domain import TabularDomain
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense, save_defense
from bastion.io import atomic_write_json
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, normalization_stats


def _arch(name: str, x: torch.Tensor, spec: DatasetSpec) -> Architecture:
    mean, std = normalization_stats(x)
    return Architecture(name=name, input_shape=spec.input_shape, num_classes=spec.num_classes, mean=mean, std=std)


@pytest.fixture(scope="session")
def image_run(tmp_path_factory: pytest.TempPathFactory, digits: Dataset, standard_model, trades_model) -> Path:
    """A demo-like run: two models, a Mahalanobis + bit-depth defense on the robust one, results.json."""
    run = tmp_path_factory.mktemp("run")
    spec = digits.spec
    for name, model in (("standard", standard_model), ("progressive-trades", trades_model)):
        checkpoint.save_model(model, _arch("cnn", digits.train.x, spec), spec, run / "models" / name, extra={"seed": 0})
    defense = build_defense(trades_model, DefenseConfig(), digits.train, digits.val, domain=spec.domain)
    save_defense(defense, run / "defenses" / "progressive-trades")
    results = new_results(command="demo", data="digits", seed=0, threat={"norm": "linf", "eps": ["0.1"]})
    for name in ("standard", "progressive-trades", "progressive-trades+defense"):
        results["models"][name] = {
            "path": f"models/{name}",
            "clean_accuracy": 0.9,
            "n_examples": 100,
            "robust_accuracy": {"ensemble": {"0.1": 0.5}},
            "headline": {"aa_grade": name.endswith("+defense"), "robust_accuracy": {"0.1": 0.5}},
        }
    write_results(run / "results.json", results)
    atomic_write_json(run / "run.json", {"command": "demo", "data": "digits", "seed": 0, "config": {"epochs": 8}})
    return run


@pytest.fixture(scope="session")
def image_bundle_path(tmp_path_factory: pytest.TempPathFactory, image_run: Path) -> Path:
    path, _ = export_bundle(image_run, tmp_path_factory.mktemp("bundles") / "digits")
    return path


@pytest.fixture(scope="session")
def image_bundle(image_bundle_path: Path) -> Bundle:
    return load_bundle(image_bundle_path)


@pytest.fixture(scope="session")
def tabular_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """An (untrained, seeded) MLP on a small flow schema with a one-hot, integer, relation and binary column."""
    pre = TabularPreprocessor(TABULAR).fit(flow_records(64))
    spec = DatasetSpec(
        name="flows",
        source="flows",
        modality="tabular",
        classes=TABULAR.classes,
        input_shape=(pre.n_features_out_,),
        domain=TabularDomain(pre),
        benign=0,
        feature_names=pre.columns_,
    )
    x = torch.as_tensor(pre.transform(flow_records(64)))
    arch = _arch("mlp", x, spec)
    run = tmp_path_factory.mktemp("tabular-run")
    checkpoint.save_model(build_model(arch, seed=0), arch, spec, run / "models" / "mlp")
    path, _ = export_bundle(run, tmp_path_factory.mktemp("bundles") / "flows")
    return load_bundle(path)
