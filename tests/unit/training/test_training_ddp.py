"""Data-parallel training: `torchrun --nproc_per_node=2 -m bastion train` on CPU (gloo) matches one process.

Two ranks with half of every global batch each average their gradients weighted by shard size, so they
take the same optimiser steps as one process with the whole batch, up to float summation order. What must
match exactly: the pass counts (every example crafted and trained on once per epoch, on some rank).
Standard training has no randomness besides the shared shuffle, so its weights match to float tolerance;
adversarial training draws its random starts per rank, so there only accuracy is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bastion.app.config import TrainConfig
from bastion.app.train import run_train
from bastion.artifacts.results import read_results

SRC = Path(__file__).resolve().parents[3] / "src"
BASE = {
    "data": "digits",
    "model": "mlp",
    "model_options": {"hidden": [32]},
    "epochs": 2,
    "eps": 0.1,
    "n_steps": 1,
    "batch_size": 64,
    "val_examples": 64,
    "device": "cpu",
    "seed": 1,
}


def _torchrun(out: Path, config: Path) -> None:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"})
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "bastion",
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]


@pytest.mark.parametrize("method", ["standard", "pgd-at"])
def test_two_process_training_matches_one_process(tmp_path: Path, method: str) -> None:
    import yaml

    cfg = {**BASE, "method": method}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    _torchrun(tmp_path / "ddp", config)
    run_train(TrainConfig.parse(cfg), tmp_path / "single")

    ddp = read_results(tmp_path / "ddp" / "results.json")["models"][method]
    one = read_results(tmp_path / "single" / "results.json")["models"][method]
    assert ddp["training"]["world_size"] == 2 and one["training"]["world_size"] == 1
    assert ddp["training"]["gradient_evaluations"] == one["training"]["gradient_evaluations"]
    assert ddp["training"]["forward_passes"] == one["training"]["forward_passes"]
    assert [s["gradient_evaluations"] for s in ddp["training"]["stages"]] == [
        s["gradient_evaluations"] for s in one["training"]["stages"]
    ]
    a = load_file(tmp_path / "ddp" / "models" / method / "weights.safetensors")
    b = load_file(tmp_path / "single" / "models" / method / "weights.safetensors")
    if method == "standard":
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3)
    assert abs(ddp["clean_accuracy"] - one["clean_accuracy"]) <= 0.05
