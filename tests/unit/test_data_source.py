"""The SPEC parser every dataset shares, and the one registry both load_dataset and load_tabular go through."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.data import DATASETS, DataSource, load_dataset, load_tabular
from bastion.data.source import one_of, positive_int, yes_no
from bastion.data.tabular.loading import TabularSource, tabular_source
from bastion.errors import ConfigError, DataNotFoundError

TABULAR = {"nsl-kdd", "phishing", "malware", "unsw-nb15", "cic-ids2017", "csv"}


def test_parse_keeps_the_text_and_splits_name_path_options() -> None:
    source = DataSource.parse("GTSRB:C:/data/gtsrb?Size=48&roi=1")
    assert source.text == "GTSRB:C:/data/gtsrb?Size=48&roi=1"
    assert (source.name, source.path) == ("gtsrb", "C:/data/gtsrb")
    assert source.options == {"size": "48", "roi": "1"}
    assert DataSource.parse("digits") == DataSource("digits", "digits", None, {})


def test_parse_refuses_malformed_options_naming_them() -> None:
    with pytest.raises(ConfigError, match="'roi' given twice"):
        DataSource.parse("gtsrb:/x?roi=1&roi=0")
    with pytest.raises(ConfigError, match="'=1' in gtsrb SPEC is not key=value"):
        DataSource.parse("gtsrb:/x?=1")
    with pytest.raises(ConfigError, match="option 'schema' in csv SPEC needs a value"):
        DataSource.parse("csv:/x?schema=")


def test_typed_options_name_the_bad_key_and_value() -> None:
    source = DataSource.parse("x:/p?flip=perhaps&size=2")
    with pytest.raises(ConfigError, match=r"bad value for option 'flip' in x SPEC: .*'perhaps'"):
        source.typed_options({"flip": yes_no, "size": positive_int})
    with pytest.raises(ConfigError, match=r"unknown option 'flip' in x SPEC \(options: size\)"):
        source.typed_options({"size": positive_int})
    assert DataSource.parse("x:/p?mode=b").typed_options({"mode": one_of("a", "b")}) == {"mode": "b"}
    with pytest.raises(ValueError, match="expected a or b, got 'c'"):
        one_of("a", "b")("c")


@pytest.mark.parametrize(("text", "value"), [("1", True), ("Yes", True), ("on", True), ("0", False), ("NO", False)])
def test_yes_no(text: str, value: bool) -> None:
    assert yes_no(text) is value


def test_with_option_overrides_one_key() -> None:
    source = DataSource.parse("nsl-kdd:/x?on_bad_rows=drop&labels=family")
    assert source.with_option("on_bad_rows", "raise").options == {"on_bad_rows": "raise", "labels": "family"}
    assert source.options["on_bad_rows"] == "drop"


def test_location_expands_and_says_what_is_missing() -> None:
    assert DataSource.parse("npz:~/a.npz").location() == Path("~/a.npz").expanduser()
    with pytest.raises(ConfigError, match="mnist needs a folder"):
        DataSource.parse("mnist").location("a folder")


def test_tabular_datasets_register_their_layout_in_the_one_registry() -> None:
    assert {n for n in DATASETS.names() if isinstance(DATASETS.get(n), TabularSource)} == TABULAR
    headers = {name: tabular_source(name).has_header({}) for name in sorted(TABULAR)}
    assert headers == {
        "cic-ids2017": True,
        "csv": True,
        "malware": True,
        "nsl-kdd": False,
        "phishing": False,
        "unsw-nb15": True,
    }
    assert tabular_source("csv").has_header({"header": False}) is False
    with pytest.raises(ConfigError, match="'digits' is not a tabular dataset"):
        tabular_source("digits")


def test_tabular_options_are_checked_by_the_shared_parser(tmp_path: Path) -> None:
    file = tmp_path / "KDDTrain+.txt"
    file.write_text("")
    with pytest.raises(ConfigError, match="bad value for option 'labels' in nsl-kdd SPEC"):
        load_dataset(f"nsl-kdd:{file}?labels=families")
    with pytest.raises(ConfigError, match="bad value for option 'on_bad_rows'"):
        load_tabular(f"nsl-kdd:{file}", on_bad_rows="ignore")
    with pytest.raises(ConfigError, match="bad value for option 'header' in csv SPEC"):
        load_dataset(f"csv:{file}?schema=s.yaml&header=maybe")
    with pytest.raises(ConfigError, match="not a tabular dataset"):
        load_tabular("digits")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_tabular(f"phishing:{tmp_path / 'missing.csv'}")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_checks_its_options_with_the_shared_parser(name: str, tmp_path: Path) -> None:
    """Contract: a registered dataset refuses an option it does not take, naming it and the dataset."""
    with pytest.raises(ConfigError, match=f"unknown option 'colour' in {name} SPEC"):
        load_dataset(f"{name}:{tmp_path}?colour=1")
