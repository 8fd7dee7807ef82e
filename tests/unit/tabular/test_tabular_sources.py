"""Tabular data SPECs, the model's own preprocessing on a new file, and --save-adversarial round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import SCHEMA
from synthetic import records as synthetic_records
from tabular_fixtures import CLAMP_HEADER, clamp_line, kdd_line, kdd_rows, phishing_arff, phishing_fields, train_mlp

from bastion.app.config import EvalConfig
from bastion.app.evaluate import run_evaluate
from bastion.app.evaluate_tabular import model_domain
from bastion.data import DataSource, load_dataset, load_tabular
from bastion.data.sources.malware import read_clamp
from bastion.data.sources.nsl_kdd import read_nsl_kdd
from bastion.data.sources.phishing import read_phishing
from bastion.data.tabular import validate_raw
from bastion.data.tabular.domain import TabularDomain
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError
from bastion.models import checkpoint

Write = Callable[..., Path]


def test_split_options() -> None:
    source = DataSource.parse("csv:/a/b.csv?schema=s.yaml&header=no")
    assert (source.path, source.options) == ("/a/b.csv", {"schema": "s.yaml", "header": "no"})
    assert (DataSource.parse("csv:/a/b.csv").path, DataSource.parse("csv:/a/b.csv").options) == ("/a/b.csv", {})
    with pytest.raises(ConfigError, match="key=value"):
        DataSource.parse("csv:/a?schema")


def test_nsl_kdd_file_and_folder_specs(write: Write, tmp_path: Path) -> None:
    train = write("KDDTrain+.txt", [*kdd_rows(60, 0), kdd_line(count="x")])  # one bad row
    write("KDDTest+.txt", kdd_rows(30, 1))
    data = load_dataset(f"nsl-kdd:{train}", seed=0)
    assert data.spec.modality == "tabular" and data.spec.benign == 0
    assert isinstance(data.spec.domain, TabularDomain)
    assert len(data.train) + len(data.val) + len(data.test) == 60
    assert data.split_info["bad_rows"] == {"count": 1, "lines": [61]}
    folder = load_tabular(f"nsl-kdd:{tmp_path}", seed=0)
    assert len(folder.dataset.test) == 30 and len(folder.dataset.train) + len(folder.dataset.val) == 60
    assert folder.tables["test"].line_numbers.tolist() == list(range(1, 31))
    family = load_dataset(f"nsl-kdd:{tmp_path}?labels=family", seed=0)
    assert family.spec.classes == ("normal", "DoS", "Probe", "R2L", "U2R")
    with pytest.raises(DataFormatError, match=r"\.txt:61: column .count."):
        load_dataset(f"nsl-kdd:{train}?on_bad_rows=raise")
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset(f"nsl-kdd:{train}?shuffle=no")
    with pytest.raises(DataNotFoundError):
        load_dataset(f"nsl-kdd:{tmp_path / 'missing.txt'}")


def test_phishing_and_malware_specs(write: Write) -> None:
    rows = [phishing_fields("-1" if i % 2 else "1", URL_Length=str(i % 3 - 1)) for i in range(40)]
    csv_path = write("phish.csv", [",".join(r) for r in rows])
    arff_path = write("phish.arff", phishing_arff(rows))
    a, b = load_dataset(f"phishing:{csv_path}"), load_dataset(f"phishing:{arff_path}")
    assert a.spec.fingerprint() == b.spec.fingerprint()
    assert torch.equal(a.test.x, b.test.x)
    lines = [CLAMP_HEADER] + [
        clamp_line(label=str(i % 2), packer_type=("UPX" if i % 3 == 0 else "NoPacker")) for i in range(40)
    ]
    clamp = load_tabular(f"malware:{write('clamp.csv', lines)}")
    assert clamp.dataset.spec.input_shape[0] == clamp.preprocessor.n_features_out_
    x = clamp.dataset.train.x
    assert clamp.dataset.spec.domain.is_feasible(x, x).all()


def test_csv_spec_with_schema_file(write: Write, tmp_path: Path) -> None:
    schema_path = tmp_path / "schema.yaml"
    SCHEMA.to_yaml(schema_path)
    df, y = synthetic_records(60)
    df["label"] = np.where(y == 1, "malicious", "benign")
    csv_path = tmp_path / "flows.csv"
    df.to_csv(csv_path, index=False)
    data = load_dataset(f"csv:{csv_path}?schema={schema_path}")
    assert data.spec.classes == ("benign", "malicious")
    assert data.spec.domain.is_feasible(data.test.x, data.test.x).all()
    with pytest.raises(ConfigError, match="schema="):
        load_dataset(f"csv:{csv_path}")


@pytest.fixture(scope="module")
def kdd_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kdd")
    train = root / "KDDTrain+.txt"
    train.write_text("\n".join(kdd_rows(120, 0)) + "\n")
    train_mlp(f"nsl-kdd:{train}", root / "run", hidden=16, method="pgd-at", epochs=3, eps=0.1, n_steps=3, batch_size=32)
    return root, root / "run"


def test_evaluate_uses_the_models_own_preprocessing_and_saves_replayable_records(
    kdd_model: tuple[Path, Path], tmp_path: Path
) -> None:
    root, run = kdd_model
    description = json.loads((run / "models" / "pgd-at" / "model.json").read_text())
    assert description["dataset"]["domain"]["kind"] == "tabular"
    # A new file whose byte counts exceed the training range: clipped by the saved preprocessing, not refitted.
    new_rows = [*kdd_rows(20, 7), kdd_line(src_bytes="999999999", attack="neptune"), kdd_line(count="-3")]
    new_file = root / "KDDTest+.txt"
    new_file.write_text("\n".join(new_rows) + "\n")
    adv_file = tmp_path / "adv.txt"
    cfg = EvalConfig.parse(
        {
            "data": f"nsl-kdd:{new_file}",
            "suite": "tabular",
            "eps": [0.1, 0.3],
            "save_adversarial": str(adv_file),
            "device": "cpu",
        }
    )
    results = run_evaluate(run, cfg, tmp_path / "eval")
    entry = results["models"]["pgd-at"]
    assert entry["tabular"]["n_rows"] == 21  # the bad row (line 22) is dropped and reported
    assert entry["n_examples"] == 11 and entry["denominator"] == "detection rate on malicious rows"
    assert results["bad_rows"]["count"] == 1 and results["bad_rows"]["rows"][0][0] == 22
    tab = entry["tabular"]
    assert tab["n_malicious"] == 11
    for attack in ("pgd-50", "search"):
        assert tab["valid_share"][attack]["0.3"] == 1.0
        assert entry["robust_accuracy"][attack]["0.3"] == pytest.approx(1 - tab["evasion_rate"][attack]["0.3"])
    assert "unconstrained_robust_accuracy" in tab and "mcc" in tab
    assert "Evasion" in (tmp_path / "eval" / "summary.md").read_text()
    # The adversarial records re-read with the same reader and pass the validator against the originals.
    again = read_nsl_kdd(adv_file, on_bad_rows="raise")
    original = read_nsl_kdd(new_file)
    side = pd.read_csv(str(adv_file) + ".lines.csv", keep_default_na=False)
    assert list(side.columns) == ["row", "line", "attack", "eps", "margin", "rules_checked", "changed_fields"]
    reference = original.select(np.searchsorted(original.line_numbers, side["line"].to_numpy()))
    assert (reference.raw_labels == again.raw_labels).all() and (again.raw_labels != "normal").all()
    assert (reference.extras["difficulty"] == again.extras["difficulty"]).all()
    constraints = model_domain(run / "models" / "pgd-at").constraints
    assert validate_raw(again.features, again.schema, reference=reference.features, constraints=constraints).all()
    assert results["adversarial_records"]["n_written"] == len(side)
    assert (side["attack"].isin(["pgd-50", "search"])).all() and (side["eps"] == 0.3).all()
    assert (side["rules_checked"] > 0).all() and (side["changed_fields"] != "").all()
    # Only real evasions: every written row was detected by the model before the attack.
    model = checkpoint.load_model(run / "models" / "pgd-at", device=torch.device("cpu"))
    x_clean = torch.from_numpy(constraints_domain_transform(run, reference))
    assert (model(x_clean).argmax(1) != 0).all()
    # Rates keep the file's own 2-decimal text.
    text = adv_file.read_text()
    for line in text.splitlines():
        rates = line.split(",")[24:31]
        assert all(len(r.split(".")[1]) == 2 for r in rates), line


def constraints_domain_transform(run: Path, table: object) -> np.ndarray:
    return model_domain(run / "models" / "pgd-at").preprocessor.transform(table, dtype=np.float32)


def test_evaluate_refuses_bad_rows_on_request(kdd_model: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = kdd_model
    bad_file = root / "bad.txt"
    bad_file.write_text("\n".join([*kdd_rows(4, 3), kdd_line(flag="nope")]) + "\n")
    cfg = EvalConfig.parse({"data": f"nsl-kdd:{bad_file}", "suite": "quick", "on_bad_rows": "raise", "device": "cpu"})
    with pytest.raises(DataFormatError, match=r"\.txt:5: column .flag."):
        run_evaluate(run, cfg, tmp_path / "eval")


def test_save_adversarial_in_clamp_and_phishing_formats(write: Write, tmp_path: Path) -> None:
    from bastion.data.tabular.export import write_records

    lines = [CLAMP_HEADER] + [clamp_line(label=str(i % 2)) for i in range(6)]
    table = read_clamp(write("clamp.csv", lines))
    out = write_records(tmp_path / "adv.csv", table.features, table, header=True)
    again = read_clamp(out, on_bad_rows="raise")
    assert out.read_text().splitlines()[0] == CLAMP_HEADER
    assert validate_raw(again.features, again.schema, reference=table.features).all()
    rows = [phishing_fields("-1") for _ in range(3)]
    for name, text in (("p.arff", phishing_arff(rows)), ("p.csv", "\n".join(",".join(r) for r in rows) + "\n")):
        table = read_phishing(write(name, text))
        again = read_phishing(write_records(tmp_path / f"adv-{name}", table.features, table, header=False))
        assert again.features.equals(table.features)


def test_unsw_nb15_and_cic_ids2017_specs(write: Write, tmp_path: Path) -> None:
    from tabular_fixtures import cic_header, cic_line, unsw_header, unsw_line

    def unsw(n: int) -> list[str]:
        rows = [unsw_line(i, attack_cat="Exploits" if i % 2 else "Normal", label=str(i % 2)) for i in range(1, n + 1)]
        return [unsw_header(), *rows]

    folder = tmp_path / "unsw"
    folder.mkdir()
    (folder / "UNSW_NB15_training-set.csv").write_text("\n".join(unsw(40)) + "\n")
    (folder / "UNSW_NB15_testing-set.csv").write_text("\n".join(unsw(10)) + "\n")
    data = load_dataset(f"unsw-nb15:{folder}")
    assert len(data.test) == 10 and data.spec.benign == 0
    cic = write("monday.csv", [cic_header(), *[cic_line("BENIGN" if i % 2 else "DDoS") for i in range(40)]])
    data = load_dataset(f"cic-ids2017:{cic}")
    assert data.spec.domain.is_feasible(data.train.x, data.train.x).all()


def test_evaluate_without_data_rebuilds_the_models_test_split(kdd_model: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = kdd_model
    cfg = EvalConfig.parse({"suite": "quick", "eps": [0.1], "device": "cpu"})
    results = run_evaluate(run, cfg, tmp_path / "eval")
    entry = results["models"]["pgd-at"]
    assert entry["tabular"]["n_rows"] == 24  # the 20% stratified test split of the 120 training-file rows
    assert entry["tabular"]["valid_share"]["fgsm"]["0.1"] == 1.0


def test_evaluate_runs_the_sanity_checks_on_the_malicious_rows(kdd_model: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = kdd_model
    cfg = EvalConfig.parse({"suite": "tabular", "eps": [0.1, 0.3], "device": "cpu", "checks_examples": 8})
    results = run_evaluate(run, cfg, tmp_path / "eval")
    entry = results["models"]["pgd-at"]
    checks = entry["checks"]
    assert set(checks) == {
        "accuracy-monotone-in-eps",
        "fgsm-not-stronger-than-pgd",
        "white-box-beats-black-box",
        "eot-for-randomized-defense",
        "detector-aware-attack",
        "gradient-health",
        "unbounded-eps-reaches-zero",
        "attack-converged",
        "noise-weaker-than-attack",
    }
    assert checks["gradient-health"]["measured"]["n_examples"] == min(8, entry["tabular"]["n_malicious"])
    assert checks["unbounded-eps-reaches-zero"]["status"] in ("pass", "SUSPECT")
    assert "bounded_accuracy" in checks["unbounded-eps-reaches-zero"]["measured"]
    assert checks["white-box-beats-black-box"]["status"] in ("pass", "SUSPECT")  # pgd-50 against the search
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["models"]["pgd-at"]["checks"] == checks
    assert "## Sanity checks" in (tmp_path / "eval" / "summary.md").read_text()
