"""``bastion experiment``: methods x datasets x seeds from one config, then statistics across seeds.

Layout of ``OUT``::

    OUT/experiment.json                         the resolved experiment config
    OUT/runs/DATASET/METHOD/seed-S/             one run: a `bastion train` + `bastion evaluate` folder, plus
        provenance.json                         resolved train/eval config, seed, package versions, git revision
        outcomes.json                           per-example outcomes (McNemar across methods)
        DONE                                    written last, atomically: the run is finished
    OUT/comparison.json, OUT/comparison.md      means with t intervals, paired tests with Holm correction

A run with ``DONE`` is never touched again. A killed run resumes: its training continues from the
trainer's per-epoch checkpoint (``checkpoint/last.safetensors``), and a finished training is not redone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from bastion.app.config import EvalConfig, TrainConfig
from bastion.app.runtime import Hooks, in_worker
from bastion.app.tracking import check_targets, tracking_run
from bastion.config import Seed, StrictConfig
from bastion.errors import ConfigError
from bastion.evaluation.evaluate import ENSEMBLE, Evaluation
from bastion.evaluation.significance import TestResult, describe, holm, mcnemar, mean_ci, paired_t, wilcoxon
from bastion.io import atomic_write_json, atomic_write_text
from bastion.render.experiment import comparison_markdown

log = logging.getLogger(__name__)

DONE = "DONE"
PACKAGES = ("bastion", "torch", "numpy", "scipy", "scikit-learn", "pydantic", "matplotlib")


class ExperimentConfig(StrictConfig):
    """Methods x datasets x seeds; ``train`` and ``evaluate`` hold the shared `train` / `evaluate` options."""

    name: str = "experiment"
    methods: list[str] = Field(min_length=1)
    datasets: list[str] = Field(default_factory=lambda: ["digits"], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)
    baseline: str | None = None  # compare every method against this one; None: every pair
    transfer_examples: int = Field(default=100, ge=0)  # test examples for the transfer matrix (0: off)

    @field_validator("methods", "datasets", "seeds")
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicates in {v}")
        return v

    @model_validator(mode="after")
    def _options_valid(self) -> ExperimentConfig:
        for key in ("data", "method", "seed"):
            if key in self.train:
                raise ValueError(f"train.{key} is set per run by the experiment; remove it")
        for key in ("data", "seed"):
            if key in self.evaluate:
                raise ValueError(f"evaluate.{key} is set per run by the experiment; remove it")
        if self.baseline is not None and self.baseline not in self.methods:
            raise ValueError(f"baseline {self.baseline!r} is not one of the methods {self.methods}")
        return self

    def train_config(self, dataset: str, method: str, seed: int) -> TrainConfig:
        return TrainConfig.parse({**self.train, "data": dataset, "method": method, "seed": seed}, "experiment train")

    def eval_config(self, seed: int) -> EvalConfig:
        return EvalConfig.parse({**self.evaluate, "seed": seed}, "experiment evaluate")


def slug(text: str) -> str:
    """A folder name for a data SPEC: readable, and unique (a short hash when characters were replaced)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:48] or "data"
    return clean if clean == text else f"{clean}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Job:
    """One run of the grid."""

    dataset: str
    method: str
    seed: int
    run_dir: Path


def jobs(cfg: ExperimentConfig, out: Path) -> list[Job]:
    return [
        Job(d, m, s, out / "runs" / slug(d) / m / f"seed-{s}")
        for d, m, s in itertools.product(cfg.datasets, cfg.methods, cfg.seeds)
    ]


