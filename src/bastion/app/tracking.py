"""Run tracking where users already look: ``--log-to tensorboard:DIR`` and ``--log-to mlflow:URI``.

A job logs its resolved config once, each epoch's training curves (loss, accuracy, validation accuracy
under FGSM and PGD, the stage's eps and steps), stage transitions and trainer events as they happen,
and at the end clean and robust accuracy per attack and eps, the headline worst case and the sanity
checks' verdicts. results.json stays the canonical record; the trackers are views of it. Both libraries
are optional (``pip install 'bastion[track]'``) and imported only when asked for.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import ConfigError

SCHEMES = ("tensorboard", "mlflow")
INSTALL = "pip install 'bastion[track]' (from a checkout: make extras)"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    """``a/b/c`` with characters MLflow rejects (``+`` in ``NAME+defense``) replaced by ``_``."""
    return "/".join(_UNSAFE.sub("_", p) for p in parts)


@dataclass(frozen=True)
class LogTarget:
    """One ``--log-to SCHEME:TARGET``: a TensorBoard log folder or an MLflow tracking URI."""

    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str) -> LogTarget:
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in SCHEMES:
            raise ConfigError(
                f"--log-to {text!r}: unknown scheme {scheme!r}; use tensorboard:DIR or mlflow:URI "
                "(e.g. tensorboard:runs/tb, mlflow:http://127.0.0.1:5000)"
            )
        if not target:
            what = "a log folder (tensorboard:DIR)" if scheme == "tensorboard" else "a tracking URI (mlflow:URI)"
            raise ConfigError(f"--log-to {text!r} names no target: give {what}")
        return cls(scheme, target)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"


class Sink(Protocol):
    """One tracking backend. ``step`` is the epoch (0-based); results are logged at the last one."""

    def text(self, tag: str, text: str, step: int) -> None: ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def close(self, failed: bool) -> None: ...


class TensorBoardSink:
    """Event files under ``DIR/RUN`` (one folder per run, so ``tensorboard --logdir DIR`` compares them)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                f"--log-to tensorboard needs the track extra ({exc.name} is missing): {INSTALL}"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self, failed: bool) -> None:
        if failed:
            self.writer.add_text("status", "FAILED", 0)
        self.writer.close()


