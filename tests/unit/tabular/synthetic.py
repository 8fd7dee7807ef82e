"""A small synthetic schema with every constraint kind, and raw records that satisfy it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bastion.data.tabular import Feature, FeatureKind, LinearRelation, TabularPreprocessor, TabularSchema

SCHEMA = TabularSchema(
    name="synthetic",
    features=(
        Feature(name="proto", kind=FeatureKind.CATEGORICAL, values=("tcp", "udp", "icmp"), mutable=False),
        Feature(name="mode", kind=FeatureKind.CATEGORICAL, values=("a", "b", "c")),
        Feature(name="subset", kind=FeatureKind.INTEGER, bounds=(0, 40)),
        Feature(name="total", kind=FeatureKind.INTEGER, bounds=(0, 40)),
        Feature(name="bytes", kind=FeatureKind.INTEGER, bounds=(0, float("inf")), log_scale=True),
        Feature(name="rate", kind=FeatureKind.CONTINUOUS, bounds=(0, 1)),
        Feature(name="flag", kind=FeatureKind.BINARY),
        Feature(name="level", kind=FeatureKind.DISCRETE, values=(-1, 0, 1)),
        Feature(name="port", kind=FeatureKind.INTEGER, bounds=(0, 100), mutable=False),
    ),
    label="label",
    classes=("benign", "malicious"),
    benign=0,
    relations=(LinearRelation.less_equal("subset", "total", name="subset <= total"),),
)


def records(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """n valid raw records and labels that depend on them (so a model can learn something)."""
    rng = np.random.default_rng(seed)
    total = rng.integers(0, 41, n)
    subset = np.array([rng.integers(0, t + 1) for t in total])
    df = pd.DataFrame(
        {
            "proto": rng.choice(["tcp", "udp", "icmp"], n).astype(object),
            "mode": rng.choice(["a", "b", "c"], n).astype(object),
            "subset": subset.astype(np.int64),
            "total": total.astype(np.int64),
            "bytes": rng.integers(0, 100_000, n).astype(np.int64),
            "rate": rng.random(n),
            "flag": rng.integers(0, 2, n).astype(np.int64),
            "level": rng.choice([-1, 0, 1], n).astype(np.int64),
            "port": rng.integers(0, 101, n).astype(np.int64),
        }
    )
    score = df["rate"] + 0.02 * df["subset"] - 0.3 * df["flag"] + 0.2 * (df["mode"] == "b")
    y = (score > np.median(score)).to_numpy().astype(np.int64)
    return df, y


def fitted(n: int = 200, seed: int = 0) -> tuple[TabularPreprocessor, pd.DataFrame, np.ndarray]:
    df, y = records(n, seed)
    return TabularPreprocessor(SCHEMA).fit(df), df, y