def git_revision() -> dict[str, Any]:
    """The source tree's commit and whether it had uncommitted changes (None outside a git checkout)."""
    root = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if rev.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (Linux/macOS); an upper bound for the run it just did
    when one process ran several runs."""
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _bits(t: Any) -> str:
    return "".join("1" if v else "0" for v in t.tolist())


def run_job(
    cfg: ExperimentConfig,
    job: Job,
    threads: int | None = None,
    hooks: Hooks | None = None,
    log_to: Sequence[str] = (),
) -> Path:
    """Train and evaluate one run, or finish a killed one; a finished run (``DONE``) is left alone.

    ``hooks`` receive the training's and the evaluation's progress (in a worker, hooks made there by
    :func:`~bastion.app.runtime.in_worker`). ``log_to`` targets get one tracked run per job, named DATASET/METHOD/seed-S
    in experiment ``cfg.name``.
    """
    import torch

    from bastion.app.evaluate import run_evaluate
    from bastion.app.train import run_train
    from bastion.models import checkpoint

    if (job.run_dir / DONE).is_file():
        return job.run_dir
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    tcfg, ecfg = cfg.train_config(job.dataset, job.method, job.seed), cfg.eval_config(job.seed)
    atomic_write_json(
        job.run_dir / "provenance.json",
        {
            "experiment": cfg.name,
            "dataset": job.dataset,
            "method": job.method,
            "seed": job.seed,
            "train": tcfg.resolved(),
            "evaluate": ecfg.resolved(),
            "packages": package_versions(),
            "git": git_revision(),
        },
    )
    outcomes: dict[str, Any] = {}

    def keep(name: str, ev: Evaluation) -> None:
        outcomes[name] = {
            "clean": _bits(ev.clean_correct) if ev.clean_correct is not None else None,
            "robust": {a: {e: _bits(c) for e, c in by.items()} for a, by in ev.outcomes.items()},
        }

    run_name = f"{slug(job.dataset)}/{job.method}/seed-{job.seed}"
    with tracking_run(log_to, experiment=cfg.name, run_name=run_name) as tracking:
        if not (job.run_dir / "models" / job.method / checkpoint.DESCRIPTION).is_file():
            resume = (job.run_dir / "checkpoint" / "last.safetensors").is_file()
            log.info("%s: training%s", job.run_dir, " (resumed)" if resume else "")
            # The experiment owns its run folders: force.
            run_train(tcfg, job.run_dir, hooks, resume=resume, force=True, tracking=tracking)
        results = run_evaluate(
            job.run_dir, ecfg, job.run_dir, dataclasses.replace(hooks or Hooks(), on_evaluation=keep)
        )
        tracking.results(results, job.run_dir / "results.json")
    atomic_write_json(job.run_dir / "outcomes.json", outcomes)
    atomic_write_json(
        job.run_dir / DONE,
        {"wall_time_s": round(time.perf_counter() - started, 3), "peak_rss_mb": peak_rss_mb()},
    )
    return job.run_dir


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config documents (nested objects compared per key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}{key}"
            if key not in old or key not in new:
                keys.append(where)
            else:
                keys += changed_keys(old[key], new[key], f"{where}.")
        return keys
    return [] if old == new else [prefix.rstrip(".") or "(document)"]


def _stale_runs(cfg: ExperimentConfig, out: Path) -> list[Path]:
    """Run folders of this grid whose recorded train/evaluate settings differ from cfg's."""
    stale = []
    for job in jobs(cfg, out):
        provenance = job.run_dir / "provenance.json"
        if not job.run_dir.exists():
            continue
        try:
            recorded = json.loads(provenance.read_text())
        except (OSError, ValueError):
            recorded = None
        tcfg, ecfg = cfg.train_config(job.dataset, job.method, job.seed), cfg.eval_config(job.seed)
        if not isinstance(recorded, dict) or (recorded.get("train"), recorded.get("evaluate")) != (
            json.loads(json.dumps(tcfg.resolved())),
            json.loads(json.dumps(ecfg.resolved())),
        ):
            stale.append(job.run_dir)
    return stale


