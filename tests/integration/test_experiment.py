"""`bastion experiment`: a killed experiment resumes without touching finished runs; statistics come out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bastion.app.experiment import DONE, ExperimentConfig, slug
from bastion.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

CONFIG = {
    "name": "resume-test",
    "methods": ["standard"],
    "seeds": [0, 1],
    # Four epochs: the kill lands between the second run's first checkpoint and its end (polled every 20 ms).
    "train": {"epochs": 4, "val_examples": 0, "batch_size": 64},
    "evaluate": {"suite": "quick", "eps": [0.1, 0.2], "n_examples": 40, "checks_examples": 20},
    "transfer_examples": 0,
}


def _start(config: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bastion", "experiment", str(config), "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_killed_experiment_resumes_and_keeps_finished_runs(tmp_path: Path) -> None:
    config, out = tmp_path / "exp.yaml", tmp_path / "out"
    config.write_text(yaml.safe_dump(CONFIG))
    first, second = out / "runs/digits/standard/seed-0", out / "runs/digits/standard/seed-1"
    proc = _start(config, out)
    deadline = time.monotonic() + 240
    try:
        # Kill once the first run is done and the second has written a resumable checkpoint.
        while not ((first / DONE).is_file() and (second / "checkpoint/last.safetensors").is_file()):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the experiment never reached the second run's first epoch"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (second / DONE).is_file(), "the second run finished before the kill; the test proves nothing"
    finished = (first / "results.json").read_bytes(), (first / DONE).stat().st_mtime_ns

    proc = _start(config, out)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output
    assert ((first / "results.json").read_bytes(), (first / DONE).stat().st_mtime_ns) == finished
    resumed = json.loads((second / "results.json").read_text())["models"]["standard"]["training"]
    assert resumed["resumed_at_epoch"] is not None and resumed["resumed_at_epoch"] >= 1
    provenance = json.loads((second / "provenance.json").read_text())
    assert provenance["seed"] == 1 and provenance["packages"]["torch"] and "commit" in provenance["git"]
    checks = json.loads((second / "results.json").read_text())["models"]["standard"]["checks"]
    assert {"gradient-health", "unbounded-eps-reaches-zero"} <= set(checks)
    comparison = json.loads((out / "comparison.json").read_text())
    clean = comparison["datasets"]["digits"]["metrics"]["clean"]["by_method"]["standard"]
    assert clean["seeds"] == [0, 1] and clean["interval"]["method"] == "t" and clean["interval"]["n"] == 2


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="baseline"):
        ExperimentConfig.parse({"methods": ["standard"], "baseline": "trades"})
    with pytest.raises(ConfigError, match=r"train\.seed"):
        ExperimentConfig.parse({"methods": ["standard"], "train": {"seed": 3}})
    with pytest.raises(ConfigError, match="duplicates"):
        ExperimentConfig.parse({"methods": ["standard"], "seeds": [1, 1]})
    cfg = ExperimentConfig.parse({"methods": ["standard"], "train": {"epochs": 2}})
    with pytest.raises(ConfigError, match="unknown config key 'epoch'"):
        ExperimentConfig.parse({"methods": ["standard"], "train": {"epoch": 2}}).train_config("digits", "standard", 0)
    assert cfg.train_config("digits", "standard", 4).seed == 4


def test_dataset_folder_names_are_safe_and_unique() -> None:
    assert slug("digits") == "digits"
    a, b = slug("mnist:/data/a b"), slug("mnist:/data/a_b")
    assert a != b and "/" not in a and ":" not in a


def _fake_run(run_dir: Path, method: str, seed: int, clean: list[bool], robust: list[bool]) -> None:
    """A finished run folder as `run_job` leaves it, without training anything."""
    from bastion.artifacts.results import new_results, write_results
    from bastion.io import atomic_write_json

    results = new_results(command="evaluate", data="digits", seed=seed, split={"index_digest": f"split-{seed}"})
    results["models"][method] = {
        "path": f"models/{method}",
        "clean_accuracy": sum(clean) / len(clean),
        "n_examples": len(clean),
        "robust_accuracy": {"pgd-10": {"0.1": sum(robust) / len(robust)}},
    }
    write_results(run_dir / "results.json", results)
    bits = {"clean": "".join("1" if c else "0" for c in clean), "robust": {"pgd-10": {"0.1": ""}}}
    bits["robust"]["pgd-10"]["0.1"] = "".join("1" if c else "0" for c in robust)
    atomic_write_json(run_dir / "outcomes.json", {method: bits})
    atomic_write_json(run_dir / DONE, {"wall_time_s": 1.0, "peak_rss_mb": 100.0})


def test_comparison_pairs_by_seed_and_by_example(tmp_path: Path) -> None:
    from bastion.app.experiment import compare
    from bastion.render.experiment import comparison_markdown

    cfg = ExperimentConfig.parse(
        {"methods": ["a", "b"], "seeds": [0, 1, 2, 3], "baseline": "b", "transfer_examples": 0}
    )
    n = 100
    for seed in cfg.seeds:
        # a is right on 80 + seed examples, b on 60: a wins by 20 + seed points on the same examples
        _fake_run(
            tmp_path / f"runs/digits/a/seed-{seed}",
            "a",
            seed,
            [i < 80 + seed for i in range(n)],
            [i < 50 for i in range(n)],
        )
        _fake_run(
            tmp_path / f"runs/digits/b/seed-{seed}", "b", seed, [i < 60 for i in range(n)], [i < 50 for i in range(n)]
        )
    comparison = compare(cfg, tmp_path)
    clean = comparison["datasets"]["digits"]["metrics"]["clean"]
    assert clean["by_method"]["a"]["values"] == [0.8, 0.81, 0.82, 0.83]
    row = clean["comparisons"][0]
    assert (row["a"], row["b"], row["seeds"]) == ("a", "b", [0, 1, 2, 3])
    assert row["paired_t"]["test"] == "paired t-test" and row["paired_t"]["n"] == 4
    assert row["paired_t"]["difference"] == pytest.approx(0.215)
    assert row["paired_t"]["correction"] == "Holm over 2"  # clean and robust@0.1
    assert row["sentence"].startswith("a beats b by 21.5 points [")
    assert "(paired t-test, n = 4 seeds, Holm over 2)" in row["sentence"]
    assert [m["seed"] for m in row["mcnemar"]] == [0, 1, 2, 3]
    assert row["mcnemar"][0]["n"] == n and row["mcnemar"][0]["difference"] == pytest.approx(0.2)
    robust = comparison["datasets"]["digits"]["metrics"]["robust@0.1"]["comparisons"][0]
    assert robust["mcnemar"][0]["p_value"] == 1.0  # identical outcomes: no discordant pair
    text = comparison_markdown(comparison)
    assert "| a | 81.5% |" in text and "McNemar (exact), n = 100 examples" in text  # 20-23 discordant pairs
