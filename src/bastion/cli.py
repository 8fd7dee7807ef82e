"""`bastion` command line: parse options -> typed config -> library job -> render. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bastion.errors import BastionError, ConfigError
from bastion.progress import Step, listening

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Adversarial training, runtime defenses and honest robustness evaluation.",
    pretty_exceptions_enable=False,
)
# User-facing text holds paths, extras ('bastion[serve]') and SPEC options: never read it as rich markup.
# Styled fixed labels are built with ``Text.assemble``.
console = Console(stderr=False, markup=False)
err_console = Console(stderr=True, markup=False)


def _registered(module: str, attr: str) -> str:
    """The names in a registry, for help texts (so they never drift from what is registered)."""
    import importlib

    return ", ".join(getattr(importlib.import_module(module), attr))


DATA_HELP = (
    "data SPEC 'NAME:PATH[?key=value&...]', NAME one of: "
    + _registered("bastion.data.sources", "DATASETS")
    + " ('digits' is bundled: no PATH; see docs/data.md for each loader's options)"
)
MODEL_HELP = "Architecture: " + _registered("bastion.models", "MODELS") + "."
METHOD_HELP = "Training method: " + _registered("bastion.training.methods", "METHODS") + "."
SUITE_HELP = "Attack suite: " + _registered("bastion.evaluation.suites", "SUITES") + "."

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; unknown keys are errors.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for splits, initialisation and attacks.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="'auto' (CUDA if available), 'cpu', 'cuda:0'...")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (the exit code tells).")]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the results as one JSON document on stdout; logs and progress go to stderr."),
]

LogToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--log-to",
        help="Track the run: tensorboard:DIR or mlflow:URI (repeatable; needs the track extra: "
        "pip install 'bastion[track]').",
    ),
]

#: Without a terminal, a progress line at least this often (seconds) while a loop runs.
PLAIN_INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: an ETA a person reads at a glance."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class PlainProgress:
    """Progress as plain lines with elapsed time and ETA, for a log file or CI where a bar cannot draw.

    A line after every attack x eps cell, at the end of every epoch and within an epoch every ``interval``
    seconds; :meth:`heartbeat` adds a "still working" line when nothing was said for ``interval`` seconds
    (one long attack cell, the sanity checks), so a 35-minute evaluation is never silent. ``clock`` is
    injectable for tests.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.clock = write, clock
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.epochs: int | None = None  # the training's total epochs, from its schedule
        self.reset()

    def reset(self, what: str = "") -> None:
        """A new loop starts (a stage, a model, a training): time and rate are measured from here."""
        self.started = self.last_line = self.clock()
        self.first_epoch: int | None = None
        self.last_cell = 0
        self.step_started: dict[tuple[tuple[str, ...], str], float] = {}
        self.current: Step | None = None  # the innermost loop running now, if any reports
        self.what = what or getattr(self, "what", "")

    def heartbeat(self) -> None:
        """Called periodically (by a timer thread): a line if the last one is ``interval`` seconds old, saying
        where the running loop is (its ETA from its rate so far), else that the stage is still working."""
        if not self._due(False):
            return
        step = self.current
        if step is not None and step.done < step.total:
            self.write(f"  {self._step_line(step)}")
        else:
            self.write(f"  ... still working ({self.what}), {_duration(self.clock() - self.started)} elapsed")

    def _due(self, final: bool) -> bool:
        now = self.clock()
        if final or now - self.last_line >= self.interval:
            self.last_line = now
            return True
        return False

    def _eta(self, fraction: float, started: float | None = None) -> str:
        elapsed = self.clock() - (self.started if started is None else started)
        if fraction <= 0:
            return f"{_duration(elapsed)} elapsed"
        if fraction >= 1:
            return f"done in {_duration(elapsed)}"
        return f"{_duration(elapsed)} elapsed, ETA {_duration(elapsed * (1 - fraction) / fraction)}"

    def schedule(self, rows: list[dict[str, Any]]) -> None:
        """The training's total epochs: the last stage's range ("11-20") ends there."""
        self.epochs = int(str(rows[-1]["epochs"]).rsplit("-", 1)[-1]) if rows else None
        self.reset()

    def batch(self, epoch: int, done: int, total: int) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
        end = done == total
        if not self._due(end):
            return
        where = f"epoch {epoch + 1}" + (f"/{self.epochs}" if self.epochs else "")
        if self.epochs:
            todo = self.epochs - self.first_epoch
            fraction = (epoch - self.first_epoch + done / max(total, 1)) / max(todo, 1)
        else:
            fraction = done / max(total, 1)  # the epoch's own ETA when the schedule is unknown
        self.write(f"  training {where}: {done}/{total} batches, {self._eta(fraction)}")

    def step(self, step: Step) -> None:
        """A loop inside one cell (its batches, a worst-case sequence's attacks): a line every ``interval``
        seconds, timed from the loop's start (the step with ``done`` 0)."""
        key = (step.where, step.unit)
        if step.done == 0 or key not in self.step_started:
            self.step_started[key] = self.clock()
        self.current = step
        if self._due(False):
            self.write(f"  {self._step_line(step)}")

    def _step_line(self, step: Step) -> str:
        started = self.step_started[(step.where, step.unit)]
        return f"{step.describe()}, {self._eta(step.done / max(step.total, 1), started)}"

    def cell(self, done: int, total: int) -> None:
        if done < self.last_cell:  # the next model's grid starts without a stage line
            self.started = self.last_line
        self.last_cell = done
        self.current = None
        if self._due(True):  # every cell: one attack at one eps, the unit a reader follows
            self.write(f"  attack x eps: {done}/{total} cells, {self._eta(done / max(total, 1))}")


