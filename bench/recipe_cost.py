"""Expected time per epoch of the recipes in configs/: measured on this CPU, scaled to a GPU by FLOPs.

For each architecture a recipe uses, this measures on the CPU (median of repeats, batch 32):
- a training step: forward + backward with weight gradients (train mode), and
- an attack step: forward + gradient with respect to the input only (eval mode, as the attacks run),
and counts the FLOPs of both with torch.utils.flop_counter.FlopCounterMode. Each recipe's schedule
(built by bastion from the YAML) says how many of each step an epoch costs per example:
standard 1 train; PGD-AT K attack + 1 train; TRADES K attack + 2 train (clean and adversarial
forward/backward), or 1 train in a stage with beta = 0 or eps = 0.

Time per epoch = examples x FLOPs per example / throughput, with throughput either the CPU's measured
FLOP/s for that architecture (a prediction for this machine) or an assumed sustained GPU rate
(``--gpu-tflops``, default 40: an A100 training fp32 models with TF32 convolutions at roughly a quarter
of its 156 TFLOP/s peak; bastion's trainer has no mixed precision). Input pipeline, validation and
evaluation time are not included.

    python bench/recipe_cost.py --out bench/results/recipe_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bastion.app.config import TrainConfig
from bastion.app.train import method_config
from bastion.models.registry import Architecture, build_model
from bastion.training.methods import build_method

REPO = Path(__file__).resolve().parents[1]
#: Training examples per epoch: CIFAR-10 50,000 minus the 10% validation split; GTSRB's official
#: training set 39,209 images minus 10% of each class's tracks (~3,920 images) for validation.
EPOCH_EXAMPLES = {"cifar10": 45_000, "gtsrb": 35_289}
CLASSES = {"cifar10": 10, "gtsrb": 43}


def _time(fn: Any, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn`` (after the FLOP-counting call that warmed it up).

    CPU time is what the work costs a core nobody else uses; on a shared machine wall time is inflated
    by every other job, CPU time much less (cache effects remain).
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(name: str, options: dict[str, Any], num_classes: int, batch: int, repeats: int) -> dict[str, Any]:
    """FLOPs and CPU seconds per example of a training step and an attack step of one architecture."""
    arch = Architecture(
        name=name, input_shape=(3, 32, 32), num_classes=num_classes, mean=(0.5,) * 3, std=(0.25,) * 3, options=options
    )
    model = build_model(arch, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, num_classes, (batch,), generator=gen)

    def train_step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def attack_step() -> None:
        # The gradient with respect to the input only, as attacks take it (weights frozen: no weight grads).
        model.eval()
        model.requires_grad_(False)
        x_adv = x.clone().requires_grad_(True)
        F.cross_entropy(model(x_adv), y).backward()
        model.requires_grad_(True)

    flops = {}
    for key, step in (("train", train_step), ("attack", attack_step)):
        with FlopCounterMode(display=False) as counter:
            step()
        flops[key] = counter.get_total_flops() / batch
    timed = {key: _time(step, repeats) for key, step in (("train", train_step), ("attack", attack_step))}
    seconds = {key: wall / batch for key, (wall, _) in timed.items()}
    cpu_seconds = {key: cpu / batch for key, (_, cpu) in timed.items()}
    return {
        "model": name,
        "options": options,
        "num_classes": num_classes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "repeats": repeats,
        "flops_per_example": flops,
        "wall_seconds_per_example": seconds,
        "cpu_seconds_per_example": cpu_seconds,
        "wall_gflops_per_s": {k: flops[k] / seconds[k] / 1e9 for k in flops},
        "cpu_gflops_per_s": {k: flops[k] / cpu_seconds[k] / 1e9 for k in flops},
    }


def arch_key(cfg: TrainConfig) -> str:
    """e.g. "wrn(depth=34,width=10)/10": model, options and number of classes."""
    options = ",".join(f"{k}={v}" for k, v in sorted(cfg.model_options.items()))
    return f"{cfg.model}({options})/{CLASSES[cfg.data.split(':')[0]]}"


def epoch_steps(cfg: TrainConfig) -> list[dict[str, float]]:
    """Per-epoch (train steps, attack steps) per example from the recipe's actual schedule."""
    _, schedule = build_method(cfg.method, method_config(cfg))
    steps = []
    for epoch in range(schedule.total_epochs):
        _, stage = schedule.stage_at(epoch)
        if cfg.method == "standard" or stage.eps == 0:
            steps.append({"train": 1.0, "attack": 0.0})
        elif cfg.method == "pgd-at":
            steps.append({"train": 1.0, "attack": float(stage.n_steps)})
        elif stage.beta == 0:
            steps.append({"train": 1.0, "attack": 0.0})
        else:  # TRADES: clean and adversarial forward/backward, K attack steps
            steps.append({"train": 2.0, "attack": float(stage.n_steps)})
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recipe_cost.json")
    parser.add_argument("--configs", type=Path, default=REPO / "configs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gpu-tflops", type=float, default=40.0, help="assumed sustained GPU TFLOP/s")
    parser.add_argument("--threads", type=int, default=1, help="1 keeps CPU time honest on a shared machine")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    recipes = {}
    for path in sorted(args.configs.glob("*.yaml")):
        if path.name.startswith("eval-"):
            continue
        recipes[path.name] = TrainConfig.from_yaml(path)
    archs = {arch_key(cfg): cfg for cfg in recipes.values()}
    load_before = os.getloadavg()
    measured = {}
    for key, cfg in sorted(archs.items()):
        n_classes = CLASSES[cfg.data.split(":")[0]]
        repeats = 1 if cfg.model.startswith("wrn") else 3
        print(f"measuring {key}, batch {args.batch} x {repeats}...", file=sys.stderr)
        measured[key] = measure(cfg.model, dict(cfg.model_options), n_classes, args.batch, repeats)
    load_after = os.getloadavg()

    rows = []
    for file, cfg in recipes.items():
        dataset = cfg.data.split(":")[0]
        m = measured[arch_key(cfg)]
        steps = epoch_steps(cfg)
        n = EPOCH_EXAMPLES[dataset]
        flops = [
            n * (s["train"] * m["flops_per_example"]["train"] + s["attack"] * m["flops_per_example"]["attack"])
            for s in steps
        ]
        cpu = [
            n
            * (
                s["train"] * m["cpu_seconds_per_example"]["train"]
                + s["attack"] * m["cpu_seconds_per_example"]["attack"]
            )
            for s in steps
        ]
        gpu = [f / (args.gpu_tflops * 1e12) for f in flops]
        rows.append(
            {
                "recipe": file,
                "model": cfg.model,
                "method": cfg.method,
                "epochs": cfg.epochs,
                "examples_per_epoch": n,
                "pflops_total": sum(flops) / 1e15,
                "gpu_min_per_epoch_mean": statistics.mean(gpu) / 60,
                "gpu_min_per_epoch_max": max(gpu) / 60,
                "gpu_hours_total": sum(gpu) / 3600,
                "cpu_hours_per_epoch_mean": statistics.mean(cpu) / 3600,
            }
        )
    result = {
        "benchmark": "recipe_cost",
        "assumptions": {
            "gpu_sustained_tflops": args.gpu_tflops,
            "gpu_note": "fp32 training with TF32 convolutions on an A100-class GPU at ~25% of peak; "
            "scale linearly for another sustained rate",
            "step_costs": "standard 1 train; PGD-AT K attack + 1 train; TRADES K attack + 2 train",
            "excluded": "data loading, validation, evaluation",
        },
        "conditions": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "note": "CPU shared with other jobs; cpu_* figures use process CPU time, wall_* are inflated by load",
            "torch": torch.__version__,
        },
        "architectures": measured,
        "recipes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)

    print(f"{'architecture':<30}{'params':>12}{'GFLOP train':>13}{'GFLOP attack':>14}{'CPU GFLOP/s':>13}")
    for key, m in measured.items():
        print(
            f"{key:<30}{m['parameters']:>12,}{m['flops_per_example']['train'] / 1e9:>13.3f}"
            f"{m['flops_per_example']['attack'] / 1e9:>14.3f}{m['cpu_gflops_per_s']['train']:>13.1f}"
        )
    print(f"\n{'recipe':<42}{'epochs':>7}{'GPU min/epoch':>15}{'GPU h total':>13}{'CPU h/epoch (1 core)':>22}")
    for r in rows:
        print(
            f"{r['recipe']:<42}{r['epochs']:>7}{r['gpu_min_per_epoch_mean']:>15.2f}{r['gpu_hours_total']:>13.1f}"
            f"{r['cpu_hours_per_epoch_mean']:>22.1f}"
        )
    print(f"\nGPU column: FLOPs / {args.gpu_tflops:g} TFLOP/s sustained (assumption); written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
