"""What the report shows beyond results.json: per-class test counts and adversarial examples.

results.json stores per-class rates, not the counts behind them; an interval needs the count, so the
labels are read from the run's records.json (sequential suites) or, failing that, recounted from the
dataset the run names (the evaluated examples are the first ``n_examples`` of its seeded test split).

Image runs save no adversarial images, so a handful are crafted here: PGD-10 at the run's largest eps on
the first few test images of the saved model, a few seconds at most; the caption says they are
illustrations, not the evaluation's own examples. Tabular runs evaluated with ``--save-adversarial``
wrote their evasions in the data's own format with a ``FILE.lines.csv`` sidecar (source line, attack,
changed fields): those records are shown as written, beside the original rows.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.errors import BastionError

log = logging.getLogger(__name__)

#: Test images an illustration attacks, and how many it shows per model.
EXAMPLE_POOL = 32
EXAMPLES_SHOWN = 3
#: Steps of the illustration's PGD.
EXAMPLE_STEPS = 10
#: Tabular evasions shown per run.
RECORDS_SHOWN = 3


@lru_cache(maxsize=8)
def _test_labels(data: str, seed: int) -> np.ndarray | None:
    """Labels of a dataset's seeded test split, or None when it cannot be loaded here (files absent)."""
    from bastion.data import load_dataset

    try:
        return load_dataset(data, seed=seed).test.y.numpy()
    except (BastionError, OSError) as exc:
        log.info("per-class counts: cannot load %s here (%s)", data, exc)
        return None


def class_counts(run_dir: Path | None, results: Mapping[str, Any], n_examples: int) -> list[int] | None:
    """Test examples per class behind a model's per-class rates, or None when unknown."""
    labels: np.ndarray | None = None
    if run_dir is not None and (run_dir / "records.json").is_file():
        try:
            recorded = json.loads((run_dir / "records.json").read_text()).get("label")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, list) and len(recorded) == n_examples:
            labels = np.asarray(recorded, dtype=np.int64)
    if labels is None:
        all_labels = _test_labels(str(results.get("data")), int(results.get("seed", 0)))
        if all_labels is None or len(all_labels) < n_examples:
            return None
        labels = all_labels[:n_examples]
    return np.bincount(labels).tolist()


def model_dir(run_dir: Path, name: str, entry: Mapping[str, Any]) -> Path | None:
    """The saved model folder of a results entry: ``path`` is relative to the run (train, demo) or to
    where ``evaluate`` ran, or absolute; None for a defense entry or a folder not found here."""
    from bastion.models import checkpoint

    path = entry.get("path")
    if name.endswith("+defense") or not isinstance(path, str):
        return None
    for candidate in (run_dir / path, Path(path)):
        if (candidate / checkpoint.DESCRIPTION).is_file():
            return candidate
    return None


@dataclass(frozen=True)
class ImageExamples:
    """Clean / adversarial pairs of one model: (K, C, H, W) in [0, 1], labels and predictions."""

    model: str
    x: np.ndarray
    x_adv: np.ndarray
    y: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    classes: tuple[str, ...]
    norm: str
    eps: float
    attack: str


def image_examples(run_dir: Path, results: Mapping[str, Any]) -> list[ImageExamples]:
    """A few clean / adversarial / perturbation triplets per trained image model of a run, crafted with
    PGD-10 at the run's largest eps on the first EXAMPLE_POOL test images; [] when the run holds no saved
    image model or its data cannot be loaded here."""
    from bastion._typing import Norm
    from bastion.attacks import PGD
    from bastion.data import load_dataset
    from bastion.goals import Misclassify
    from bastion.models import checkpoint
    from bastion.threat import ThreatModel

    threat = results.get("threat") or {}
    eps_values = [float(e) for e in threat.get("eps", [])]
    if not eps_values or any("tabular" in m for m in results["models"].values()):
        return []
    eps, norm = max(eps_values), str(threat.get("norm", "linf"))
    found = {name: model_dir(run_dir, name, m) for name, m in results["models"].items()}
    models = {name: path for name, path in found.items() if path is not None}
    if not models:
        return []
    try:
        data = load_dataset(str(results["data"]), seed=int(results.get("seed", 0)))
    except (BastionError, OSError) as exc:
        log.info("adversarial examples: cannot load %s here (%s)", results.get("data"), exc)
        return []
    if data.spec.modality != "image":
        return []
    test = data.test.take(EXAMPLE_POOL)
    threat_model = ThreatModel(norm=Norm(norm), eps=eps, domain=data.spec.domain)
    out = []
    for name, path in models.items():
        try:
            model = checkpoint.load_model(path)
        except BastionError as exc:
            log.info("adversarial examples: cannot load %s (%s)", path, exc)
            continue
        attack = PGD(n_steps=EXAMPLE_STEPS)
        result = attack(model, test.x, Misclassify(test.y), threat_model, rng=torch.Generator().manual_seed(0))
        with torch.no_grad():
            pred_clean = model(test.x).argmax(1)
            pred_adv = model(result.x_adv).argmax(1)
        broken = (pred_clean == test.y) & (pred_adv != test.y)
        order = torch.cat([broken.nonzero()[:, 0], (~broken).nonzero()[:, 0]])[:EXAMPLES_SHOWN]
        out.append(
            ImageExamples(
                model=name,
                x=test.x[order].numpy(),
                x_adv=result.x_adv[order].numpy(),
                y=test.y[order].numpy(),
                pred_clean=pred_clean[order].numpy(),
                pred_adv=pred_adv[order].numpy(),
                classes=data.spec.classes,
                norm=norm,
                eps=eps,
                attack=f"PGD-{EXAMPLE_STEPS}",
            )
        )
    return out