@contextmanager
def _progress(quiet: bool = False) -> Iterator[Any]:
    """Hooks for the library's callbacks: a rich bar with ETA on a terminal, plain lines otherwise,
    nothing with ``quiet``. Worker processes report through ``Hooks.worker`` (:func:`worker_progress`)."""
    from bastion.app.runtime import Hooks

    worker = functools.partial(worker_progress, quiet=quiet)
    if quiet:
        yield Hooks(worker=worker)
        return
    if not err_console.is_terminal:  # a log file, CI: plain lines with ETA, see PlainProgress
        with _plain_hooks(lambda line: err_console.print(line, soft_wrap=True), worker=worker) as hooks:
            yield hooks
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    loop: list[Any] = [None]  # the (where, unit) of the loop the "step" bar shows

    def bar(key: str, description: str, done: int, total: int) -> None:
        if key not in tasks:
            tasks[key] = progress.add_task(description, total=total)
        progress.update(tasks[key], completed=done, total=total, description=description)

    def on_step(step: Step) -> None:
        if loop[0] != (step.where, step.unit) and "step" in tasks:  # a new loop: its own bar and ETA
            progress.remove_task(tasks.pop("step"))
        loop[0] = (step.where, step.unit)
        bar("step", f"{step.label}: {step.unit}", step.done, step.total)

    def on_stage(text: str) -> None:
        for task in tasks.values():
            progress.remove_task(task)
        tasks.clear()
        err_console.print(Text.assemble((">", "bold"), " ", text), soft_wrap=True)

    with progress, listening(on_step):
        yield Hooks(
            on_stage=on_stage,
            on_batch=lambda epoch, done, total: bar("train", f"training epoch {epoch + 1}", done, total),
            on_cell=lambda done, total: bar("attack", "attack x eps", done, total),
            on_schedule=_print_schedule,
            worker=worker,
        )


