"""TabularPreprocessor: exact inversion, box -> valid records, fitted state as JSON; validate_raw."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bastion.data.tabular import (
    OTHER,
    Feature,
    FeatureKind,
    LinearRelation,
    TabularPreprocessor,
    TabularSchema,
    raw_violations,
    validate_raw,
)
from bastion.errors import ConfigError, DataFormatError, InputValidationError, NotFittedError

K = FeatureKind
SCHEMA = TabularSchema(
    name="mixed",
    features=(
        Feature(name="temp", kind=K.CONTINUOUS, bounds=(-5.0, 5.0)),
        Feature(name="score", kind=K.CONTINUOUS),
        Feature(name="bytes", kind=K.INTEGER, bounds=(0.0, math.inf), log_scale=True),
        Feature(name="rate", kind=K.CONTINUOUS, bounds=(0.0, math.inf), log_scale=True),
        Feature(name="hops", kind=K.INTEGER, bounds=(-3.0, 10.0)),
        Feature(name="flag", kind=K.BINARY),
        Feature(name="risk", kind=K.DISCRETE, values=(-1, 0, 1)),
        Feature(name="level", kind=K.DISCRETE, values=(0.5, 1.5, 4.0), mutable=False),
        Feature(name="proto", kind=K.CATEGORICAL, values=("tcp", "udp", "icmp"), mutable=False),
        Feature(name="agent", kind=K.CATEGORICAL),
        Feature(name="day_mon", kind=K.BINARY, group="day"),
        Feature(name="day_tue", kind=K.BINARY, group="day"),
        Feature(name="day_wed", kind=K.BINARY, group="day"),
    ),
    label="y",
    classes=("benign", "malicious"),
    benign=0,
    relations=(LinearRelation.less_equal("flag", "hops", name="flag needs a hop"),),
)
DAYS = ("day_mon", "day_tue", "day_wed")


@st.composite
def records(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 25) -> pd.DataFrame:
    """Raw records valid for SCHEMA (relations aside)."""
    n = draw(st.integers(min_rows, max_rows))

    def column(strategy: st.SearchStrategy[object]) -> list[object]:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    finite = {"allow_nan": False, "allow_infinity": False}
    days = column(st.sampled_from(DAYS))
    df = pd.DataFrame(
        {
            "temp": column(st.floats(-5, 5, **finite)),
            "score": column(st.floats(-1e6, 1e6, **finite)),
            "bytes": column(st.integers(0, 10**12)),
            "rate": column(st.floats(0, 1e9, **finite)),
            "hops": column(st.integers(-3, 10)),
            "flag": column(st.integers(0, 1)),
            "risk": column(st.sampled_from([-1, 0, 1])),
            "level": column(st.sampled_from([0.5, 1.5, 4.0])),
            "proto": pd.Series(column(st.sampled_from(["tcp", "udp", "icmp"])), dtype=object),
            "agent": pd.Series(column(st.sampled_from(["curl", "firefox", "wget", "edge"])), dtype=object),
            **{d: [int(x == d) for x in days] for d in DAYS},
        }
    )
    return df.astype({c: np.int64 for c in ("bytes", "hops", "flag", "risk", *DAYS)})


def assert_same_records(back: pd.DataFrame, df: pd.DataFrame) -> None:
    assert list(back.columns) == list(df.columns)
    for name in df.columns:
        kind = SCHEMA.feature(name).kind
        if kind is K.CONTINUOUS:
            scale = max(1.0, float(np.abs(df[name]).max()))
            np.testing.assert_allclose(back[name], df[name], rtol=1e-9, atol=1e-9 * scale)
        else:
            assert back[name].tolist() == df[name].tolist(), name
            assert back[name].dtype == df[name].dtype, name


@settings(max_examples=60, deadline=None)
@given(records())
def test_inverse_transform_returns_the_records(df: pd.DataFrame) -> None:
    pre = TabularPreprocessor(SCHEMA).fit(df)
    x = pre.transform(df, dtype=np.float64)
    assert x.shape == (len(df), pre.n_features_out_)
    assert (x >= pre.lower_).all() and (x <= pre.upper_).all()
    assert_same_records(pre.inverse_transform(x), df)
    np.testing.assert_array_equal(pre.snap(x)[:, pre.integer_columns_], x[:, pre.integer_columns_])


@settings(max_examples=60, deadline=None)
@given(records(min_rows=2), st.data())
def test_any_point_in_the_box_inverts_to_valid_records(df: pd.DataFrame, data: st.DataObject) -> None:
    pre = TabularPreprocessor(SCHEMA).fit(df)
    n = data.draw(st.integers(1, 20))
    u = data.draw(arrays(np.float64, (n, pre.n_features_out_), elements=st.floats(0, 1)))
    x = pre.lower_ + u * (pre.upper_ - pre.lower_)
    raw = pre.inverse_transform(x.astype(data.draw(st.sampled_from([np.float32, np.float64]))))
    assert validate_raw(raw, SCHEMA, relations=False).all(), raw_violations(raw, SCHEMA, relations=False)[:3]
    assert validate_raw(raw, pre.schema_, relations=False).all()
    assert set(raw["agent"]) <= {*df["agent"], OTHER}
    snapped = pre.snap(x)
    np.testing.assert_allclose(pre.transform(pre.inverse_transform(snapped), dtype=np.float64), snapped, atol=1e-9)


def test_float32_is_exact_for_grids_and_small_integers() -> None:
    df = _fixed_records()
    pre = TabularPreprocessor(SCHEMA).fit(df)
    back = pre.inverse_transform(pre.transform(df))
    for name in ("hops", "flag", "risk", "level", "proto", "agent", *DAYS):
        assert back[name].tolist() == df[name].tolist()


def _fixed_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "temp": [-5.0, 0.25, 5.0],
            "score": [-10.0, 3.5, 100.0],
            "bytes": [0, 1500, 381709090],
            "rate": [0.0, 2.5, 1e6],
            "hops": [0, 2, 10],
            "flag": [0, 0, 1],
            "risk": [-1, 0, 1],
            "level": [0.5, 4.0, 1.5],
            "proto": pd.Series(["tcp", "udp", "icmp"], dtype=object),
            "agent": pd.Series(["curl", "curl", "wget"], dtype=object),
            "day_mon": [1, 0, 0],
            "day_tue": [0, 1, 0],
            "day_wed": [0, 0, 1],
        }
    )


def test_model_space_description() -> None:
    pre = TabularPreprocessor(SCHEMA).fit(_fixed_records())
    assert pre.columns_[pre.feature_slices_["proto"]] == ("proto=tcp", "proto=udp", "proto=icmp")
    assert pre.columns_[pre.feature_slices_["agent"]] == ("agent=curl", "agent=wget", f"agent={OTHER}")
    assert pre.n_features_out_ == 8 + 3 + 3 + 3
    immutable = {pre.columns_[i] for i in np.flatnonzero(pre.immutable_mask_)}
    assert immutable == {"level", "proto=tcp", "proto=udp", "proto=icmp"}
    groups = [[pre.columns_[i] for i in g] for g in pre.onehot_groups_]
    assert ["proto=tcp", "proto=udp", "proto=icmp"] in groups and list(DAYS) in groups
    assert [pre.columns_[i] for i in pre.integer_columns_] == ["bytes", "hops"]
    risk = pre.feature_slices_["risk"].start
    level = pre.feature_slices_["level"].start
    np.testing.assert_allclose(pre.discrete_grids_[risk], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(pre.discrete_grids_[level], [0.0, 1 / 3.5, 1.0])
    assert pre.ranges_["temp"] == (-5.0, 5.0) and pre.ranges_["score"] == (-10.0, 100.0)
    assert pre.ranges_["bytes"] == (0.0, 381709090.0)


def test_transform_never_refits_and_clips_or_raises_out_of_range() -> None:
    train = _fixed_records()
    pre = TabularPreprocessor(SCHEMA).fit(train)
    test = train.copy()
    test.loc[0, "score"] = 1000.0
    test.loc[1, "agent"] = "lynx"
    x = pre.transform(test, dtype=np.float64)
    assert pre.ranges_["score"] == (-10.0, 100.0)
    assert x[0, pre.feature_slices_["score"].start] == 1.0
    assert x[1, pre.feature_slices_["agent"]].tolist() == [0.0, 0.0, 1.0]
    assert pre.count_out_of_range(test) == {"score": 1}
    strict = TabularPreprocessor(SCHEMA, out_of_range="raise").fit(train)
    with pytest.raises(DataFormatError, match=r"row 0: column 'score': 1000 is outside the fitted range \[-10, 100\]"):
        strict.transform(test)


def test_invalid_records_are_refused_with_row_and_column() -> None:
    pre = TabularPreprocessor(SCHEMA).fit(_fixed_records())
    bad = _fixed_records()
    bad.loc[2, "proto"] = "gre"
    with pytest.raises(DataFormatError, match=r"transform: row 2: column 'proto': unknown category 'gre'"):
        pre.transform(bad)
    bad = _fixed_records()
    bad.loc[1, "hops"] = 11
    with pytest.raises(DataFormatError, match=r"fit: row 1: column 'hops': 11 is outside bounds \[-3, 10\]"):
        TabularPreprocessor(SCHEMA).fit(bad)
    with pytest.raises(DataFormatError, match="lack column"):
        pre.transform(_fixed_records().drop(columns=["temp"]))
    with pytest.raises(DataFormatError, match="0 rows"):
        TabularPreprocessor(SCHEMA).fit(_fixed_records().iloc[:0])


def test_not_fitted_and_bad_inputs() -> None:
    pre = TabularPreprocessor(SCHEMA)
    with pytest.raises(NotFittedError, match="call fit"):
        pre.transform(_fixed_records())
    with pytest.raises(ConfigError, match="out_of_range"):
        TabularPreprocessor(SCHEMA, out_of_range="wrap")  # type: ignore[arg-type]
    pre.fit(_fixed_records())
    with pytest.raises(InputValidationError, match="expected shape"):
        pre.inverse_transform(np.zeros((2, 3)))
    with pytest.raises(InputValidationError, match="NaN"):
        pre.inverse_transform(np.full((1, pre.n_features_out_), np.nan))


def test_state_round_trips_through_json() -> None:
    pre = TabularPreprocessor(SCHEMA, out_of_range="raise").fit(_fixed_records())
    state = json.loads(json.dumps(pre.to_dict()))
    again = TabularPreprocessor.from_dict(state)
    assert again.out_of_range == "raise" and again.columns_ == pre.columns_
    np.testing.assert_array_equal(again.transform(_fixed_records()), pre.transform(_fixed_records()))
    np.testing.assert_array_equal(again.lower_, pre.lower_)
    tampered = json.loads(json.dumps(state))
    tampered["schema"]["features"]["hops"]["bounds"] = [-3, 11]
    with pytest.raises(ConfigError, match="schema_hash"):
        TabularPreprocessor.from_dict(tampered)
    with pytest.raises(ConfigError, match="unknown key"):
        TabularPreprocessor.from_dict({**state, "pickle": "no"})
    with pytest.raises(NotFittedError):
        TabularPreprocessor(SCHEMA).to_dict()


def test_validate_raw_checks_immutables_relations_and_groups() -> None:
    ref = _fixed_records()
    adv = ref.copy()
    assert validate_raw(adv, SCHEMA, reference=ref).all()
    adv.loc[0, "proto"] = "udp"
    adv.loc[1, "temp"] = 4.0
    adv.loc[2, "level"] = 0.5
    assert validate_raw(adv, SCHEMA, reference=ref).tolist() == [False, True, False]
    assert validate_raw(adv, SCHEMA).all()
    reasons = raw_violations(adv, SCHEMA, reference=ref)
    assert reasons == [
        (0, "column 'proto': immutable feature changed from 'tcp' to 'udp'"),
        (2, "column 'level': immutable feature changed from 1.5 to 0.5"),
    ]
    broken = ref.copy()
    broken.loc[0, ["flag", "hops"]] = [1, -1]
    broken.loc[1, "day_mon"] = 1
    broken["risk"] = broken["risk"].astype(np.float64)
    broken.loc[2, "risk"] = 0.5
    assert raw_violations(broken, SCHEMA) == [
        (0, "relation 'flag needs a hop': left side 2 exceeds the bound 0"),
        (1, "one-hot group 'day': sums to 2, not 1"),
        (2, "column 'risk': 0.5 is not one of {-1, 0, 1}"),
    ]
    assert validate_raw(broken, SCHEMA, relations=False).tolist() == [True, False, False]
    with pytest.raises(InputValidationError, match="reference has 2 rows"):
        validate_raw(adv, SCHEMA, reference=ref.iloc[:2])