def check_previous_config(cfg: ExperimentConfig, out: Path, *, force: bool) -> None:
    """Refuse to mix runs of two configs in one experiment folder; with ``force``, redo the changed runs.

    Raises:
        ConfigError: ``OUT/experiment.json`` holds another config (the message names the changed keys)
            and ``force`` is not set, or it cannot be read.
    """
    previous = out / "experiment.json"
    if not previous.is_file():
        return
    try:
        old = json.loads(previous.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{previous} is not readable JSON ({exc}); move it away or choose another --out") from None
    new = json.loads(json.dumps(cfg.resolved()))
    changed = changed_keys(old, new)
    if not changed:
        return
    if not force:
        raise ConfigError(
            f"{out} holds an experiment run with another config (changed: {', '.join(changed)}); its runs and "
            "comparison would be mixed with this config's. Pass --force to redo the runs whose settings changed, "
            "or choose another --out"
        )
    for run_dir in _stale_runs(cfg, out):
        log.warning("%s was run with other settings; redoing it", run_dir)
        shutil.rmtree(run_dir)


def run_experiment(
    cfg: ExperimentConfig,
    out: Path,
    *,
    n_jobs: int = 1,
    force: bool = False,
    hooks: Hooks | None = None,
    log_to: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every job not yet done (``n_jobs`` processes in parallel), then write the comparison.

    A folder that holds an experiment with another config is refused unless ``force``; then every run
    whose train or evaluate settings changed is redone, and unchanged runs are kept. ``hooks`` get a
    stage line per run started and finished (with the time left at the rate so far) and each run's
    training and evaluation progress (from a worker process, through ``hooks.worker``). ``log_to``
    (``tensorboard:DIR``, ``mlflow:URI``) tracks every run (see bastion.app.tracking); the targets are
    checked before any run starts.
    """
    hooks = hooks or Hooks()
    check_targets(log_to)
    if n_jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {n_jobs}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a folder; choose another --out")
    check_previous_config(cfg, out, force=force)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "experiment.json"
    atomic_write_json(previous, cfg.resolved())
    todo = [j for j in jobs(cfg, out) if not (j.run_dir / DONE).is_file()]
    log.info("%d of %d runs to do", len(todo), len(jobs(cfg, out)))
    started = time.perf_counter()

    def finished(k: int, job: Job) -> None:
        elapsed = time.perf_counter() - started
        left = elapsed / k * (len(todo) - k)
        hooks.stage(f"run {k}/{len(todo)} done: {_job_name(job)} ({elapsed:.0f} s elapsed, ETA {left:.0f} s)")

    if n_jobs == 1:
        for k, job in enumerate(todo, 1):
            hooks.stage(f"run {k}/{len(todo)}: {_job_name(job)}")
            run_job(cfg, job, hooks=hooks, log_to=log_to)
            finished(k, job)
    else:
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
        hooks.stage(f"{len(todo)} runs in {n_jobs} processes")
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(
                    in_worker,
                    functools.partial(run_job, cfg, job, threads, log_to=list(log_to)),
                    hooks.worker,
                    _job_name(job),
                ): job
                for job in todo
            }
            for k, future in enumerate(as_completed(futures), 1):
                future.result()
                finished(k, futures[future])
    comparison = compare(cfg, out)
    atomic_write_json(out / "comparison.json", comparison)
    atomic_write_text(out / "comparison.md", comparison_markdown(comparison))
    return comparison


def _job_name(job: Job) -> str:
    return f"{job.dataset} {job.method} seed {job.seed}"


def _worst(robust: dict[str, Any]) -> str | None:
    return ENSEMBLE if ENSEMBLE in robust else next(iter(robust), None)


def _metrics(results: dict[str, Any], method: str) -> dict[str, float]:
    """clean and robust@EPS (worst case over the suite) of the model named ``method``."""
    entry = results["models"][method]
    out = {"clean": float(entry["clean_accuracy"])}
    worst = _worst(entry["robust_accuracy"])
    if worst is not None:
        for eps, acc in entry["robust_accuracy"][worst].items():
            out[f"robust@{eps}"] = float(acc)
    return out


def _outcome(outcomes: dict[str, Any], method: str, metric: str) -> list[bool] | None:
    entry = outcomes.get(method)
    if entry is None:
        return None
    if metric == "clean":
        bits = entry["clean"]
    else:
        worst = _worst(entry["robust"])
        bits = entry["robust"].get(worst, {}).get(metric.split("@", 1)[1]) if worst else None
    return None if bits is None else [b == "1" for b in bits]


def compare(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """Per dataset and metric: mean and t interval over seeds per method; paired t, Wilcoxon (across seeds)
    and McNemar (per seed, across examples) per method pair, each family Holm-corrected."""

    from bastion.artifacts.results import read_results

    report: dict[str, Any] = {"experiment": cfg.name, "seeds": cfg.seeds, "datasets": {}}
    for dataset in cfg.datasets:
        values: dict[str, dict[str, dict[int, float]]] = {}
        examples: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        for job in (j for j in jobs(cfg, out) if j.dataset == dataset):
            if not (job.run_dir / DONE).is_file():
                continue
            results = read_results(job.run_dir / "results.json")
            for metric, v in _metrics(results, job.method).items():
                values.setdefault(metric, {}).setdefault(job.method, {})[job.seed] = v
            outcomes = json.loads((job.run_dir / "outcomes.json").read_text())
            examples[(job.method, job.seed)] = (results["split"].get("index_digest", ""), outcomes)
        pairs = (
            [(m, cfg.baseline) for m in cfg.methods if m != cfg.baseline]
            if cfg.baseline
            else list(itertools.combinations(cfg.methods, 2))
        )
        metrics_out: dict[str, Any] = {}
        families: dict[str, list[tuple[dict[str, Any], TestResult]]] = {"t": [], "w": [], "m": []}
        for metric, by_method in values.items():
            summary = {
                m: {
                    "seeds": sorted(v),
                    "values": [v[s] for s in sorted(v)],
                    "interval": mean_ci([v[s] for s in sorted(v)]).to_dict(),
                }
                for m, v in by_method.items()
            }
            comparisons = []
            for a, b in pairs:
                va, vb = by_method.get(a, {}), by_method.get(b, {})
                seeds = sorted(set(va) & set(vb))
                row: dict[str, Any] = {"a": a, "b": b, "seeds": seeds, "mcnemar": []}
                if len(seeds) >= 2:
                    xa, xb = [va[s] for s in seeds], [vb[s] for s in seeds]
                    families["t"].append((row, paired_t(xa, xb)))
                    families["w"].append((row, wilcoxon(xa, xb)))
                for s in seeds:
                    ea, eb = examples.get((a, s)), examples.get((b, s))
                    if ea is None or eb is None or ea[0] != eb[0]:
                        continue  # different test examples: no per-example pairing
                    oa, ob = _outcome(ea[1], a, metric), _outcome(eb[1], b, metric)
                    if oa is not None and ob is not None and len(oa) == len(ob):
                        families["m"].append(({"row": row, "seed": s}, mcnemar(oa, ob)))
                comparisons.append(row)
            metrics_out[metric] = {"by_method": summary, "comparisons": comparisons}
        for key, family in families.items():
            for (holder, _), result in zip(family, holm([r for _, r in family]), strict=True):
                if key == "m":
                    holder["row"]["mcnemar"].append({"seed": holder["seed"], **result.to_dict()})
                else:
                    holder["paired_t" if key == "t" else "wilcoxon"] = result.to_dict()
                    if key == "t":
                        holder["sentence"] = describe(result, holder["a"], holder["b"])
        report["datasets"][dataset] = {"metrics": metrics_out}
        if cfg.transfer_examples > 0:
            report["datasets"][dataset]["transfer"] = transfer_matrix(cfg, out, dataset)
    return report


def transfer_matrix(cfg: ExperimentConfig, out: Path, dataset: str) -> dict[str, Any] | None:
    """source -> target -> accuracy of target on PGD examples crafted on source (largest eps), mean over
    seeds; the diagonal is the white-box accuracy. Uses the first ``transfer_examples`` test examples."""
    import torch

    from bastion._typing import Norm
    from bastion.attacks import PGD
    from bastion.data.sources import load_dataset
    from bastion.evaluation.accuracy import predict, robust_accuracy
    from bastion.models import checkpoint
    from bastion.threat import ThreatModel

    ecfg = cfg.eval_config(cfg.seeds[0])
    eps = max(ecfg.eps)
    sums: dict[str, dict[str, list[float]]] = {}
    for seed in cfg.seeds:
        dirs = {j.method: j.run_dir for j in jobs(cfg, out) if j.dataset == dataset and j.seed == seed}
        if not all((d / DONE).is_file() for d in dirs.values()) or len(dirs) < 2:
            continue
        data = load_dataset(dataset, seed=seed)
        test = data.test.take(cfg.transfer_examples)
        threat = ThreatModel(norm=Norm(ecfg.norm), eps=eps, domain=data.spec.domain)
        models = {m: checkpoint.load_model(d / "models" / m) for m, d in dirs.items()}
        for source, model in models.items():
            rng = torch.Generator().manual_seed(seed)
            x_adv = robust_accuracy(model, test, PGD(n_steps=20), threat, rng=rng).x_adv
            for target, other in models.items():
                acc = float((predict(other, x_adv) == test.y).float().mean())
                sums.setdefault(source, {}).setdefault(target, []).append(acc)
    if not sums:
        return None
    return {
        "attack": "pgd-20",
        "eps": f"{eps:.6g}",
        "n_examples": cfg.transfer_examples,
        "accuracy": {s: {t: round(sum(v) / len(v), 6) for t, v in row.items()} for s, row in sums.items()},
    }
