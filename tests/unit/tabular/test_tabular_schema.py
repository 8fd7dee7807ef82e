"""Schema objects, their YAML form (unknown keys named with file and line) and the provenance hash."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.sources.cic_ids2017 import cic_ids2017_schema
from bastion.data.sources.malware import clamp_schema
from bastion.data.sources.nsl_kdd import nsl_kdd_schema
from bastion.data.sources.phishing import phishing_schema
from bastion.data.sources.unsw_nb15 import unsw_nb15_schema
from bastion.data.tabular import Feature, FeatureKind, LinearRelation, TabularSchema
from bastion.errors import ConfigError, DataNotFoundError

Write = Callable[..., Path]

YAML = """\
name: logins
description: a small login log
label:
  column: outcome
  classes: [ok, intrusion]
  benign: ok
  values: {"0": ok, "1": intrusion}
features:
  duration: {type: continuous, bounds: [0, null], log_scale: true}
  failed: {type: integer, bounds: [0, 100]}
  admin: {type: binary, mutable: false}
  risk: {type: discrete, values: [-1, 0, 1]}
  proto: {type: categorical, categories: [tcp, udp], mutable: false}
  client: {type: categorical}
relations:
  - name: admins do not fail
    terms: {failed: 1, admin: 100}
    bound: 100