@contextmanager
def _plain_hooks(write: Callable[[str], None], **extra: Any) -> Iterator[Any]:
    """Hooks that write :class:`PlainProgress` lines, with a heartbeat thread so no step is ever silent."""
    from bastion.app.runtime import Hooks

    plain = PlainProgress(write)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            plain.heartbeat()

    def on_stage(text: str) -> None:
        plain.reset(text)
        write(f"> {text}")

    def on_schedule(method: str, rows: list[dict[str, Any]]) -> None:
        plain.schedule(rows)
        _print_schedule(method, rows)

    beating = threading.Thread(target=beat, name="bastion-progress", daemon=True)
    beating.start()
    try:
        with listening(plain.step):
            yield Hooks(on_stage=on_stage, on_batch=plain.batch, on_cell=plain.cell, on_schedule=on_schedule, **extra)
    finally:
        stop.set()
        beating.join()


@contextmanager
def worker_progress(label: str, *, quiet: bool = False) -> Iterator[Any]:
    """A worker process's own progress (hooks are closures and do not cross processes): plain lines on
    stderr, each prefixed ``[label]``, as the parent's would be without a terminal; nothing with ``quiet``.
    Passed to workers by reference (``Hooks.worker``), so it must stay a module-level function."""
    from bastion.app.runtime import Hooks

    if quiet:
        yield Hooks()
        return

    def write(line: str) -> None:
        sys.stderr.write(f"[{label}] {line.lstrip()}\n")
        sys.stderr.flush()

    with _plain_hooks(write) as hooks:
        yield hooks


def _print_schedule(method: str, rows: list[dict[str, Any]]) -> None:
    """The training schedule as a table: one row per stage."""
    keys = ("stage", "epochs", "eps", "n_steps", "step_size", "beta")
    table = Table(title=Text(f"{method} schedule"))
    for key in keys:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(Text(f"{row[k]:g}" if isinstance(row[k], float) else str(row[k])) for k in keys))
    err_console.print(table)


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    """Log records go to stderr: warnings by default, progress details with --verbose, errors only with --quiet."""
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # basicConfig is a no-op once configured (a second command in-process)


def _print_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout, never wrapped or styled (rich would fold long lines)."""
    sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _print_results(results: dict[str, Any], out: Path, started: float) -> None:
    from bastion.render.summary import headline_sentence, model_tables

    console.print(f"bastion {results['command']} - {results['data']} (seed {results['seed']})", style="bold")
    for title, header, rows in model_tables(results):
        table = Table(title=Text(title), title_justify="left")
        for h in header:
            table.add_column(Text(h), justify="left" if h == "attack" else "right", overflow="fold")
        for r in rows:
            table.add_row(*(Text(c) for c in r))
        console.print(table)
    console.print(headline_sentence(results))
    for name, m in results["models"].items():
        t = m.get("training")
        if t and not name.endswith("+defense"):
            console.print(
                f"  {name}: {t['gradient_evaluations']:,} gradient evaluations, {t['wall_time_s']:.1f} s training"
            )
        d = m.get("defense")
        if d:
            console.print(
                f"  {name}: false-positive rate {100 * d['false_positive_rate']:.1f}% on clean test data, "
                f"latency x{d['latency_ratio']}"
            )
            worst = d.get("failure_rate", {}).get("ensemble")
            if worst:
                console.print(
                    f"  {name}: worst-case failure rate (misclassified and unflagged, over all attacks"
                    f"{' incl. adaptive' if d.get('adaptive') else ''}): "
                    + ", ".join(f"eps {e}: {100 * v:.1f}%" for e, v in worst.items())
                )
    for name, m in results["models"].items():
        for code, c in m.get("checks", {}).items():
            if c["status"] == "SUSPECT":
                console.print(Text.assemble("  ", ("SUSPECT", "red"), f" {name}: {code}: {c['detail']}"))
    console.print(
        f"results: {out / 'results.json'}  summary: {out / 'summary.md'}  ({time.perf_counter() - started:.1f} s)"
    )


def _run(job: Any) -> None:
    try:
        job()
    except BastionError as exc:
        err_console.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)
        raise typer.Exit(2) from None


def _run_with_progress(
    verbose: bool, out: Path, job: Callable[[Any], dict[str, Any]], *, quiet: bool = False, as_json: bool = False
) -> None:
    """What train, evaluate and demo share: logging, progress hooks, exit 2 on a clear error, the results.

    ``job(hooks)`` builds its config and runs; its results are printed (a table, or with ``as_json`` the
    document of :func:`bastion.app.runtime.results_document`) unless ``quiet`` or it has no models (under
    torchrun only rank 0 has results to show).
    """
    from bastion.app.runtime import results_document

    _setup_logging(verbose, quiet)
    started = time.perf_counter()

    def run() -> None:
        with _progress(quiet) as hooks:
            results = job(hooks)
        if not results["models"]:
            return
        if as_json:
            _print_json(results_document(results, out))
        elif not quiet:
            _print_results(results, out, started)

    _run(run)


def _show_version(value: bool) -> None:
    if value:
        from bastion import __version__

        console.print(f"bastion {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Adversarial training, runtime defenses and honest robustness evaluation."""