class MlflowSink:
    """One MLflow run in experiment ``experiment`` at ``uri``; texts become artifacts, checks become tags."""

    def __init__(self, uri: str, experiment: str, run_name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(f"--log-to mlflow needs the track extra ({exc.name} is missing): {INSTALL}") from None
        try:
            self.client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment_id(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        except Exception as exc:  # MLflow's own message says what is wrong with the URI or the store
            raise ConfigError(f"--log-to mlflow:{uri}: MLflow cannot open it: {exc}") from None
        self.texts: dict[str, list[str]] = {}

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, created if new; ``experiment --jobs N`` workers may race to create it."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def text(self, tag: str, text: str, step: int) -> None:
        self.texts.setdefault(tag, []).append(f"[epoch {step}] {text}" if tag == "events" else text)

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool) -> None:
        for tag, lines in self.texts.items():
            self.client.log_text(self.run_id, "\n".join(lines) + "\n", f"{tag.replace('/', '_')}.txt")
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``a.b`` string parameters (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Tracking:
    """What a job tells its trackers; with no targets, a no-op (so callers never branch on it)."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks = list(sinks)
        self.stage: int | None = None
        self.last_epoch = 0

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def config(self, config: dict[str, Any]) -> None:
        """The resolved config: MLflow parameters; a TensorBoard text."""
        for sink in self.sinks:
            if isinstance(sink, MlflowSink):
                sink.params(_flat(config))
            else:
                sink.text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def epoch(self, entry: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """One epoch's curves (``train/KEY``), a stage transition when the stage changed, and new events.

        Matches :data:`bastion.training.trainer.EpochHook`.
        """
        step = int(entry["epoch"])
        self.last_epoch = step
        values = {metric_name("train", k): float(v) for k, v in entry.items() if k != "epoch" and _number(v)}
        texts = []
        if entry.get("stage") != self.stage:
            self.stage = entry.get("stage")
            texts.append(
                f"stage {int(entry.get('stage', 0)) + 1} starts at epoch {step + 1}: "
                f"eps {float(entry.get('eps', 0)):.4g}, {entry.get('n_steps')} attack steps"
            )
        for event in events:
            kind = event.get("kind", "event")
            texts.append(f"{kind}: {event.get('reason') or json.dumps(event, sort_keys=True)}")
        for sink in self.sinks:
            sink.scalars(values, step)
            for text in texts:
                sink.text("events", text, step)

    def results(self, results: dict[str, Any], path: Path | None = None) -> None:
        """A results.json's figures at the last epoch: ``COMMAND/MODEL/...`` scalars (``evaluate/m/headline/0.1``),
        checks as texts and tags; MLflow also keeps the file itself."""
        step = self.last_epoch
        command = str(results.get("command", "evaluate"))
        values: dict[str, float] = {}
        verdicts: dict[str, str] = {}
        lines: list[str] = []
        for name, m in results["models"].items():
            values[metric_name(command, name, "clean_accuracy")] = float(m["clean_accuracy"])
            for attack, by_eps in m.get("robust_accuracy", {}).items():
                for eps, acc in by_eps.items():
                    values[metric_name(command, name, "robust_accuracy", attack, eps)] = float(acc)
            headline = m.get("headline") or {}
            for eps, acc in headline.get("robust_accuracy", {}).items():
                values[metric_name(command, name, "headline", eps)] = float(acc)
            if headline.get("label"):
                lines.append(f"{name}: headline = {headline['label']}")
            for code, check in m.get("checks", {}).items():
                verdicts[metric_name("check", name, code).replace("/", ".")] = str(check["status"])
                lines.append(f"{name}: {code}: {check['status']} - {check.get('detail', '')}")
            if "checks" in m:
                suspect = sum(c.get("status") == "SUSPECT" for c in m["checks"].values())
                values[metric_name(command, name, "suspect_checks")] = float(suspect)
        for sink in self.sinks:
            sink.scalars(values, step)
            if lines:
                sink.text("checks", "\n".join(lines), step)
            if isinstance(sink, MlflowSink):
                sink.tags(verdicts)
                if path is not None and path.is_file():
                    sink.artifact(path)

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)
        self.sinks = []


def check_targets(log_to: Sequence[str]) -> list[LogTarget]:
    """Parse every target and import its library, so a typo or a missing extra fails before any work."""
    targets = [LogTarget.parse(t) for t in log_to]
    for t in targets:
        module = "torch.utils.tensorboard" if t.scheme == "tensorboard" else "mlflow.tracking"
        try:
            __import__(module)
        except ImportError as exc:
            raise ConfigError(f"--log-to {t.scheme} needs the track extra ({exc.name} is missing): {INSTALL}") from None
    return targets


def open_tracking(log_to: Sequence[str], *, experiment: str, run_name: str) -> Tracking:
    """Trackers for every ``--log-to`` target (parsed and opened now, so a bad one fails before any work).

    Under torchrun only rank 0 logs. TensorBoard writes to ``DIR/RUN_NAME``; MLflow opens run ``run_name``
    in experiment ``experiment``.
    """
    targets = check_targets(log_to)
    if not targets or int(os.environ.get("RANK", "0")) != 0:
        return Tracking()
    sinks: list[Sink] = []
    try:
        for t in targets:
            if t.scheme == "tensorboard":
                sinks.append(TensorBoardSink(Path(t.target) / run_name))
            else:
                sinks.append(MlflowSink(t.target, experiment, run_name))
    except BaseException:
        Tracking(sinks).close(failed=True)
        raise
    return Tracking(sinks)


@contextmanager
def tracking_run(log_to: Sequence[str], *, experiment: str, run_name: str) -> Iterator[Tracking]:
    """:func:`open_tracking` for the length of a block; the runs are marked FAILED if the block raises."""
    tracking = open_tracking(log_to, experiment=experiment, run_name=run_name)
    try:
        yield tracking
    except BaseException:
        tracking.close(failed=True)
        raise
    tracking.close()
