"""bench/tabular.py's recipes: their checks, the schedules and objectives they build, the saved width, and
the validation selection rule."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from test_tabular_constraints import kdd_training_rows

from bastion.data import load_tabular
from bastion.models import checkpoint


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    return importlib.import_module("bench.tabular")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = tmp_path_factory.mktemp("bench-recipes") / "KDDTrain+.txt"
    path.write_text("\n".join(kdd_training_rows(120, 1)) + "\n")
    return load_tabular(f"nsl-kdd:{path}", seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pgd-al"}, "unknown method"),
        ({"method": "trades", "clean_weight": 0.5}, "PGD-AT knob"),
        ({"method": "pgd-at", "clean_weight": 1.0}, r"\[0, 1\)"),
        ({"method": "pgd-at", "epochs": 4, "warmup_epochs": 4}, "warmup_epochs"),
        ({"method": "pgd-at", "eps_scale": 0.0}, "eps_scale"),
    ],
)
def test_a_bad_recipe_is_refused(bench: ModuleType, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.Recipe(**kwargs)


def test_the_warm_up_ramps_eps_to_the_full_budget(bench: ModuleType) -> None:
    recipe = bench.Recipe(method="pgd-at", epochs=20, warmup_epochs=8, clean_weight=0.5)
    objective, schedule = bench.recipe_schedule(recipe, 0.3)
    assert (objective.name, objective.clean_weight) == ("pgd-at-mixed", 0.5)
    assert schedule.total_epochs == 20
    eps = [schedule.stage_at(e)[1].eps for e in range(20)]
    assert eps == sorted(eps) and eps[0] == pytest.approx(0.3 / 9) and eps[8:] == [pytest.approx(0.3)] * 12
    trades = bench.recipe_schedule(bench.Recipe(method="trades", beta=1.0, warmup_epochs=2), 0.3)[1]
    assert all(trades.stage_at(e)[1].beta == 1.0 for e in range(10))
    assert bench.Recipe(method="pgd-at", epochs=20, warmup_epochs=8).with_epochs(2).warmup_epochs == 1


def test_a_wide_recipe_is_saved_at_its_width(bench: ModuleType, data: object, tmp_path: Path) -> None:
    recipe = bench.Recipe(method="standard", epochs=1, hidden=(32, 16))
    model, record = bench.train(data, recipe, 0.0, "linf", 0)
    bench.save_bench_model(tmp_path / "m", model, data, record, 0)
    again = checkpoint.load_model(tmp_path / "m")
    x = data.dataset.test.x[:5]  # type: ignore[attr-defined]
    assert torch.allclose(again(x), model(x))
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


def test_the_rule_takes_both_halves_of_the_goal_then_the_smallest_clean_drop(bench: ModuleType) -> None:
    recipes = {name: bench.Recipe(method="pgd-at", epochs=e) for name, e in (("x", 11), ("y", 12), ("z", 13))}
    label = {k: r.label for k, r in recipes.items()}
    base = {"standard": (0.95, 0.02)}

    def cells(values: dict[str, tuple[float, float]]) -> dict[str, dict[str, dict[str, float]]]:
        table = {"standard": {"clean": base["standard"][0], "robust": base["standard"][1]}}
        table |= {label[k]: {"clean": c, "robust": r} for k, (c, r) in values.items()}
        return {"a": table, "b": {k: dict(v) for k, v in table.items()}}

    both = cells({"x": (0.945, 0.30), "y": (0.90, 0.60), "z": (0.948, 0.03)})
    assert bench.pick(both, list(recipes.values())) == recipes["x"]  # within 1 point and doubled
    fallback = cells({"x": (0.93, 0.30), "y": (0.90, 0.60), "z": (0.949, 0.03)})
    assert bench.pick(fallback, list(recipes.values())) == recipes["x"]  # z is closest clean but not robust
    score = bench.select_score(fallback, label["z"])
    assert score["clean_ok"] and not score["doubled"] and score["worst_robust_ratio"] == 1.5