@app.command()
def train(
    data: Annotated[str | None, typer.Option("--data", help=DATA_HELP)] = None,
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    method: Annotated[str | None, typer.Option("--method", help=METHOD_HELP)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Total epochs over all stages.")] = None,
    eps: Annotated[float | None, typer.Option("--eps", help="Final training budget (inputs in [0, 1]).")] = None,
    out: OutOpt = Path("runs/train"),
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
    log_to: LogToOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint/last.safetensors (same options).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run already in OUT (its models, defenses and results).")
    ] = False,
) -> None:
    """Train one model and write a run folder (weights, config, split, results.json).

    Multi-process: ``torchrun --nproc_per_node=N -m bastion train ...`` (gloo on CPU, NCCL on CUDA).
    """
    from bastion.app.config import TrainConfig
    from bastion.app.train import run_train

    def job(hooks: Any) -> dict[str, Any]:
        from bastion.app.tracking import tracking_run

        cfg = TrainConfig.from_yaml(
            config, data=data, model=model, method=method, epochs=epochs, eps=eps, seed=seed, device=device
        )
        with tracking_run(log_to or [], experiment="bastion", run_name=out.resolve().name) as tracking:
            return run_train(cfg, out, hooks, resume=resume, force=force, tracking=tracking)

    _run_with_progress(verbose, out, job, quiet=quiet, as_json=as_json)


