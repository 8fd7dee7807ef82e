"""Exact resume: `bastion train` killed with SIGKILL mid-run, restarted with --resume, ends bitwise equal to an
uninterrupted run. Checkpoints are one atomic safetensors file that never unpickles anything."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bastion.errors import CheckpointError
from bastion.training.state import LAST, load_state

SRC = Path(__file__).resolve().parents[3] / "src"
CONFIG = """\
data: digits
model: mlp
model_options: {hidden: [32]}
method: pgd-at
epochs: 3
eps: 0.1
n_steps: 2
batch_size: 64
val_examples: 64
device: cpu
seed: 3
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def _train(out: Path, config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bastion", "train", "--config", str(config), "--out", str(out), *extra],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "models" / "pgd-at" / "weights.safetensors")


def test_resume_after_sigkill_gives_bitwise_identical_weights(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG)
    full, broken = tmp_path / "full", tmp_path / "broken"

    reference = _train(full, config)
    victim = _train(broken, config)
    checkpoint = broken / "checkpoint" / LAST
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    _, meta = load_state(checkpoint)
    killed_after = meta["loop"]["epoch"]
    assert 1 <= killed_after < 3, "the kill must land before training finished"
    assert not (broken / "results.json").exists()

    resumed = _train(broken, config, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode() if reference.stderr else ""

    a, b = _weights(full), _weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rec_a = json.loads((full / "models" / "pgd-at" / "model.json").read_text())["training"]
    rec_b = json.loads((broken / "models" / "pgd-at" / "model.json").read_text())["training"]
    assert rec_b["resumed_at_epoch"] == killed_after
    assert rec_a["gradient_evaluations"] == rec_b["gradient_evaluations"]
    assert rec_a["forward_passes"] == rec_b["forward_passes"]
    strip = ("wall_time_s",)
    hist_a = [{k: v for k, v in h.items() if k not in strip} for h in rec_a["history"]]
    hist_b = [{k: v for k, v in h.items() if k not in strip} for h in rec_b["history"]]
    assert hist_a == hist_b


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    config = tmp_path / "train.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "x"), "--resume"])
    assert result.exit_code == 2
    assert "no checkpoint" in result.output


def test_a_pickle_is_refused_not_executed(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / LAST
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a bastion training checkpoint"):
        load_state(path)
    assert not (tmp_path / "pwned").exists()
