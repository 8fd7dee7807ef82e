"""Opting out of automatically accepted mined rules: rule ids, ``reject=``, ``rules=shipped|PATH`` and
``constraints mine --reject``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_tabular_constraints import kdd_training_rows

from bastion.app.constraints import main as constraints_main
from bastion.data import load_tabular
from bastion.data.tabular.constraints import ConstraintSet, shipped_constraints
from bastion.data.tabular.mining import mine, read_rejections, rule_id
from bastion.errors import ConfigError, DataNotFoundError

REJ = "flag = REJ => dst_bytes = 0"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kdd-review") / "KDDTrain+.txt"
    path.write_text("\n".join(kdd_training_rows(300, 0)) + "\n")
    return path


def rule_names(spec: str) -> set[str]:
    domain = load_tabular(spec).dataset.spec.domain
    return {r.name for r in domain.rules}


def test_a_rule_id_is_stable_and_names_one_rule(train_file: Path) -> None:
    assert rule_id(REJ) == rule_id(REJ) and rule_id(REJ) != rule_id("flag = S0 => dst_bytes = 0")
    assert len(rule_id(REJ)) == 9 and rule_id(REJ).startswith("r")
    data = load_tabular(f"nsl-kdd:{train_file}")
    mined = mine(data.tables["train"].features, data.tables["train"].schema, min_support=30)
    ids = [r.id for r in mined.hard()]
    assert len(set(ids)) == len(ids)


def test_without_drops_by_id_or_name_and_refuses_unknown_entries(train_file: Path) -> None:
    data = load_tabular(f"nsl-kdd:{train_file}")
    mined = mine(data.tables["train"].features, data.tables["train"].schema, min_support=30)
    assert REJ in {r.name for r in mined.hard()}
    by_id = mined.without([rule_id(REJ)])
    by_name = mined.without([REJ])
    assert REJ not in {r.name for r in by_id.hard()} and by_id == by_name
    assert len(by_id.hard()) == len(mined.hard()) - 1
    with pytest.raises(ConfigError, match="r00000000"):
        mined.without(["r00000000"])


def test_reject_option_leaves_the_rule_out_of_the_training_domain(train_file: Path) -> None:
    auto = rule_names(f"nsl-kdd:{train_file}")
    assert REJ in auto
    rejected = rule_names(f"nsl-kdd:{train_file}?reject={rule_id(REJ)}")
    assert auto - rejected == {REJ}


def test_rules_shipped_accepts_no_mined_rule(train_file: Path) -> None:
    data = load_tabular(f"nsl-kdd:{train_file}?rules=shipped")
    shipped = shipped_constraints(data.tables["train"].schema)
    assert shipped is not None
    assert {r.name for r in data.dataset.spec.domain.rules} == {r.name for r in shipped.rules}


def test_a_reviewed_file_replaces_the_automatic_set(train_file: Path, tmp_path: Path) -> None:
    reviewed = tmp_path / "reviewed.yaml"
    assert constraints_main(["mine", f"nsl-kdd:{train_file}", "--out", str(reviewed), "--reject", REJ]) == 0
    written = yaml.safe_load(reviewed.read_text())
    assert REJ not in {r["name"] for r in written["rules"]} and written["rules"]
    names = rule_names(f"nsl-kdd:{train_file}?rules={reviewed}")
    assert REJ not in names
    assert names == rule_names(f"nsl-kdd:{train_file}?reject={rule_id(REJ)}")


def test_reject_file_and_unknown_rejections(
    train_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    review = tmp_path / "rejected.txt"
    review.write_text(f"# not trusted\n{rule_id(REJ)}  # REJ replies\n\n")
    assert read_rejections(review) == [rule_id(REJ)]
    out = tmp_path / "rules.yaml"
    assert constraints_main(["mine", f"nsl-kdd:{train_file}", "--out", str(out), "--reject-file", str(review)]) == 0
    assert REJ not in {r["name"] for r in yaml.safe_load(out.read_text())["rules"]}
    assert constraints_main(["mine", f"nsl-kdd:{train_file}", "--reject", "r00000000"]) == 2
    assert "r00000000" in capsys.readouterr().err
    with pytest.raises(DataNotFoundError):
        read_rejections(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ("reject=flag", ConfigError, "r1a2b3c4d"),
        ("reject=r00000000", ConfigError, "r00000000"),
        (f"rules=shipped&reject={rule_id(REJ)}", ConfigError, "rules=auto"),
        ("rules=/no/such/reviewed.yaml", DataNotFoundError, "does not exist"),
    ],
)
def test_bad_rule_options_are_clear_errors(train_file: Path, options: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        load_tabular(f"nsl-kdd:{train_file}?{options}")


def test_range_rules_are_mined_on_request_and_read_the_same_in_the_rule_language(train_file: Path) -> None:
    data = load_tabular(f"nsl-kdd:{train_file}")
    train = data.tables["train"]
    assert not [r for r in mine(train.features, train.schema).rules if r.then_op != "eq"]
    mined = mine(train.features, train.schema, min_support=30, ranges=True)
    sf_count = train.features.loc[train.features["flag"] == "SF", "count"].astype(int)
    top = f"flag = SF => count <= {sf_count.max()}"
    by_name = {r.name: r for r in mined.hard()}
    assert top in by_name and sf_count.max() < 20  # the fixture's normal rows have 1-19 connections
    assert by_name[top].holds(train.features).all()
    broken = train.features[train.features["flag"] == "SF"].head(3).copy()
    broken["count"] = 250
    assert not by_name[top].holds(broken).any()
    # the constraint file the miner proposes says the same in the rule language
    proposed = ConstraintSet.from_dict(mined.to_constraint_dict("nsl-kdd")).check_schema(train.schema)
    rule_index = [r.name for r in proposed.rules].index(top)
    assert not proposed.rules_hold(broken)[:, rule_index].any()
    assert proposed.rules_hold(train.features)[:, rule_index].all()
