"""The benchmark's MNIST model: a small CNN adversarially trained with bastion's trainer, cached on disk.

Progressive TRADES ramps eps up to 0.3 (plain PGD-AT at 0.3 from scratch often fails to start on 8,000
images), so robust accuracy at eps 0.3 is far from 0 and attack strength differences show.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from bastion.data import Dataset
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit

EPS = 0.3


def small_cnn(data: Dataset, channels: tuple[int, int]) -> Architecture:
    """The benchmarks' CNN (hidden 64) for ``data``, normalised by its training split's statistics."""
    mean, std = normalization_stats(data.train.x)
    return Architecture(
        name="cnn",
        input_shape=data.spec.input_shape,
        num_classes=data.spec.num_classes,
        mean=mean,
        std=std,
        options={"channels": list(channels), "hidden": 64},
    )


def load_or_train(
    data: Dataset, cache: Path, *, epochs: int = 12, n_steps: int = 7, seed: int = 0
) -> tuple[nn.Module, dict]:
    """The cached model if its folder exists, else train (progressive TRADES up to eps 0.3) and save it.

    Shared by bench/attacks.py and bench/defense.py so both measure the same kind of model.
    """
    if (cache / "model.json").exists():
        return checkpoint.load_model(cache), {"cached": True, **checkpoint.read_description(cache).get("bench", {})}
    arch = small_cnn(data, channels=(16, 32))
    model = build_model(arch, seed=seed)
    objective, schedule = build_method(
        "progressive-trades", MethodConfig(epochs=epochs, eps=EPS, n_steps=n_steps, n_stages=3, beta=6.0)
    )
    threat = ThreatModel(norm="linf", eps=EPS, domain=data.spec.domain)
    start = time.perf_counter()
    fit(
        model,
        data.train,
        objective,
        schedule,
        threat,
        settings=TrainSettings(batch_size=128, val_examples=0),
        seed=seed,
    )
    info = {"method": "progressive-trades", "epochs": epochs, "eps": EPS, "train_time_s": time.perf_counter() - start}
    checkpoint.save_model(model.eval(), arch, data.spec, cache, extra={"bench": info})
    return model.eval(), {"cached": False, **info}


if __name__ == "__main__":
    import sys

    from bastion import load_dataset

    torch.set_num_threads(1)
    data = load_dataset(f"mnist:{sys.argv[1]}", seed=0)
    model, info = load_or_train(data, Path(sys.argv[2]))
    print(info)
