"""Constraint files, the rules the attacks respect, and the independent miner's audit of what they write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tabular_fixtures import kdd_line

from bastion._typing import Norm
from bastion.attacks import PGD, CoordinateSearch
from bastion.data import load_tabular
from bastion.data.sources.nsl_kdd import nsl_kdd_schema, read_nsl_kdd
from bastion.data.tabular import validate_raw
from bastion.data.tabular.constraints import ConstraintSet, shipped_constraints
from bastion.data.tabular.domain import TabularDomain
from bastion.data.tabular.mining import audit, mine
from bastion.errors import ConfigError
from bastion.evaluation.tabular import TabularAttackOutcome
from bastion.goals import Reach
from bastion.threat import ThreatModel

RULE_FILE = """\
format: bastion-constraints/1
dataset: nsl-kdd
grids:
  - {features: [serror_rate, rerror_rate], decimals: 2, text: fixed}
rules:
  - name: rejected connections carry no reply bytes
    if: {flag: {in: [REJ, S0]}}
    then: {dst_bytes: {eq: 0}}
  - name: no root without a login
    if: {logged_in: {eq: 0}}
    then: {num_root: {eq: 0}}
"""


def kdd_training_rows(n: int, seed: int) -> list[str]:
    """NSL-KDD lines where REJ / S0 rows never carry reply bytes and no root access happens without a login."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        attack = i % 2 == 1
        flag = ["REJ", "S0"][i % 4 // 2] if attack else "SF"
        out.append(
            kdd_line(
                flag=flag,
                src_bytes=str(int(rng.integers(0, 300 if attack else 5000))),
                dst_bytes="0" if attack else str(int(rng.integers(100, 9000))),
                logged_in="0" if attack else "1",
                num_root="0" if attack else str(int(rng.integers(0, 5))),
                count=str(int(rng.integers(100, 300) if attack else rng.integers(1, 20))),
                serror_rate=f"{rng.uniform(0.6, 1.0) if attack else rng.uniform(0, 0.2):.2f}",
                rerror_rate=f"{rng.uniform(0, 0.3):.2f}",
                attack="neptune" if attack else "normal",
            )
        )
    return out


@pytest.fixture(scope="module")
def kdd(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    root = tmp_path_factory.mktemp("kdd-rules")
    train = root / "KDDTrain+.txt"
    train.write_text("\n".join(kdd_training_rows(160, 0)) + "\n")
    return load_tabular(f"nsl-kdd:{train}"), train


def test_the_shipped_files_load_for_every_dataset_they_name() -> None:
    from bastion.data.sources.cic_ids2017 import cic_ids2017_schema
    from bastion.data.sources.malware import clamp_schema
    from bastion.data.sources.phishing import phishing_schema
    from bastion.data.sources.unsw_nb15 import unsw_nb15_schema

    for schema in (nsl_kdd_schema(), phishing_schema(), clamp_schema(), unsw_nb15_schema(), cic_ids2017_schema()):
        constraints = shipped_constraints(schema)
        assert constraints is not None and constraints.rules, schema.name
    kdd = shipped_constraints(nsl_kdd_schema())
    assert kdd is not None and kdd.grids["serror_rate"].decimals == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RULE_FILE.replace("then: {dst_bytes", "thne: {dst_bytes"), r"rules\.0: unknown key 'thne'"),
        (RULE_FILE.replace("{eq: 0}}\n  - name: no root", "{eqq: 0}}\n  - name: no root"), "unknown key 'eqq'"),
        (RULE_FILE.replace("bastion-constraints/1", "bastion-constraints/9"), "format"),
        (RULE_FILE.replace("decimals: 2", "decimals: -1"), r"grids\.0\.decimals"),
        (RULE_FILE.replace("    then: {num_root: {eq: 0}}\n", ""), r"rules\.1\.then: Field required"),
        (RULE_FILE.replace("{logged_in: {eq: 0}}", "{logged_in: {}}"), "a condition needs one of"),
        (RULE_FILE.replace("no root without a login", "rejected connections carry no reply bytes"), "duplicate rule"),
    ],
)
def test_a_malformed_constraint_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ConstraintSet.from_yaml(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("dst_bytes: {eq: 0}", "dst_bites: {eq: 0}", "unknown feature 'dst_bites'"),
        ("flag: {in: [REJ, S0]}", "flag: {le: 3}", "'flag' is categorical"),
        ("flag: {in: [REJ, S0]}", "flag: {in: [REJ, XX]}", "not categories of 'flag'"),
        ("[serror_rate, rerror_rate]", "[serror_rate, count]", "grids are for continuous"),
    ],
)
def test_a_constraint_file_that_does_not_fit_the_schema_is_refused(old: str, new: str, message: str) -> None:
    import yaml

    constraints = ConstraintSet.from_dict(yaml.safe_load(RULE_FILE.replace(old, new)))
    with pytest.raises(ConfigError, match=message):
        constraints.check_schema(nsl_kdd_schema())


