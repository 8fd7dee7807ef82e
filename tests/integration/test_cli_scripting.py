"""Scripting output: results on stdout (a table, or one JSON document with --json), logs and progress on
stderr, nothing but errors with --quiet; without a terminal, long loops still print progress with an ETA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bastion.artifacts.results import read_results
from bastion.cli import PlainProgress
from bastion.progress import Step

REPO = Path(__file__).resolve().parents[2]


def bastion(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, stdout and stderr apart and neither a terminal (as in a script or CI)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("scripting")
    config = work / "train.yaml"
    config.write_text("val_examples: 0\nbatch_size: 256\n")
    result = bastion(
        "train", "--data", "digits", "--model", "mlp", "--method", "standard", "--epochs", "2",
        "--config", str(config), "--out", "run", "--json", cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return work, result


def test_train_json_is_one_document_and_progress_goes_to_stderr(trained) -> None:
    work, result = trained
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    on_disk = read_results(work / "run" / "results.json")
    entry = document["models"]["standard"]
    assert entry["clean_accuracy"] == on_disk["models"]["standard"]["clean_accuracy"]
    assert entry["training"]["method"] == "standard" and entry["training"]["gradient_evaluations"] > 0
    assert entry["training"]["history"][0]["epoch"] == 1  # the last epoch only
    assert document["schema"] == 1 and document["command"] == "train"
    assert Path(document["results"]) == Path("run/results.json")
    assert "training epoch 1/2: 5/5 batches" in result.stderr and "training epoch 2/2" in result.stderr
    assert "ETA" in result.stderr and "done in" in result.stderr
    assert "{" not in result.stderr.split("schedule")[0]  # no JSON on stderr


def test_evaluate_json_holds_the_headline_and_the_weaker_attacks_by_name(trained) -> None:
    work, _ = trained
    result = bastion(
        "evaluate", "run", "--suite", "quick", "--eps", "0.1", "--eps", "0.2", "--n-examples", "40",
        "--out", "ev", "--json", cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    on_disk = read_results(work / "ev" / "results.json")
    entry, saved = document["models"]["standard"], on_disk["models"]["standard"]
    assert document["threat"] == on_disk["threat"] and document["threat"]["aa_grade"] is False
    assert entry["headline"] == saved["headline"]
    assert entry["headline"]["label"] == "upper bound: fgsm, pgd-10 only"
    assert set(entry["headline"]["robust_accuracy"]) == {"0.1", "0.2"}
    assert entry["robust_accuracy"] == saved["robust_accuracy"]
    assert set(entry["robust_accuracy"]) == {"fgsm", "pgd-10", "ensemble"}
    assert entry["clean_accuracy"] == saved["clean_accuracy"] and entry["n_examples"] == 40
    assert {c["status"] for c in entry["checks"].values()} <= {"pass", "SUSPECT", "skipped"}
    assert "attack_cost" not in entry and "clean_accuracy_per_class" not in entry  # the headline, not the detail
    assert "evaluating standard on 40 test examples" in result.stderr
    assert "attack x eps: 4/4 cells, done in" in result.stderr
    assert "sanity checks" in result.stderr


def test_quiet_prints_nothing_and_still_writes_results(trained) -> None:
    work, _ = trained
    result = bastion(
        "evaluate", "run", "--suite", "quick", "--eps", "0.1", "--n-examples", "20", "--out", "quiet", "--quiet",
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert read_results(work / "quiet" / "results.json")["models"]["standard"]["n_examples"] == 20


def test_an_error_goes_to_stderr_and_leaves_stdout_empty(trained) -> None:
    work, _ = trained
    result = bastion("evaluate", "run", "--suite", "nope", "--out", "bad", "--json", "--quiet", cwd=work)
    assert result.returncode == 2
    assert result.stdout == "" and "nope" in result.stderr


def test_human_output_is_a_table_on_stdout(trained) -> None:
    work, _ = trained
    result = bastion(
        "evaluate", "run", "--suite", "quick", "--eps", "0.1", "--n-examples", "20", "--out", "t", cwd=work
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "standard (clean" in result.stdout and "results:" in result.stdout
    assert "attack x eps" not in result.stdout and "attack x eps" in result.stderr


@pytest.mark.slow
def test_experiment_json_is_the_comparison(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "methods": ["standard"],
                "seeds": [0, 1],
                "train": {"epochs": 1, "val_examples": 0, "batch_size": 256},
                "evaluate": {"suite": "quick", "eps": [0.1], "n_examples": 20, "checks_examples": 0},
                "transfer_examples": 0,
            }
        )
    )
    result = bastion("experiment", str(config), "--out", "exp", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    saved = json.loads((tmp_path / "exp" / "comparison.json").read_text())
    assert {k: v for k, v in document.items() if k != "comparison"} == saved
    assert document["datasets"]["digits"]["metrics"]["clean"]["by_method"]["standard"]["seeds"] == [0, 1]
    assert "run 1/2: digits standard seed 0" in result.stderr
    assert "run 2/2 done: digits standard seed 1" in result.stderr and "ETA" in result.stderr
    assert "training epoch 1/1" in result.stderr and "attack x eps: 2/2 cells" in result.stderr
    quiet = bastion("experiment", str(config), "--out", "exp", "--quiet", cwd=tmp_path)  # resumes: all done
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


@pytest.mark.slow
def test_demo_json(tmp_path: Path) -> None:
    result = bastion(
        "demo", "--config", str(REPO / "tests/docs/demo-tiny.yaml"), "--device", "cpu", "--out", "demo", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document["models"]) == {"standard", "progressive-trades", "progressive-trades+defense"}
    defended = document["models"]["progressive-trades+defense"]
    assert defended["headline"]["failure_rate"] and 0 <= defended["defense"]["false_positive_rate"] <= 1
    assert "> training" in result.stderr and "> done: evaluate progressive-trades+defense" in result.stderr


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_every_interval_and_at_each_end_with_an_eta() -> None:
    clock, lines = FakeClock(), []
    progress = PlainProgress(lines.append, interval=10.0, clock=clock)
    progress.schedule([{"epochs": "1-2"}, {"epochs": "3-4"}])
    for epoch in range(4):
        for done in range(1, 11):
            clock.now += 3.0  # 30 s per epoch, 10 batches
            progress.batch(epoch, done, 10)
    assert lines[0] == "  training epoch 1/4: 4/10 batches, 12 s elapsed, ETA 1 min 48 s"
    ends = [line for line in lines if "10/10" in line]
    assert len(ends) == 4 and ends[1] == "  training epoch 2/4: 10/10 batches, 1 min 00 s elapsed, ETA 1 min 00 s"
    assert ends[-1].endswith("done in 2 min 00 s")
    gaps = [int(line.split(": ")[1].split("/")[0]) for line in lines[:4]]
    assert gaps == [4, 8, 10, 4]  # every >= 10 s, and at each epoch's end (the clock restarts there)

    lines.clear()
    progress.reset()
    for done in (1, 2, 3, 4):
        clock.now += 20.0
        progress.cell(done, 4)
    assert lines == [
        "  attack x eps: 1/4 cells, 20 s elapsed, ETA 1 min 00 s",
        "  attack x eps: 2/4 cells, 40 s elapsed, ETA 40 s",
        "  attack x eps: 3/4 cells, 1 min 00 s elapsed, ETA 20 s",
        "  attack x eps: 4/4 cells, done in 1 min 20 s",
    ]
    clock.now += 5.0
    progress.cell(1, 2)  # the next model's grid: its time starts where the last grid ended
    assert lines[-1] == "  attack x eps: 1/2 cells, 5 s elapsed, ETA 5 s"


def test_a_long_silent_step_gets_a_still_working_line() -> None:
    clock, lines = FakeClock(), []
    progress = PlainProgress(lines.append, interval=10.0, clock=clock)
    progress.reset("evaluating standard on 100 test examples")
    clock.now = 9.0
    progress.heartbeat()
    assert lines == []
    clock.now = 75.0  # one Square cell, nothing reported since the stage began
    progress.heartbeat()
    assert lines == ["  ... still working (evaluating standard on 100 test examples), 1 min 15 s elapsed"]
    progress.heartbeat()
    assert len(lines) == 1  # the clock restarts at each line
    progress.cell(1, 4)
    assert lines[-1] == "  attack x eps: 1/4 cells, 1 min 15 s elapsed, ETA 3 min 45 s"


def test_resumed_training_measures_its_eta_from_the_resumed_epoch() -> None:
    clock, lines = FakeClock(), []
    progress = PlainProgress(lines.append, interval=1000.0, clock=clock)
    progress.schedule([{"epochs": "1-10"}])
    clock.now = 10.0
    progress.batch(8, 5, 5)  # resumed at epoch 9 of 10: one epoch of two done in 10 s
    assert lines == ["  training epoch 9/10: 5/5 batches, 10 s elapsed, ETA 10 s"]


def test_a_loop_inside_a_cell_gets_a_line_every_interval_timed_from_its_start() -> None:
    clock, lines = FakeClock(), []
    progress = PlainProgress(lines.append, interval=10.0, clock=clock)
    clock.now = 100.0  # the loop starts well after the stage did
    for done in range(5):
        progress.step(Step(("square eps 0.1",), done, 4, "batches"))
        clock.now += 6.0
    assert lines == [
        "  square eps 0.1: 0/4 batches, 0 s elapsed",  # the stage's first 100 s were silent: due at once
        "  square eps 0.1: 2/4 batches, 12 s elapsed, ETA 12 s",
        "  square eps 0.1: 4/4 batches, done in 24 s",
    ]


def test_a_worker_process_writes_its_own_prefixed_lines_and_nothing_when_quiet(capsys, monkeypatch) -> None:
    from bastion import cli, progress

    monkeypatch.setattr(cli, "PLAIN_INTERVAL_S", 0.0)
    with cli.worker_progress("digits pgd-at seed 1") as hooks:
        hooks.stage("evaluating")
        progress.advance(1, 2, "batches")
    assert capsys.readouterr().err.splitlines() == [
        "[digits pgd-at seed 1] > evaluating",
        "[digits pgd-at seed 1] attack: 1/2 batches, 0 s elapsed, ETA 0 s",
    ]
    with cli.worker_progress("quiet run", quiet=True) as hooks:
        hooks.stage("evaluating")
        progress.advance(1, 2, "batches")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_evaluate_without_a_terminal_reports_each_batch_and_quiet_silences_it(
    trained, tmp_path, capfd, monkeypatch, quiet
) -> None:
    from bastion import cli

    work, _ = trained
    monkeypatch.setattr(cli, "PLAIN_INTERVAL_S", 0.0)  # every step is due
    config = tmp_path / "eval.yaml"
    config.write_text("batch_size: 16\nchecks_examples: 0\n")
    args = ["evaluate", str(work / "run"), "--suite", "quick", "--eps", "0.1", "--n-examples", "40"]
    args += ["--config", str(config), "--out", str(tmp_path / "eval")] + (["--quiet"] if quiet else [])
    cli.app(args, standalone_mode=False)
    out, err = capfd.readouterr()
    if quiet:
        assert out == "" and err == ""
        return
    assert "fgsm eps 0.1: 1/3 batches" in err and "pgd-10 eps 0.1: 3/3 batches, done in" in err
    assert "batches" not in out and "robust" in out  # progress on stderr, results on stdout


def test_parallel_experiment_workers_report_their_progress_and_honour_log_to(tmp_path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "parallel",
                "methods": ["standard"],
                "seeds": [0, 1],
                "train": {"epochs": 1, "val_examples": 0, "batch_size": 256},
                "evaluate": {"suite": "quick", "eps": [0.1], "n_examples": 20, "checks_examples": 0},
                "transfer_examples": 0,
            }
        )
    )
    result = bastion(
        "experiment", str(config), "--jobs", "2", "--log-to", "tensorboard:tb", "--out", "exp", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        prefix = f"[digits standard seed {seed}]"
        assert f"{prefix} training epoch 1/1: 5/5 batches" in result.stderr
        assert f"{prefix} attack x eps: 2/2 cells, done in" in result.stderr
        assert list((tmp_path / "tb" / "digits" / "standard" / f"seed-{seed}").glob("events.out.tfevents.*"))


def test_the_heartbeat_says_where_a_running_loop_is_rather_than_still_working() -> None:
    clock, lines = FakeClock(), []
    progress = PlainProgress(lines.append, interval=10.0, clock=clock)
    progress.reset("evaluating standard on 360 test examples")
    progress.step(Step(("pgd-50x2 eps 0.1",), 0, 2, "batches"))
    clock.now = 30.0
    progress.step(Step(("pgd-50x2 eps 0.1",), 1, 2, "batches"))
    clock.now = 45.0
    progress.heartbeat()
    assert lines[-1] == "  pgd-50x2 eps 0.1: 1/2 batches, 45 s elapsed, ETA 45 s"
    progress.cell(1, 4)  # the cell ended: the next silence is "still working" again
    clock.now = 60.0
    progress.heartbeat()
    assert lines[-1].startswith("  ... still working (evaluating standard on 360 test examples)")
