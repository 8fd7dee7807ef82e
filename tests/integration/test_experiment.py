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

from bastion.errors import ConfigError
from bastion.experiment import DONE, ExperimentConfig, slug

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