@app.command()
def evaluate(
    path: Annotated[
        Path,
        typer.Argument(
            help="A run folder (every model in it), one model folder, or module:PACKAGE.MODULE:FACTORY: your own "
            "nn.Module (the factory is imported and called; inputs in the data's [0, 1] domain, normalisation "
            "inside the model; needs --data)."
        ),
    ],
    data: Annotated[str | None, typer.Option("--data", help=DATA_HELP + "; default: the model's own data.")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help=SUITE_HELP)] = None,
    eps: Annotated[list[float] | None, typer.Option("--eps", help="Budget; repeat for several.")] = None,
    n_examples: Annotated[int | None, typer.Option("--n-examples", help="Limit test examples.")] = None,
    on_bad_rows: Annotated[
        str | None, typer.Option("--on-bad-rows", help="Tabular data: drop (and report) or raise on bad rows.")
    ] = None,
    save_adversarial: Annotated[
        Path | None,
        typer.Option("--save-adversarial", help="Tabular data: write adversarial records in the input's format."),
    ] = None,
    min_margin: Annotated[
        float | None,
        typer.Option("--min-margin", help="Tabular data: written evasions need p(benign) - p(other) >= this."),
    ] = None,
    out: OutOpt = Path("runs/evaluate"),
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
    log_to: LogToOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate saved models (and their saved runtime defenses) under an attack suite."""
    from bastion.app.config import EvalConfig
    from bastion.app.evaluate import run_evaluate

    def job(hooks: Any) -> dict[str, Any]:
        cfg = EvalConfig.from_yaml(
            config,
            data=data,
            suite=suite,
            eps=eps or None,
            n_examples=n_examples,
            seed=seed,
            device=device,
            on_bad_rows=on_bad_rows,
            save_adversarial=str(save_adversarial) if save_adversarial else None,
            min_margin=min_margin,
        )
        from bastion.app.tracking import tracking_run

        with tracking_run(log_to or [], experiment="bastion", run_name=out.resolve().name) as tracking:
            results = run_evaluate(path, cfg, out, hooks)
            tracking.config(cfg.resolved())
            tracking.results(results, out / "results.json")
        return results

    _run_with_progress(verbose, out, job, quiet=quiet, as_json=as_json)


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer epochs, the quick suite, 200 test examples.")] = False,
    out: OutOpt = Path("runs/demo"),
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The dual-phase defense end to end on digits: train, defend, attack, report."""
    from bastion.app.config import DemoConfig
    from bastion.app.demo import run_demo

    def job(hooks: Any) -> dict[str, Any]:
        cfg = DemoConfig.from_yaml(config, seed=seed, device=device)
        return run_demo(cfg, out, quick=quick, hooks=hooks)

    _run_with_progress(verbose, out, job, quiet=quiet, as_json=as_json)


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment YAML: methods, datasets, seeds, train, evaluate.")],
    out: OutOpt = Path("runs/experiment"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs trained in parallel processes.")] = 1,
    force: Annotated[
        bool, typer.Option("--force", help="OUT holds another config: redo the runs whose settings changed.")
    ] = False,
    verbose: VerboseOpt = False,
    log_to: LogToOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Methods x datasets x seeds, one folder per run (rerun to resume), then statistics across seeds."""
    from bastion.app.experiment import ExperimentConfig, run_experiment

    _setup_logging(verbose, quiet)
    started = time.perf_counter()

    def job() -> None:
        cfg = ExperimentConfig.from_yaml(config)
        with _progress(quiet) as hooks:
            comparison = run_experiment(cfg, out, n_jobs=jobs, force=force, hooks=hooks, log_to=log_to or [])
        if as_json:
            _print_json({"comparison": str(out / "comparison.json"), **comparison})
            return
        if quiet:
            return
        for dataset, block in comparison["datasets"].items():
            for metric, m in block["metrics"].items():
                for row in m["comparisons"]:
                    if "sentence" in row:
                        console.print(f"{dataset} {metric}: {row['sentence']}")
        console.print(f"comparison: {out / 'comparison.md'}  ({time.perf_counter() - started:.1f} s)")

    _run(job)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or one model folder) to deploy.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Bundle folder to write (must not exist); with --format robustbench a folder (NAME.json inside) "
            "or a .json file.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Model of the run; default: the one with a saved defense.")
    ] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Add ONNX graphs, checked with onnxruntime.")] = False,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="bundle (deployable folder) or robustbench (a RobustBench-style model card JSON from the run's "
            "AA-grade results; RUN may be an `evaluate --out` folder).",
        ),
    ] = "bundle",
    eps: Annotated[
        float | None, typer.Option("--eps", help="--format robustbench: the budget the card states (if several).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a previous bundle (or card) at --out, never anything else.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a deployable bundle (weights, manifest, SHA256SUMS) or a RobustBench-style model card."""
    _setup_logging(verbose)

    def job() -> None:
        if format_ == "robustbench":
            from bastion.artifacts.robustbench import export_model_card

            if onnx:
                raise ConfigError("--onnx adds graphs to a bundle; drop it with --format robustbench")
            path = export_model_card(run_dir, out, model=model, eps=eps, overwrite=force)
            card = json.loads(path.read_text())
            console.print(
                f"model card {path}: {card['name']} on {card['dataset']} ({card['threat_model']}, eps {card['eps']}): "
                f"clean {card['clean_acc']}%, AA-grade {card['autoattack_acc']}% on {card['n_examples']} examples",
                soft_wrap=True,
            )
            return
        if format_ != "bundle":
            raise ConfigError(f"unknown --format {format_!r}; choose bundle or robustbench")
        if eps is not None:
            raise ConfigError("--eps chooses the budget of a RobustBench card; use it with --format robustbench")
        from bastion.artifacts.bundle import export_bundle, read_manifest

        path, digest = export_bundle(run_dir, out, model=model, onnx=onnx, overwrite=force)
        manifest = read_manifest(path)
        defense = "with its runtime defense" if manifest["defense"] else "without a runtime defense"
        console.print(f"bundle {path}: model {manifest['model']['name']} {defense}")
        for kind, record in (manifest.get("onnx") or {}).items():
            console.print(f"  {record['file']} ({kind}): max |onnx - torch| = {record['max_abs_diff']:.2e}")
        console.print(f"  digest (sha256 of SHA256SUMS): {digest}", soft_wrap=True)

    _run(job)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run folders and/or experiment folders.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output folder (report.html, report.md, figures); a name ending in .html: that file."
        ),
    ] = Path("runs/report"),
    title: Annotated[str, typer.Option("--title", help="Report title.")] = "bastion report",
) -> None:
    """One self-contained HTML report (figures embedded, no network) plus Markdown from finished runs."""
    from bastion.render.report import write_report

    def job() -> None:
        html_path, md_path = write_report(paths, out, title)
        console.print(f"report: {html_path}  markdown: {md_path}")

    _run(job)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `bastion export`.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind; keep 127.0.0.1 unless behind auth.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    token_env: Annotated[
        str, typer.Option("--token-env", help="Environment variable holding the bearer token (if set, required).")
    ] = "BASTION_TOKEN",
    max_inputs: Annotated[int, typer.Option("--max-inputs", help="Inputs per request.")] = 256,
    max_body: Annotated[int, typer.Option("--max-body", help="Request body limit in bytes.")] = 8 << 20,
    timeout: Annotated[float, typer.Option("--timeout", help="Inference timeout per request, seconds.")] = 10.0,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests waiting for the model (503 beyond).")] = 256,
    batch_rows: Annotated[int, typer.Option("--batch-rows", help="Inputs per batched model call.")] = 256,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", help="Extra wait for requests to batch with.")
    ] = 0.0,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="JSONL file of flagged inputs.")] = None,
    audit_max_bytes: Annotated[int, typer.Option("--audit-max-bytes", help="Rotate the audit log above.")] = 10 << 20,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", help="Close connections whose headers take longer, seconds.")
    ] = 10.0,
    no_defense: Annotated[bool, typer.Option("--no-defense", help="Serve the bare model (benchmarks).")] = False,
    threads: Annotated[int, typer.Option("--threads", help="Torch intra-op threads; 0 = torch's default.")] = 1,
    expect_digest: Annotated[
        str | None, typer.Option("--expect-digest", help="Refuse a bundle whose digest differs.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve a bundle over HTTP: /v1/predict, /v1/model, /healthz, /readyz, /metrics."""
    import os

    from bastion.artifacts.bundle import load_bundle

    _setup_logging(verbose)

    def job() -> None:
        try:
            from bastion.service import ServiceSettings
            from bastion.service import serve as run_service
        except ImportError as exc:
            raise ConfigError(
                f"bastion serve needs the serve extra ({exc.name} is missing): pip install 'bastion[serve]'"
                " (from a checkout: make extras)"
            ) from None
        from bastion.service.app import check_port

        check_port(port)
        loaded = load_bundle(bundle, expected_digest=expect_digest)
        settings = ServiceSettings(
            max_inputs=max_inputs,
            max_body_bytes=max_body,
            timeout_s=timeout,
            max_queue=max_queue,
            batch_rows=batch_rows,
            batch_wait_ms=batch_wait_ms,
            token=os.environ.get(token_env) or None,
            defend=not no_defense,
            audit_log=audit_log,
            audit_max_bytes=audit_max_bytes,
            header_timeout_s=header_timeout,
        )
        err_console.print(f"serving {loaded.name} from {bundle} on http://{host}:{port} (digest {loaded.digest})")
        run_service(loaded, settings, host=host, port=port, threads=threads or None)

    _run(job)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
