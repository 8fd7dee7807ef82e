"""`bastion report` on a tiny run, rendered in headless Chromium: every image loads, every section is there."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from bastion.app.config import EvalConfig, TrainConfig
from bastion.app.evaluate import run_evaluate
from bastion.app.train import run_train
from bastion.artifacts.results import write_results
from bastion.data import load_dataset
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense
from bastion.evaluation.checks import CheckSettings, run_checks
from bastion.evaluation.defense import evaluate_defense
from bastion.evaluation.suites import build_suite
from bastion.models import checkpoint
from bastion.render.report import write_report
from bastion.threat import ThreatModel

SECTIONS = {
    "overview",
    "accuracy",
    "checks",
    "robust-vs-eps",
    "per-class",
    "detector-roc",
    "training",
    "cost",
    "examples",
}

# Injected into a copy of the report only: records what the browser actually rendered as attributes
# that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.sections = Array.from(document.querySelectorAll('section')).map(s => s.id).join(',');
});
</script></body>"""


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if path is None:
        pytest.skip("headless Chromium not installed (Debian package 'chromium'; .ci/run tries to install it)")
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of standard training evaluated by `run_evaluate` (quick suite, 60 test examples), plus a
    Mahalanobis defense evaluated with 5-step adaptive attacks (run_evaluate's 50 would dominate the suite)."""
    run = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig.parse({"method": "standard", "epochs": 1, "val_examples": 0, "device": "cpu", "batch_size": 64})
    run_train(cfg, run)
    ecfg = EvalConfig.parse(
        {"suite": "quick", "eps": [0.1, 0.2], "n_examples": 60, "checks_examples": 30, "device": "cpu"}
    )
    results = run_evaluate(run, ecfg, run)
    data = load_dataset("digits", seed=0)
    model = checkpoint.load_model(run / "models" / "standard")
    defended = build_defense(model, DefenseConfig(), data.train, data.val, domain=data.spec.domain)
    test, suite = data.test.take(60), build_suite("quick")
    threat = ThreatModel(norm="linf", eps=0.2, domain=data.spec.domain)
    dev = evaluate_defense(defended, test, suite, threat, ecfg.eps, adaptive_steps=5)
    dev.checks = run_checks(defended, test, dev, suite, threat, ecfg.eps, CheckSettings(n_examples=30))
    results["models"]["standard+defense"] = {"path": "defenses/standard", **dev.to_dict()}
    write_results(run / "results.json", results)
    return run


def test_report_renders_in_chromium(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    html_path, _ = write_report([tiny_run], out)
    text = html_path.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the report must not load anything from the network"
    assert set(re.findall(r'<section id="([^"]+)"', text)) == SECTIONS

    chromium = _chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert int(attrs["images"]) == len(SECTIONS) - 3  # overview, accuracy and checks are tables only
    assert attrs["loaded"] == attrs["images"], attrs
    assert set(attrs["sections"].split(",")) == SECTIONS

    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,2400", f"--screenshot={shot}", html_path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as img:
        assert img.size == (1280, 2400)
        assert len(img.convert("L").resize((64, 120)).getcolors(maxcolors=4096) or []) > 10  # not a blank page


def test_markdown_links_its_figures(tiny_run: Path, tmp_path: Path) -> None:
    _, md_path = write_report([tiny_run], tmp_path / "r.html")
    md = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(SECTIONS) - 3
    for link in links:
        with Image.open(md_path.parent / link) as img:
            assert img.format == "PNG" and img.size[0] > 100
    assert "## Sanity checks" in md and "gradient-health" in md


def test_report_refuses_a_folder_without_results(tmp_path: Path) -> None:
    from bastion.errors import CheckpointError

    with pytest.raises(CheckpointError, match="neither a run folder"):
        write_report([tmp_path], tmp_path / "r.html")