extras: [session_id]
"""


def test_yaml_schema_loads(write: Write) -> None:
    schema = TabularSchema.from_yaml(write("s.yaml", YAML))
    assert schema.names == ("duration", "failed", "admin", "risk", "proto", "client")
    assert schema.classes == ("ok", "intrusion") and schema.benign == 0
    assert schema.feature("duration").bounds == (0.0, math.inf)
    assert schema.feature("duration").log_scale
    assert schema.feature("admin").bounds == (0.0, 1.0) and not schema.feature("admin").mutable
    assert schema.feature("risk").values == (-1.0, 0.0, 1.0)
    assert schema.feature("client").is_open
    assert schema.class_index("1") == 1 and schema.class_index("1.0") == 1 and schema.class_index("2") is None
    assert schema.extras == ("session_id",)


def test_yaml_schema_reads_any_csv(write: Write) -> None:
    schema = TabularSchema.from_yaml(write("s.yaml", YAML))
    header = "session_id,duration,failed,admin,risk,proto,client,outcome"
    rows = ["a,1.5,3,0,1,tcp,firefox,0", "b,0,101,0,1,tcp,curl,1", "c,2,0,1,0,icmp,curl,1"]
    table = read_csv_with_schema(write("log.csv", [header, *rows]), schema)
    assert len(table) == 1 and table.extras["session_id"].tolist() == ["a"]
    assert table.bad_rows.rows == (
        (3, "column 'failed': 101 is outside bounds [0, 100]"),
        (4, "column 'proto': unknown category 'icmp'"),
    )


def test_round_trip_through_dict_and_yaml(write: Write, tmp_path: Path) -> None:
    schema = TabularSchema.from_yaml(write("s.yaml", YAML))
    assert TabularSchema.from_dict(schema.to_dict()) == schema
    schema.to_yaml(tmp_path / "again.yaml")
    again = TabularSchema.from_yaml(tmp_path / "again.yaml")
    assert again == schema and again.schema_hash() == schema.schema_hash()


@pytest.mark.parametrize(
    "schema",
    [nsl_kdd_schema(), nsl_kdd_schema("family"), phishing_schema(), clamp_schema(), unsw_nb15_schema()]
    + [unsw_nb15_schema("family"), cic_ids2017_schema()],
    ids=lambda s: s.name,
)
def test_builtin_schemas_round_trip(schema: TabularSchema, tmp_path: Path) -> None:
    schema.to_yaml(tmp_path / "s.yaml")
    assert TabularSchema.from_yaml(tmp_path / "s.yaml") == schema


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  failed: {type: integer, bounds: [0, 100]}",
            "  failed: {type: integer, colour: red}",
            "s.yaml:10: feature 'failed': unknown key 'colour'",
        ),
        ("extras: [session_id]", "extra: [session_id]", "s.yaml:19: schema: unknown key 'extra'"),
        ("  benign: ok", "  benign: ok\n  positive: intrusion", "s.yaml:7: label: unknown key 'positive'"),
        (
            "    bound: 100",
            "    bound: 100\n    strict: true",
            "s.yaml:19: relation 'admins do not fail': unknown key 'strict'",
        ),
        (
            "{type: binary, mutable: false}",
            "{type: boolean}",
            "s.yaml:11: feature 'admin': unknown type 'boolean'",
        ),
        (
            "  risk: {type: discrete, values: [-1, 0, 1]}",
            "  risk: {type: discrete}",
            "feature 'risk': a discrete feature needs",
        ),
        (
            "bounds: [0, null], log_scale: true",
            "log_scale: true",
            "feature 'duration': log_scale needs bounds",
        ),
        ("  benign: ok", "  benign: fine", "s.yaml:6: label: 'fine' is not a class"),
        ("terms: {failed: 1, admin: 100}", "terms: {failed: 1, admins: 100}", "unknown feature 'admins'"),
        (
            "terms: {failed: 1, admin: 100}",
            "terms: {proto: 1}",
            "'proto' is not valid, use 'feature=category' terms",
        ),
        ("  admin: {type: binary", "  failed: {type: binary", "s.yaml:11: duplicate key 'failed'"),
    ],
)
def test_bad_yaml_names_the_key_and_column(write: Write, old: str, new: str, message: str) -> None:
    assert old in YAML
    path = write("s.yaml", YAML.replace(old, new))
    with pytest.raises(ConfigError) as err:
        TabularSchema.from_yaml(path)
    assert message in str(err.value)


def test_missing_schema_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="absent.yaml"):
        TabularSchema.from_yaml(tmp_path / "absent.yaml")


def test_hash_tracks_the_data_contract_not_the_description() -> None:
    schema = nsl_kdd_schema()
    assert schema.schema_hash() == nsl_kdd_schema().schema_hash()
    assert replace(schema, description="other words").schema_hash() == schema.schema_hash()
    assert nsl_kdd_schema("family").schema_hash() != schema.schema_hash()
    features = list(schema.features)
    features[0] = replace(features[0], bounds=(0.0, 1e6))
    assert replace(schema, features=tuple(features)).schema_hash() != schema.schema_hash()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "binary", "bounds": (0, 2)}, r"binary feature has bounds \[0, 1\]"),
        ({"kind": "categorical", "bounds": (0, 1)}, "takes 'categories'"),
        ({"kind": "categorical", "values": ("a", "a")}, "duplicate categories"),
        ({"kind": "integer", "values": (1, 2)}, "only for discrete or categorical"),
        ({"kind": "discrete", "values": (0, 5), "bounds": (0, 1)}, "leave bounds"),
        ({"kind": "continuous", "bounds": (2, 1)}, "low <= high"),
        ({"kind": "integer", "group": "g"}, "needs type binary"),
        ({"kind": "continuous", "log_scale": True, "bounds": (-1, 1)}, "lower limit >= 0"),
    ],
)
def test_feature_rejects_contradictions(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Feature(name="f", **kwargs)  # type: ignore[arg-type]


def test_schema_rejects_inconsistent_parts() -> None:
    f = Feature(name="a", kind=FeatureKind.INTEGER)
    with pytest.raises(ConfigError, match="duplicate feature names"):
        TabularSchema(name="s", features=(f, f), label="y", classes=("n", "p"), benign=0)
    with pytest.raises(ConfigError, match="benign index 2"):
        TabularSchema(name="s", features=(f,), label="y", classes=("n", "p"), benign=2)
    with pytest.raises(ConfigError, match="reuses the name"):
        TabularSchema(name="s", features=(f,), label="a", classes=("n", "p"), benign=0)
    with pytest.raises(ConfigError, match="maps to unknown class"):
        TabularSchema(name="s", features=(f,), label="y", classes=("n", "p"), benign=0, label_values=(("1", "x"),))


def test_linear_relation_evaluates_indicators() -> None:
    rel = LinearRelation(name="r", terms=(("packer", 1.0), ("packer_type=NoPacker", 1.0)), bound=1.0)
    df = pd.DataFrame({"packer": [0, 1, 1], "packer_type": ["NoPacker", "UPX", "NoPacker"]})
    assert rel.lhs(df).tolist() == [1.0, 1.0, 2.0]
    assert rel.holds(df).tolist() == [True, True, False]
    le = LinearRelation.less_equal("a", "b")
    assert le.holds(pd.DataFrame({"a": [1, 2], "b": [1, 1]})).tolist() == [True, False]
    assert rel.features == ("packer", "packer_type")
    with pytest.raises(ConfigError, match="non-zero"):
        LinearRelation(name="z", terms=(("a", 0.0),), bound=0)
    assert np.isfinite(rel.bound)


def test_a_row_at_a_relation_bound_still_holds_after_a_float32_round_trip() -> None:
    # found on KDDTest+: serror_rate 0.03 + rerror_rate 0.98 <= 1.01, read back from float32 model space
    rel = LinearRelation(name="disjoint", terms=(("a", 1.0), ("b", 1.0)), bound=1.01)
    exact = pd.DataFrame({"a": [0.03], "b": [0.98]})
    rounded = exact.astype(np.float32).astype(np.float64)
    assert rounded.sum(axis=1).iloc[0] > 1.01  # the rounding alone crosses the bound
    assert rel.holds(exact).all() and rel.holds(rounded).all()
    assert not rel.holds(pd.DataFrame({"a": [0.04], "b": [0.98]})).any()  # real slack is still refused