def test_the_validator_rejects_an_implication_breach_and_an_off_grid_value() -> None:
    import yaml

    schema = nsl_kdd_schema()
    constraints = ConstraintSet.from_dict(yaml.safe_load(RULE_FILE)).check_schema(schema)
    clean = read_lines([kdd_line(flag="REJ", dst_bytes="0", logged_in="0", serror_rate="0.20")])
    breach = clean.copy()
    breach.loc[0, "dst_bytes"] = 45
    off_grid = clean.copy()
    off_grid.loc[0, "serror_rate"] = 0.225
    on_grid = clean.copy()
    on_grid.loc[0, "serror_rate"] = 0.22
    check = {"reference": clean, "constraints": constraints}
    assert validate_raw(on_grid, schema, **check).all()
    assert not validate_raw(breach, schema, **check).any()
    assert not validate_raw(off_grid, schema, **check).any()
    assert validate_raw(breach, schema, reference=clean).all()  # the schema alone cannot see it


def read_lines(lines: list[str]) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.txt"
        path.write_text("\n".join(lines) + "\n")
        return read_nsl_kdd(path, on_bad_rows="raise").features


def test_the_miner_finds_the_rules_no_training_row_breaks(kdd: tuple[object, Path]) -> None:
    data, _ = kdd
    train = data.tables["train"]  # type: ignore[attr-defined]
    mined = mine(train.features, train.schema, min_support=20)
    names = {r.name for r in mined.hard()}
    assert "flag = REJ => dst_bytes = 0" in names and "logged_in = 0 => num_root = 0" in names
    assert all(r.confidence == 1.0 and r.support >= 20 for r in mined.hard())
    assert mined.decimals["serror_rate"] == 2
    # The file it proposes is a valid constraint file.
    proposed = ConstraintSet.from_dict(mined.to_constraint_dict("nsl-kdd")).check_schema(train.schema)
    assert len(proposed.rules) == len(mined.hard())


def test_the_training_domain_carries_shipped_and_mined_rules(kdd: tuple[object, Path]) -> None:
    data, _ = kdd
    domain = data.dataset.spec.domain  # type: ignore[attr-defined]
    assert domain.constraints is not None and len(domain.rules) > 9
    again = TabularDomain.from_dict(domain.to_dict())
    assert again.constraints == domain.constraints


