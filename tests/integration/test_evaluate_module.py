"""A user's own nn.Module under bastion's evaluation: the Python API and ``bastion evaluate module:...``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.fixtures import user_model
from torch import nn
from typer.testing import CliRunner

import bastion
from bastion.artifacts.results import read_results
from bastion.cli import app
from bastion.errors import ConfigError, InputValidationError
from bastion.models.external import ModuleSpec, build_module, check_module

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = "module:tests.fixtures.user_model"
runner = CliRunner()


@pytest.fixture(scope="module")
def data() -> bastion.Dataset:
    return bastion.load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return user_model.build()


def test_python_api_evaluates_a_user_module_with_its_own_normalisation(data, model) -> None:
    test = data.test.take(60)
    was = torch.random.get_rng_state()
    ev = bastion.evaluate_module(model, test.x, test.y, eps=[0.05, 0.2], suite="quick", domain=data.spec.domain)
    assert torch.equal(was, torch.random.get_rng_state())  # no global seeding
    assert ev.n_examples == 60 and ev.clean_accuracy > 0.8  # the fixture is a trained model
    assert set(ev.robust_accuracy) == {"fgsm", "pgd-10", "ensemble"}
    assert ev.headline["label"] == "upper bound: fgsm, pgd-10 only" and ev.headline["aa_grade"] is False
    worst = ev.headline["robust_accuracy"]
    assert worst["0.2"] <= worst["0.05"] <= ev.clean_accuracy
    for eps in ("0.05", "0.2"):
        assert worst[eps] <= min(ev.robust_accuracy[a][eps] for a in ("fgsm", "pgd-10"))
    assert ev.checks and ev.checks["gradient-health"]["status"] == "pass"
    assert not model.training


def test_python_api_rejects_inputs_outside_the_domain_and_labels_beyond_the_outputs(data, model) -> None:
    test = data.test.take(10)
    with pytest.raises(InputValidationError, match=r"outside the input domain .*normalisation inside the model"):
        bastion.evaluate_module(model, test.x * 255, test.y, eps=0.1, suite="quick")
    with pytest.raises(InputValidationError, match="to 12 but the model has 10 outputs"):
        bastion.evaluate_module(model, test.x, torch.full((10,), 12), eps=0.1, suite="quick")
    with pytest.raises(ConfigError, match=r"maps a batch of shape \(2, 1, 8, 8\) to torch.float32 \(2, 5\)"):
        bastion.evaluate_module(user_model.wrong_classes(), test.x, test.y, eps=0.1, num_classes=10)
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        bastion.evaluate_module(lambda x: x, test.x, test.y, eps=0.1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown attack suite|suite"):
        bastion.evaluate_module(model, test.x, test.y, eps=0.1, suite="no-such-suite")


def test_cli_evaluates_a_factory_and_records_where_the_model_came_from(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the module spec is imported relative to the working directory
    out = tmp_path / "ev"
    result = runner.invoke(
        app,
        ["evaluate", f"{FIXTURE}:build", "--data", "digits", "--suite", "quick", "--eps", "0.1",
         "--n-examples", "50", "--out", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    entry = results["models"]["build"]
    assert results["source"] == f"{FIXTURE}:build" and entry["path"] == f"{FIXTURE}:build"
    assert entry["model"] == {
        "source": f"{FIXTURE}:build",
        "class": "tests.fixtures.user_model.NormalizedMLP",
        "parameters": 64 * 64 + 64 + 64 * 10 + 10,
    }
    assert entry["n_examples"] == 50 and entry["clean_accuracy"] > 0.8
    assert set(entry["robust_accuracy"]) == {"fgsm", "pgd-10", "ensemble"}
    document = json.loads(result.stdout)
    assert document["models"]["build"]["headline"] == entry["headline"]
    assert "| build |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (FIXTURE, "must name a module and a factory, module:PACKAGE.MODULE:FACTORY"),
        ("module:tests.fixtures.user_model:", "must name a module and a factory"),
        ("module:tests fixtures:build", "module 'tests fixtures' is not a dotted Python name"),
        ("module:tests.fixtures.no_such_module:build", "no module named 'tests.fixtures.no_such_module'"),
        (
            "module:tests.fixtures.user_model_broken_import:build",
            "importing tests.fixtures.user_model_broken_import failed: No module named 'bastion_missing_dependency'",
        ),
        (f"{FIXTURE}:nope", "tests.fixtures.user_model has no attribute 'nope' (it has: NOT_CALLABLE, NormalizedMLP"),
        (f"{FIXTURE}:NOT_CALLABLE", "NOT_CALLABLE = 3 is not callable; name a function or class"),
        (f"{FIXTURE}:broken", "calling broken() raised RuntimeError: weights file missing"),
        (f"{FIXTURE}:not_a_module", "not_a_module() returned builtins.str, not a torch.nn.Module"),
        (f"{FIXTURE}:wrong_classes", "expected float logits of shape (2, 10) (10 classes)"),
    ],
)
def test_cli_bad_module_specs_are_clear_errors(spec: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", spec, "--data", "digits", "--suite", "quick", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_cli_module_spec_needs_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["evaluate", f"{FIXTURE}:build", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert "needs --data SPEC" in result.output


def test_module_spec_parsing_and_import_root(tmp_path: Path) -> None:
    spec = ModuleSpec.parse("module:pkg.models:Factory.create")
    assert (spec.module, spec.factory, spec.name, str(spec)) == ("pkg.models", "Factory.create", "create", str(spec))
    with pytest.raises(ConfigError, match="does not start with 'module:'"):
        ModuleSpec.parse("pkg.models:build")
    (tmp_path / "my_models.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n\n    def forward(self, x):\n        return self.fc(x)\n"
    )
    model = build_module(ModuleSpec.parse("module:my_models:Net"), root=tmp_path)  # a class is a factory too
    assert check_module(model, torch.rand(5, 4)) == 3
    import sys

    assert str(tmp_path) not in sys.path  # the import root was only borrowed


def test_check_module_names_the_problem() -> None:
    x = torch.rand(4, 3)
    with pytest.raises(ConfigError, match="has no parameters"):
        check_module(nn.Softmax(dim=1), x)
    with pytest.raises(ConfigError, match=r"fails on a batch of shape \(2, 3\) in \[.*\]: RuntimeError"):
        check_module(nn.Linear(5, 2), x)
    with pytest.raises(ConfigError, match=r"to torch.float32 \(2, 1\); expected float logits of shape \(2, C\)"):
        check_module(nn.Linear(3, 1), x)
    with pytest.raises(ConfigError, match="returned a tuple"):
        check_module(nn.LSTM(3, 2), x)
