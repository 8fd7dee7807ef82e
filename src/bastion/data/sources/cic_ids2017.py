"""``cic-ids2017:PATH``: CIC-IDS2017 (Sharafaldin et al. 2018), the MachineLearningCVE per-day CSV files.

PATH is one day's file or a folder holding exactly one .csv; stratified 70/10/20.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.sources._fields import WORD, words
from bastion.data.tabular.loading import TabularSource, register_tabular
from bastion.data.tabular.rows import check_choice
from bastion.data.tabular.schema import Feature, FeatureKind, TabularSchema
from bastion.data.tabular.table import OnBadRows, TabularTable, UnknownAttack

_CIC_IDS2017_COLUMNS = words(
    "Destination Port|Flow Duration|Total Fwd Packets|Total Backward Packets|Total Length of Fwd Packets|"
    "Total Length of Bwd Packets|Fwd Packet Length Max|Fwd Packet Length Min|Fwd Packet Length Mean|"
    "Fwd Packet Length Std|Bwd Packet Length Max|Bwd Packet Length Min|Bwd Packet Length Mean|"
    "Bwd Packet Length Std|Flow Bytes/s|Flow Packets/s|Flow IAT Mean|Flow IAT Std|Flow IAT Max|"
    "Flow IAT Min|Fwd IAT Total|Fwd IAT Mean|Fwd IAT Std|Fwd IAT Max|Fwd IAT Min|Bwd IAT Total|"
    "Bwd IAT Mean|Bwd IAT Std|Bwd IAT Max|Bwd IAT Min|Fwd PSH Flags|Bwd PSH Flags|Fwd URG Flags|"
    "Bwd URG Flags|Fwd Header Length|Bwd Header Length|Fwd Packets/s|Bwd Packets/s|Min Packet Length|"
    "Max Packet Length|Packet Length Mean|Packet Length Std|Packet Length Variance|FIN Flag Count|"
    "SYN Flag Count|RST Flag Count|PSH Flag Count|ACK Flag Count|URG Flag Count|CWE Flag Count|"
    "ECE Flag Count|Down/Up Ratio|Average Packet Size|Avg Fwd Segment Size|Avg Bwd Segment Size|"
    "Fwd Header Length.1|Fwd Avg Bytes/Bulk|Fwd Avg Packets/Bulk|Fwd Avg Bulk Rate|Bwd Avg Bytes/Bulk|"
    "Bwd Avg Packets/Bulk|Bwd Avg Bulk Rate|Subflow Fwd Packets|Subflow Fwd Bytes|Subflow Bwd Packets|"
    "Subflow Bwd Bytes|Init_Win_bytes_forward|Init_Win_bytes_backward|act_data_pkt_fwd|"
    "min_seg_size_forward|Active Mean|Active Std|Active Max|Active Min|Idle Mean|Idle Std|Idle Max|"
    "Idle Min",
    sep="|",
)

CIC_IDS2017_LABELS = (
    "BENIGN",
    "Bot",
    "DDoS",
    "DoS GoldenEye",
    "DoS Hulk",
    "DoS Slowhttptest",
    "DoS slowloris",
    "FTP-Patator",
    "Heartbleed",
    "Infiltration",
    "PortScan",
    "SSH-Patator",
    "Web Attack - Brute Force",
    "Web Attack - Sql Injection",
    "Web Attack - XSS",
)
"""Label texts of the MachineLearningCVE files after normalisation (the web-attack dash is byte 0x96)."""

_CIC_COUNTS = frozenset(
    {
        "Total Fwd Packets",
        "Total Backward Packets",
        "Subflow Fwd Packets",
        "Subflow Bwd Packets",
        "act_data_pkt_fwd",
        *(f"{d} {f} Flags" for d in ("Fwd", "Bwd") for f in ("PSH", "URG")),
        *(f"{f} Flag Count" for f in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWE", "ECE")),
    }
)
_CIC_SIZES = frozenset(
    n
    for n in _CIC_IDS2017_COLUMNS
    if ("Length" in n and "Header" not in n) or "Segment Size" in n or "Bulk" in n or n == "Average Packet Size"
) | {"Subflow Fwd Bytes", "Subflow Bwd Bytes"}


def _cic_feature(name: str) -> Feature:
    if name == "Destination Port":
        return Feature(name=name, kind=FeatureKind.INTEGER, bounds=(0.0, WORD), mutable=False)
    if name in _CIC_COUNTS:
        return Feature(name=name, kind=FeatureKind.INTEGER, bounds=(0.0, math.inf), log_scale="Packets" in name)
    if name in _CIC_SIZES:
        return Feature(name=name, kind=FeatureKind.CONTINUOUS, bounds=(0.0, math.inf), log_scale=True)
    return Feature(name=name, kind=FeatureKind.CONTINUOUS)


def cic_ids2017_schema(*, unknown_attack: UnknownAttack = "bad") -> TabularSchema:
    """CIC-IDS2017 MachineLearningCVE schema: 78 flow features, label "Label" (BENIGN vs attack).

    Column names are the published header with surrounding spaces stripped; its second "Fwd Header
    Length" is named "Fwd Header Length.1". Packet counts and flag counts are non-negative integers and
    packet / segment / bulk sizes non-negative; durations, inter-arrival times, rates, header lengths and
    Init_Win_bytes stay unbounded because CICFlowMeter writes negative values there (e.g. -1 windows).
    Destination Port is immutable (the attacked service). The flow-id columns of the
    GeneratedLabelledFlows release are accepted as extras. No relations: not checkable without the files.
    """
    check_choice("unknown_attack", unknown_attack, ("bad", "attack"))
    values = {name: "benign" if name == "BENIGN" else "attack" for name in CIC_IDS2017_LABELS}
    return TabularSchema(
        name="cic-ids2017",
        features=tuple(_cic_feature(n) for n in _CIC_IDS2017_COLUMNS),
        label="Label",
        classes=("benign", "attack"),
        benign=0,
        label_values=tuple(values.items()),
        unknown_label="attack" if unknown_attack == "attack" else None,
        extras=("Flow ID", "Source IP", "Source Port", "Destination IP", "Timestamp", "Protocol"),
        description="CIC-IDS2017 per-day CSV files with a header row (space-prefixed names).",
    )


def _cic_label(text: str) -> str:
    """'Web Attack \\x96 Brute Force' (cp1252 en dash read as latin-1) -> 'Web Attack - Brute Force'."""
    for dash in ("\x96", "\u2013", "\ufffd"):
        text = text.replace(dash, "-")
    return " ".join(text.split())


def read_cic_ids2017(
    path: str | Path,
    *,
    nonfinite: Literal["drop", "clip"] = "drop",
    clip_values: Mapping[str, tuple[float, float]] | None = None,
    unknown_attack: UnknownAttack = "bad",
    on_bad_rows: OnBadRows = "drop",
) -> TabularTable:
    """Read one CIC-IDS2017 day file (latin-1 text; repeated header rows are skipped and counted).

    Args:
        nonfinite: "drop" makes Infinity / NaN (in Flow Bytes/s and Flow Packets/s) bad rows; "clip" maps
            +-Infinity to the finite max / min, of this file or ``clip_values`` (pass the training
            ``table.meta["clip_values"]`` when reading a test file); NaN stays a bad row.
    """
    check_choice("nonfinite", nonfinite, ("drop", "clip"))
    return read_csv_with_schema(
        path,
        cic_ids2017_schema(unknown_attack=unknown_attack),
        header=True,
        encoding="latin-1",
        nonfinite="clip" if nonfinite == "clip" else "bad",
        clip_values=clip_values,
        rename_duplicates=True,
        label_normalizer=_cic_label,
        on_bad_rows=on_bad_rows,
    )


CIC_IDS2017 = register_tabular(
    TabularSource(
        name="cic-ids2017",
        read=lambda path, options: read_cic_ids2017(path, on_bad_rows=options["on_bad_rows"]),
        header=True,
    )
)