def random_model(n_features: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()


@pytest.mark.parametrize("attack", [PGD(n_steps=10), CoordinateSearch(n_iters=10, n_candidates=8)])
def test_a_written_record_never_breaks_a_mined_full_rule(kdd: tuple[object, Path], attack: object) -> None:
    data, _ = kdd
    ds = data.dataset  # type: ignore[attr-defined]
    domain = ds.spec.domain
    table = data.tables["test"]  # type: ignore[attr-defined]
    x = ds.test.x
    model = random_model(x.shape[1], 0)
    goal = Reach(1 - model(x).argmax(1))  # push every row across, so the attack moves
    result = attack(model, x, goal, ThreatModel(norm=Norm.LINF, eps=0.5, domain=domain))  # type: ignore[operator]
    assert (result.x_adv != x).any()
    records = domain.constraints.rounded(domain.raw_records(result.x_adv))
    train = data.tables["train"]  # type: ignore[attr-defined]
    report = audit(records, table.features, mine(train.features, train.schema, min_support=30))
    assert report["rules_checked"] > 0
    assert report["introduced"] == 0 and report["off_grid_values"] == 0


def test_the_audit_sees_a_breach_and_float32_noise(kdd: tuple[object, Path]) -> None:
    data, _ = kdd
    train = data.tables["train"]  # type: ignore[attr-defined]
    mined = mine(train.features, train.schema, min_support=20)
    originals = train.features[train.features["flag"] == "REJ"].head(3).reset_index(drop=True)
    written = originals.copy()
    written.loc[0, "dst_bytes"] = 100
    written.loc[1, "serror_rate"] = float(np.float32(0.85))
    report = audit(written, originals, mined)
    assert report["records_violating"] == 1 and report["off_grid_values"] == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), scale=st.floats(0.0, 1.0))
def test_repair_is_feasible_and_never_moves_away_from_the_clean_row(
    kdd: tuple[object, Path], seed: int, scale: float
) -> None:
    data, _ = kdd
    ds = data.dataset  # type: ignore[attr-defined]
    domain = ds.spec.domain
    x_ref = ds.test.x
    g = torch.Generator().manual_seed(seed)
    x = domain.project(x_ref + scale * (2 * torch.rand(x_ref.shape, generator=g) - 1), x_ref)
    repaired = domain.repair(x, x_ref)
    assert domain.is_feasible(repaired, x_ref).all()
    assert ((repaired - x_ref).abs() <= (x - x_ref).abs() + 1e-6).all()


def test_only_clean_detected_rows_with_the_margin_are_real_evasions() -> None:
    outcome = TabularAttackOutcome(
        x_adv=torch.zeros(4, 2),
        evaded=torch.tensor([True, True, True, False]),
        valid=torch.ones(4, dtype=torch.bool),
        clean_detected=torch.tensor([True, False, True, True]),
        margin=torch.tensor([0.5, 0.9, 0.004, 0.9]),
    )
    assert outcome.real_evasions().tolist() == [True, False, True, False]
    assert outcome.real_evasions(min_margin=0.1).tolist() == [True, False, False, False]


class _StubbornTarget:
    """A constrained target whose attacks never evade: as if an unbounded attack were broken."""

    unbounded_exemption = "constrained"

    def __init__(self, split: object) -> None:
        self.split = split

    def attack(
        self, model: object, attack: object, threat: object, *, seed: int, batch_size: int = 256
    ) -> tuple[None, torch.Tensor]:
        return None, torch.ones(len(self.split), dtype=torch.bool)  # type: ignore[arg-type]


def test_an_unbounded_attack_weaker_than_the_bounded_one_is_suspect(kdd: tuple[object, Path]) -> None:
    from bastion.evaluation.checks import SUSPECT, CheckSettings, constraint_limit
    from bastion.evaluation.record import Evaluation

    data, _ = kdd
    ds = data.dataset  # type: ignore[attr-defined]
    n = len(ds.test)
    ev = Evaluation(clean_accuracy=1.0, n_examples=n)
    ev.record("pgd-50", 0.3, torch.zeros(n, dtype=torch.bool))  # the evaluation evaded every row at 0.3
    threat = ThreatModel(norm=Norm.LINF, eps=0.3, domain=ds.spec.domain)
    check = constraint_limit(random_model(ds.test.x.shape[1], 0), _StubbornTarget(ds.test), threat, ev, CheckSettings())
    assert check.status == SUSPECT and check.measured["bounded_accuracy"] == 0.0
