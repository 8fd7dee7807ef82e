"""What a new user reads: messages verbatim (no rich markup), result tables that fit 80 columns."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from rich.console import Console
from typer.testing import CliRunner

import bastion
from bastion import cli
from bastion.app.runtime import threat_record
from bastion.artifacts.results import new_results, write_results
from bastion.cli import app
from bastion.evaluation.record import ENSEMBLE, Evaluation
from bastion.evaluation.suites import build_suite

runner = CliRunner()

MODELS = ("standard", "progressive-trades", "progressive-trades+defense")
ATTACKS = ("apgd-ce", "apgd-t", "deepfool", "square")
ADAPTIVE = ("bpda-pgd", "detector-aware-pgd", "transfer-pgd")
EPS = ("0.05", "0.1", "0.2")


def demo_like_results(aa_grade: bool) -> dict:
    models = {}
    for name in MODELS:
        attacks = ATTACKS + (ADAPTIVE if name.endswith("+defense") else ())
        by = {a: dict.fromkeys(EPS, 0.4321) for a in (*attacks, "ensemble")}
        models[name] = {"clean_accuracy": 0.975, "robust_accuracy": by}
    threat = {"aa_grade": aa_grade, "grade": "AA-grade" if aa_grade else "upper bound (quick suite)"}
    return {"command": "demo", "data": "digits", "seed": 0, "threat": threat, "models": models}


def tiny_results_run(folder: Path) -> Path:
    """A run folder holding only a valid results.json (what `bastion report` reads)."""
    ev = Evaluation(clean_accuracy=0.9, n_examples=10)
    ev.record("fgsm", 0.1, torch.arange(10) < 6)
    ev.record(ENSEMBLE, 0.1, torch.arange(10) < 4)
    suite = build_suite("quick")
    results = new_results(command="t", data="digits", seed=0, threat=threat_record("linf", [0.1], "quick", suite))
    results["models"]["m"] = {"path": "m", **ev.to_dict()}
    write_results(folder / "results.json", results)
    return folder


def test_error_message_with_brackets_is_shown_verbatim(tmp_path: Path) -> None:
    folder = tmp_path / "run[serve]"
    folder.mkdir()
    result = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert f"{folder} is neither a run folder" in result.output


def test_result_table_fits_80_columns(monkeypatch) -> None:
    for aa_grade, title in ((True, "AA-grade"), (False, "upper bound")):
        buf = io.StringIO()
        monkeypatch.setattr(cli, "console", Console(file=buf, width=80, markup=False, color_system=None))
        cli._print_results(demo_like_results(aa_grade), Path("runs/demo"), 0.0)
        text = buf.getvalue()
        assert "…" not in text and "..." not in text
        assert max(len(line) for line in text.splitlines()) <= 80
        for name in (*MODELS, *ATTACKS, *ADAPTIVE):
            assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", text, re.MULTILINE), name
        for block in text.split("clean 97.5%")[1:]:
            rows = [line for line in block.splitlines() if "%" in line]
            assert rows[0].split("│")[1].strip() == title  # the headline row comes first in every model's table


def test_cli_report_out_is_a_folder_or_an_html_file(tmp_path: Path) -> None:
    tiny_run = tiny_results_run(tmp_path / "run")
    for _ in range(2):  # the second run replaces its own report
        result = runner.invoke(app, ["report", str(tiny_run), "--out", str(tmp_path / "rep")])
        assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.html", "report.md", "report_files"}
    existing = tmp_path / "existing"
    existing.mkdir()
    assert runner.invoke(app, ["report", str(tiny_run), "--out", str(existing)]).exit_code == 0
    assert (existing / "report.html").is_file()
    result = runner.invoke(app, ["report", str(tiny_run), "--out", str(tmp_path / "named.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "named.html").is_file() and (tmp_path / "named.md").is_file()
    unrelated = tmp_path / "theirs"
    unrelated.mkdir()
    (unrelated / "report.html").write_text("<html>theirs</html>")
    assert runner.invoke(app, ["report", str(tiny_run), "--out", str(unrelated)]).exit_code == 2
    assert (unrelated / "report.html").read_text() == "<html>theirs</html>"


def test_help_lists_every_registered_name() -> None:
    from bastion.data.sources import DATASETS
    from bastion.evaluation.suites import SUITES
    from bastion.models import MODELS
    from bastion.training.methods import METHODS

    helps = {
        "train": (*DATASETS, *MODELS, *METHODS),
        "evaluate": (*DATASETS, *SUITES),
    }
    for command, names in helps.items():
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.replace("│", " ").split())
        for name in names:
            assert re.search(rf"[\s,:]{re.escape(name)}[,.\s]", text), (command, name)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"bastion {bastion.__version__}"


def test_progress_without_a_terminal_is_a_plain_line_per_stage_epoch_and_cell(monkeypatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=buf, width=80, markup=False, color_system=None))
    assert not cli.err_console.is_terminal
    with cli._progress() as hooks:
        hooks.on_stage("training [standard]")
        for b in range(3):
            hooks.on_batch(0, b + 1, 3)
        for done in (1, 2):
            hooks.on_cell(done, 2)
    lines = buf.getvalue().splitlines()
    assert lines == [
        "> training [standard]",
        "  training epoch 1: 3/3 batches, done in 0 s",
        "  attack x eps: 1/2 cells, 0 s elapsed, ETA 0 s",
        "  attack x eps: 2/2 cells, done in 0 s",
    ]
