"""The report shows a tabular run's written evasions as written, beside the original rows, with the fields
the attack changed highlighted (a tiny NSL-KDD-format run in tmp_path)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from tabular_fixtures import kdd_rows, train_mlp

from bastion.app.config import EvalConfig
from bastion.app.evaluate import run_evaluate
from bastion.data.sources.nsl_kdd import nsl_kdd_schema
from bastion.render import examples
from bastion.render.report import write_report


@pytest.fixture(scope="module")
def kdd_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("kdd-report")
    train = root / "KDDTrain+.txt"
    train.write_text("\n".join(kdd_rows(120, 0)) + "\n")
    train_mlp(f"nsl-kdd:{train}", root / "run", hidden=16, epochs=3, batch_size=32)
    test = root / "KDDTest+.txt"
    test.write_text("\n".join(kdd_rows(24, 5)) + "\n")
    adv = root / "adv.txt"
    ecfg = EvalConfig.parse(
        {"data": f"nsl-kdd:{test}", "suite": "tabular", "eps": [0.3], "save_adversarial": str(adv), "device": "cpu"}
    )
    run_evaluate(root / "run", ecfg, root / "eval")
    return root / "eval", adv, test


def test_written_evasions_are_shown_with_their_changed_fields(kdd_eval, tmp_path: Path) -> None:
    eval_dir, adv, test = kdd_eval
    sidecar = list(csv.DictReader(Path(str(adv) + ".lines.csv").read_text().splitlines()))
    assert sidecar, "the seeded tiny model is evaded at eps 0.3: something must be written to show"
    from bastion.artifacts.results import read_results

    results = read_results(eval_dir / "results.json")
    found = examples.tabular_records(eval_dir, results)
    assert found is not None and found.n_written == len(sidecar) and found.eps == "0.3"
    schema = nsl_kdd_schema()
    assert found.columns[: len(schema.names)] == list(schema.names) and found.columns[len(schema.names)] == "attack"
    source_lines = test.read_text().splitlines()
    written = adv.read_text().splitlines()
    for i, record in enumerate(found.records):
        line = int(record["sidecar"]["line"])
        assert record["original"] == source_lines[line - 1].split(",")
        assert record["adversarial"] == written[i].split(",")

    html_path, md_path = write_report([eval_dir], tmp_path / "rep")
    text = html_path.read_text()
    assert '<section id="examples"' in text and f"{len(sidecar)} evasions" in text
    changed = [name for r in sidecar[: examples.RECORDS_SHOWN] for name in r["changed_fields"].split(";") if name]
    cells = re.findall(r'<td class="changed">([^<]*)</td>', text)
    assert len(cells) == len(changed) > 0
    for r, record in zip(sidecar, found.records, strict=False):
        for name in r["changed_fields"].split(";"):
            value = record["adversarial"][found.columns.index(name)]
            assert f'<td class="changed">{value}</td>' in text
    assert "**" in md_path.read_text()  # the changed cells are bold in Markdown
