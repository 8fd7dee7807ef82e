"""``unsw-nb15:PATH``: UNSW-NB15 (Moustafa & Slay 2015), the training-set / testing-set CSV files.

PATH is one of the two files (stratified 70/10/20) or a folder holding UNSW_NB15_training-set.csv and,
as the official test split, UNSW_NB15_testing-set.csv. Options: ``labels=binary|family``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from bastion.data.formats.csv import csv_rows
from bastion.data.source import one_of
from bastion.data.sources._fields import DWORD, WORD
from bastion.data.tabular.loading import TabularSource, register_tabular
from bastion.data.tabular.rows import check_choice, collect, existing_file
from bastion.data.tabular.schema import Feature, FeatureKind, TabularSchema
from bastion.data.tabular.table import OnBadRows, TabularTable

TRAIN_FILE = "UNSW_NB15_training-set.csv"
TEST_FILE = "UNSW_NB15_testing-set.csv"

UNSW_NB15_CATEGORIES: Mapping[str, str] = {
    "Normal": "normal",
    "Fuzzers": "Fuzzers",
    "Analysis": "Analysis",
    "Backdoor": "Backdoor",
    "Backdoors": "Backdoor",
    "DoS": "DoS",
    "Exploits": "Exploits",
    "Generic": "Generic",
    "Reconnaissance": "Reconnaissance",
    "Shellcode": "Shellcode",
    "Worms": "Worms",
}
"""attack_cat text -> class; the four raw CSVs spell "Backdoors", the training/testing sets "Backdoor"."""

_UNSW_NB15_FEATURES: tuple[tuple[str, str, float | None, bool], ...] = (
    # name, kind (c continuous, i integer, b binary, k categorical), upper bound (None = inf), log_scale
    ("dur", "c", None, True),
    ("proto", "k", None, False),
    ("service", "k", None, False),
    ("state", "k", None, False),
    ("spkts", "i", None, True),
    ("dpkts", "i", None, True),
    ("sbytes", "i", None, True),
    ("dbytes", "i", None, True),
    ("rate", "c", None, True),
    ("sttl", "i", 255.0, False),
    ("dttl", "i", 255.0, False),
    ("sload", "c", None, True),
    ("dload", "c", None, True),
    ("sloss", "i", None, True),
    ("dloss", "i", None, True),
    ("sinpkt", "c", None, True),
    ("dinpkt", "c", None, True),
    ("sjit", "c", None, True),
    ("djit", "c", None, True),
    ("swin", "i", WORD, False),
    ("stcpb", "i", DWORD, False),
    ("dtcpb", "i", DWORD, False),
    ("dwin", "i", WORD, False),
    ("tcprtt", "c", None, True),
    ("synack", "c", None, True),
    ("ackdat", "c", None, True),
    ("smean", "i", None, True),
    ("dmean", "i", None, True),
    ("trans_depth", "i", None, True),
    ("response_body_len", "i", None, True),
    ("ct_srv_src", "i", None, True),
    ("ct_state_ttl", "i", None, False),
    ("ct_dst_ltm", "i", None, True),
    ("ct_src_dport_ltm", "i", None, True),
    ("ct_dst_sport_ltm", "i", None, True),
    ("ct_dst_src_ltm", "i", None, True),
    ("is_ftp_login", "i", None, False),
    ("ct_ftp_cmd", "i", None, False),
    ("ct_flw_http_mthd", "i", None, True),
    ("ct_src_ltm", "i", None, True),
    ("ct_srv_dst", "i", None, True),
    ("is_sm_ips_ports", "b", None, False),
)

_KINDS = {
    "c": FeatureKind.CONTINUOUS,
    "i": FeatureKind.INTEGER,
    "b": FeatureKind.BINARY,
    "k": FeatureKind.CATEGORICAL,
}


def unsw_nb15_schema(labels: Literal["binary", "family"] = "binary") -> TabularSchema:
    """UNSW-NB15 training/testing-set schema: 42 features; label "label" (binary) or "attack_cat" (family).

    proto, service and state are categorical with categories learned from training (the published files
    carry over a hundred protocol names, and the lists differ between releases); they are immutable for
    the same reason as NSL-KDD's protocol_type / service / flag. is_ftp_login is an integer because the
    published files hold values other than 0/1. No relations: none could be checked on real data here.
    """
    check_choice("labels", labels, ("binary", "family"))
    features = tuple(
        Feature(
            name=name,
            kind=_KINDS[kind],
            bounds=None if kind in "kb" else (0.0, math.inf if upper is None else upper),
            log_scale=log,
            mutable=kind != "k",
        )
        for name, kind, upper, log in _UNSW_NB15_FEATURES
    )
    classes: tuple[str, ...] = ("normal", "attack")
    label, values, extras = "label", {"0": "normal", "1": "attack"}, ("id", "attack_cat")
    if labels == "family":
        classes = ("normal", *dict.fromkeys(v for v in UNSW_NB15_CATEGORIES.values() if v != "normal"))
        label, values, extras = "attack_cat", dict(UNSW_NB15_CATEGORIES), ("id", "label")
    return TabularSchema(
        name=f"unsw-nb15-{labels}",
        features=features,
        label=label,
        classes=classes,
        benign=0,
        label_values=tuple(values.items()),
        extras=extras,
        description="UNSW-NB15 UNSW_NB15_training-set.csv / UNSW_NB15_testing-set.csv, with a header row.",
    )


def read_unsw_nb15(
    path: str | Path, *, labels: Literal["binary", "family"] = "binary", on_bad_rows: OnBadRows = "drop"
) -> TabularTable:
    """Read a UNSW-NB15 training/testing-set CSV; a row whose label and attack_cat disagree is bad."""
    schema = unsw_nb15_schema(labels)
    check_choice("on_bad_rows", on_bad_rows, ("drop", "raise"))
    path = existing_file(path)
    events = csv_rows(path, header=True, columns=None, delimiter=",", encoding="utf-8", rename_duplicates=False)
    other = "attack_cat" if labels == "binary" else "label"

    def disagreements(table: TabularTable) -> list[tuple[int, str]]:
        cats = table.raw_labels if labels == "family" else table.extras["attack_cat"]
        bits = table.extras["label"] if labels == "family" else table.raw_labels
        return [
            (i, f"columns 'label' and 'attack_cat' disagree: label {bit} with attack_cat '{cat}'")
            for i, (cat, bit) in enumerate(zip(cats, bits, strict=True))
            if (cat.strip() == "Normal") == (bit.strip() != "0")
        ]

    return collect(
        path,
        schema,
        events,
        header_like=True,
        on_bad_rows=on_bad_rows,
        label_normalizer=str.strip,
        row_check=disagreements,
        needs={other: "to cross-check the label"},
    )


UNSW_NB15 = register_tabular(
    TabularSource(
        name="unsw-nb15",
        read=lambda path, options: read_unsw_nb15(
            path, labels=options.get("labels", "binary"), on_bad_rows=options["on_bad_rows"]
        ),
        options={"labels": one_of("binary", "family")},
        train_files=(TRAIN_FILE,),
        test_file=TEST_FILE,
        header=True,
    )
)
