"""The published files in ../shared/data (or $BASTION_DATA): counts from their documentation, 0 bad rows.

Skipped cleanly when the folder or a file is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.data.sources.malware import read_clamp
from bastion.data.sources.nsl_kdd import NSL_KDD_FAMILIES, attack_drift, read_nsl_kdd
from bastion.data.sources.phishing import read_phishing
from bastion.data.tabular import TabularPreprocessor, TabularTable, validate_raw

pytestmark = pytest.mark.data


def _file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="module")
def kdd_train(real_data_dir: Path) -> TabularTable:
    return read_nsl_kdd(_file(real_data_dir, "nsl-kdd/KDDTrain+_20Percent.txt"), on_bad_rows="raise")


@pytest.fixture(scope="module")
def kdd_test(real_data_dir: Path) -> TabularTable:
    return read_nsl_kdd(_file(real_data_dir, "nsl-kdd/KDDTest+.txt"), labels="family", on_bad_rows="raise")


def test_nsl_kdd_counts(kdd_train: TabularTable, kdd_test: TabularTable) -> None:
    assert len(kdd_train) == 25_192 and kdd_train.bad_rows.count == 0 and kdd_train.bad_rows.n_skipped == 0
    assert len(kdd_test) == 22_544 and kdd_test.bad_rows.count == 0 and kdd_test.bad_rows.n_skipped == 0
    assert kdd_train.line_numbers[-1] == 25_192
    counts = dict(zip(kdd_test.schema.classes, np.bincount(kdd_test.labels).tolist(), strict=True))
    assert counts == {"normal": 9711, "DoS": 7458, "Probe": 2421, "R2L": 2754, "U2R": 200}


def test_nsl_kdd_family_table_covers_every_name(kdd_train: TabularTable, kdd_test: TabularTable) -> None:
    names = set(kdd_train.raw_labels) | set(kdd_test.raw_labels)
    assert names <= set(NSL_KDD_FAMILIES)
    drift = attack_drift(kdd_train, kdd_test)
    assert len(drift.test_names) == 38 and len(drift.unseen_names) == 18
    assert {"apache2", "mailbomb", "mscan", "saint", "snmpguess", "httptunnel"} <= set(drift.unseen_names)
    assert drift.unseen_families == () and drift.n_unseen_rows == 3752


def test_nsl_kdd_relations_hold_on_every_row(kdd_train: TabularTable, kdd_test: TabularTable) -> None:
    assert validate_raw(kdd_train.features, kdd_train.schema).all()
    assert validate_raw(kdd_test.features, kdd_test.schema).all()


def test_nsl_kdd_preprocessing_round_trip(kdd_train: TabularTable, kdd_test: TabularTable) -> None:
    pre = TabularPreprocessor(kdd_train.schema).fit(kdd_train)
    x = pre.transform(kdd_train, dtype=np.float64)
    assert x.shape == (25_192, 122)
    pd.testing.assert_frame_equal(pre.inverse_transform(x), kdd_train.features, check_exact=True)
    x_test = pre.transform(kdd_test)
    assert x_test.dtype == np.float32 and x_test.min() >= 0 and x_test.max() <= 1
    assert set(pre.count_out_of_range(kdd_test)) <= {f.name for f in kdd_train.schema.features}


def test_phishing_counts(real_data_dir: Path) -> None:
    table = read_phishing(_file(real_data_dir, "phishing/phishing-websites.csv"), on_bad_rows="raise")
    assert len(table) == 11_055 and table.bad_rows.count == 0
    assert np.bincount(table.labels).tolist() == [6157, 4898]
    pre = TabularPreprocessor(table.schema).fit(table)
    pd.testing.assert_frame_equal(pre.inverse_transform(pre.transform(table)), table.features)


def test_clamp_counts(real_data_dir: Path) -> None:
    table = read_clamp(_file(real_data_dir, "malware/ClaMP_Integrated-5184.csv"), on_bad_rows="raise")
    assert len(table) == 5_210 and table.bad_rows.count == 0
    assert table.bad_rows.skipped == ((3203, "blank row (separators only)"), (3830, "blank row (separators only)"))
    assert np.bincount(table.labels).tolist() == [2488, 2722]
    assert validate_raw(table.features, table.schema).all()
    train = table.select(np.arange(0, len(table), 2))
    test = table.select(np.arange(1, len(table), 2))
    pre = TabularPreprocessor(table.schema).fit(train)
    packers = pre.schema_.feature("packer_type").values or ()
    assert packers[-1] == "__other__" and "NoPacker" in packers
    back = pre.inverse_transform(pre.transform(test, dtype=np.float64))
    unseen = ~test.features["packer_type"].isin(packers)
    assert (back["packer_type"][unseen] == "__other__").all()
    assert (back["packer_type"][~unseen] == test.features["packer_type"][~unseen]).all()
