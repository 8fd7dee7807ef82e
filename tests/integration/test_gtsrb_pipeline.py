"""bench/gtsrb.py end to end on a miniature GTSRB, then `bastion evaluate --data` on an official test layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.artifacts.results import read_results
from bastion.cli import app

REPO = Path(__file__).resolve().parents[2]
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def ppm(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    return b"P6\n%d %d\n255\n" % (width, height) + pixels.astype(np.uint8).tobytes()


def sign(class_id: int, rng: np.random.Generator, side: int = 12) -> np.ndarray:
    """A class-coloured square with noise: learnable, not trivial."""
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]][class_id], dtype=np.int64)
    return np.clip(base + rng.integers(-40, 40, (side, side, 3)), 0, 255)


def write_release(root: Path, rng: np.random.Generator) -> None:
    for class_id in range(3):
        folder = root / "Final_Training" / "Images" / f"{class_id:05d}"
        folder.mkdir(parents=True)
        rows = []
        for track in range(6):
            for frame in range(3):
                name = f"{track:05d}_{frame:05d}.ppm"
                (folder / name).write_bytes(ppm(sign(class_id, rng)))
                rows.append(f"{name};12;12;1;1;10;10;{class_id}")
        (folder / f"GT-{class_id:05d}.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def write_official_test(root: Path, rng: np.random.Generator, n: int = 9) -> None:
    folder = root / "Final_Test" / "Images"
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        (folder / f"{i:05d}.ppm").write_bytes(ppm(sign(i % 3, rng, side=15)))
        rows.append(f"{i:05d}.ppm;15;15;1;1;13;13;{i % 3}")
    (folder / "GT-final_test.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def load_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_gtsrb", REPO / "bench" / "gtsrb.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_bench_then_evaluate_on_official_test_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    write_release(tmp_path / "train", rng)
    write_official_test(tmp_path / "test", rng)
    bench: Any = load_bench()
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", f"gtsrb:{tmp_path / 'train'}", "--epochs", "3", "--std-epochs", "1"]
    argv += ["--n-test", "8", "--n-test-suite", "6", "--suite", "quick"]
    argv += ["--model-options", '{"channels": [4, 8], "hidden": 16}']
    assert bench.main([*argv, "--threads", "1"]) == 0
    results = read_results(out / "results.json")
    assert set(results["models"]) == {"standard", "progressive-trades", "progressive-trades+defense"}
    eps = "0.0313725"
    for name, entry in results["models"].items():
        assert entry["n_examples"] == 8 and entry["n_examples_suite"] == 6
        assert {"fgsm", "pgd-50x2", "quick-ensemble", "pgd-10"} <= set(entry["robust_accuracy"])
        assert results["comparison"][name]["fgsm"] == entry["robust_accuracy"]["fgsm"][eps]
    assert results["paper_claims"] == {"clean_accuracy": 0.892, "fgsm": 0.705, "eps": eps}
    assert results["projection_full_run"]["cpu_seconds"]["total_s"] > 0
    assert results["split"]["method"].startswith("by physical track")
    # the warm start's cost is part of the defended model's count
    warm = results["models"]["progressive-trades"]["training"]
    std = results["models"]["standard"]["training"]
    assert warm["gradient_evaluations"] > std["gradient_evaluations"] > 0
    assert any(e["kind"] == "warm_start" for e in warm["events"])

    # --reuse evaluates the saved models again without training them, and still projects the full run
    weights = (out / "models" / "progressive-trades" / "weights.safetensors").read_bytes()
    assert bench.main([*argv, "--threads", "1", "--reuse"]) == 0
    reused = read_results(out / "results.json")
    assert (out / "models" / "progressive-trades" / "weights.safetensors").read_bytes() == weights
    assert reused["models"]["progressive-trades"]["training"] == warm
    assert reused["models"]["standard"]["clean_accuracy"] == results["models"]["standard"]["clean_accuracy"]
    assert "train_standard_s" not in reused["timing"]
    assert reused["projection_full_run"]["cpu_seconds"]["total_s"] > 0
    # ... but refuses models trained with other options than the run asks for (no silent mislabelled results)
    with pytest.raises(SystemExit, match="was trained with progressive-trades"):
        bench.main([*argv, "--threads", "1", "--reuse", "--beta", "7"])

    # the saved models and defense re-evaluate on the official test layout (9 images, other file sizes)
    evaluated = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(out), "--data", f"gtsrb:{tmp_path / 'test'}", "--eps", eps, "--suite", "quick"]
        + ["--device", "cpu", "--out", str(evaluated)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    again = read_results(evaluated / "results.json")
    assert set(again["models"]) == {"standard", "progressive-trades", "progressive-trades+defense"}
    assert all(entry["n_examples"] == 9 for entry in again["models"].values())
    assert again["split"]["method"].startswith("official test set")


@pytest.mark.slow
def test_bench_defends_a_model_of_another_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--method swaps the robust model's training method; names, cost and defense follow it."""
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path / "cache"))
    write_release(tmp_path / "train", np.random.default_rng(1))
    bench: Any = load_bench()
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", f"gtsrb:{tmp_path / 'train'}", "--method", "fast-at", "--epochs", "2"]
    argv += ["--std-epochs", "1", "--n-test", "6", "--suite", "default", "--threads", "1"]
    argv += ["--model-options", '{"channels": [4, 8], "hidden": 16}']
    assert bench.main(argv) == 0
    results = read_results(out / "results.json")
    assert set(results["models"]) == {"standard", "fast-at", "fast-at+defense"}
    assert results["models"]["fast-at+defense"]["path"] == "defenses/fast-at"
    assert (out / "defenses" / "fast-at").is_dir()
    assert results["models"]["fast-at"]["training"]["method"] == "fast-at"
    assert results["projection_full_run"]["cpu_seconds"]["train_fast-at_s"] > 0


@pytest.mark.slow
def test_bench_takes_an_explicit_schedule_and_can_skip_the_defense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--method-options reaches the trainer (carried stages, FGSM-RS's guard); --no-defense fits no defense."""
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path / "cache"))
    write_release(tmp_path / "train", np.random.default_rng(2))
    bench: Any = load_bench()
    stages = '{"stages": [{"epochs": 2, "eps": 0.0313725, "n_steps": 1, "start": "carry", "rel_step_size": 0.5}]}'
    base = ["--data", f"gtsrb:{tmp_path / 'train'}", "--std-epochs", "1", "--n-test", "6", "--suite", "default"]
    base += ["--threads", "1", "--no-defense", "--model-options", '{"channels": [4, 8], "hidden": 16}']
    assert bench.main(["--out", str(tmp_path / "pt"), *base, "--method-options", stages]) == 0
    results = read_results(tmp_path / "pt" / "results.json")
    assert set(results["models"]) == {"standard", "progressive-trades"}
    assert not (tmp_path / "pt" / "defenses").exists()
    training = results["models"]["progressive-trades"]["training"]
    assert [(s["epochs"], s["n_steps"], s["start"]) for s in training["schedule"]] == [(2, 1, "carry")]

    with pytest.raises(Exception, match="gaurd"):  # a misspelt key is refused by name, before any training
        bench.main(["--out", str(tmp_path / "bad"), *base, "--method", "fast-at", "--method-options", '{"gaurd": 1}'])
    assert not (tmp_path / "bad" / "results.json").exists()