@dataclass(frozen=True)
class TabularRecords:
    """Evasions written by ``--save-adversarial``: field names, and per record its sidecar entry, the
    written values and (when the source file is readable here) the original values."""

    file: Path
    columns: list[str]
    records: list[dict[str, Any]]  # {"sidecar": {...}, "adversarial": [...], "original": [...] | None}
    n_written: int
    n_malicious: int | None
    eps: str | None


def _resolve(name: str, run_dir: Path) -> Path | None:
    """The adversarial file: as recorded (absolute, or relative to where evaluate ran), else in the run."""
    given = Path(name)
    for candidate in (given, run_dir / given, run_dir / given.name):
        if candidate.is_file():
            return candidate
    return None


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line, fields) of a CSV or ARFF file's data lines (ARFF header and blank lines skipped)."""
    rows = []
    in_data = path.suffix.lower() != ".arff"
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not in_data:
                in_data = text.strip().lower().startswith("@data")
                continue
            if text.strip() and not text.lstrip().startswith("%"):
                rows.append((number, [f.strip() for f in next(csv.reader([text]))]))
    return rows


def _columns(first: list[str], schema: Any, arff: bool) -> tuple[list[str], bool]:
    """(column names, whether ``first`` is a header row) of a file written in the data's own format."""
    if not arff and set(schema.names) <= set(first):
        return first, True
    order = [*schema.names, schema.label, *([] if arff else schema.extras)]
    return order[: len(first)], False


def tabular_records(run_dir: Path, results: Mapping[str, Any]) -> TabularRecords | None:
    """The first RECORDS_SHOWN evasions a tabular evaluation wrote, with their changed fields; None when
    the run wrote none or the files are not where results.json says."""
    from bastion.data.source import DataSource
    from bastion.models import checkpoint

    name = results.get("adversarial_file")
    if not isinstance(name, str):
        return None
    path = _resolve(name, run_dir)
    sidecar = None if path is None else path.with_name(path.name + ".lines.csv")
    if path is None or sidecar is None or not sidecar.is_file():
        log.info("adversarial records: %s or its .lines.csv sidecar not found", name)
        return None
    schema = None
    for name, m in results["models"].items():
        found = model_dir(run_dir, name, m) if "tabular" in m else None
        if found is None:
            continue
        try:
            schema = checkpoint.load_spec(found).domain.preprocessor.schema  # type: ignore[attr-defined]
            break
        except (BastionError, OSError, AttributeError):
            continue
    if schema is None:
        log.info("adversarial records: no tabular model of the run could be read")
        return None
    arff = path.suffix.lower() == ".arff"
    written = _data_lines(path)
    with sidecar.open(encoding="utf-8", newline="") as fh:
        entries = list(csv.DictReader(fh))
    if not written or not entries:
        return None
    columns, header = _columns(written[0][1], schema, arff)
    if header:
        written = written[1:]
    original: dict[int, list[str]] = {}
    try:
        source = DataSource.parse(str(results.get("data"))).location()
        if source.is_file():
            wanted = {int(e["line"]) for e in entries[:RECORDS_SHOWN]}
            original = {n: f for n, f in _data_lines(source) if n in wanted}
    except (BastionError, OSError, ValueError) as exc:
        log.info("adversarial records: original rows unavailable (%s)", exc)
    records = []
    for entry, (_, fields) in list(zip(entries, written, strict=False))[:RECORDS_SHOWN]:
        before = original.get(int(entry["line"]))
        records.append(
            {
                "sidecar": entry,
                "adversarial": fields,
                "original": before if before is not None and len(before) >= len(schema.names) else None,
            }
        )
    info = results.get("adversarial_records") or {}
    return TabularRecords(
        file=path,
        columns=columns,
        records=records,
        n_written=len(entries),
        n_malicious=info.get("n_malicious"),
        eps=info.get("eps"),
    )
