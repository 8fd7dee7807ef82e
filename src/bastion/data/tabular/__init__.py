"""Tabular security data: schemas, schema-checked records and invertible preprocessing (numpy/pandas).

The readers of each dataset live with its SPEC in :mod:`bastion.data.sources` (``nsl_kdd``,
``phishing``, ``malware``, ``unsw_nb15``, ``cic_ids2017``, ``csv``); the CSV and ARFF engines in
:mod:`bastion.data.formats`.
"""

from bastion.data.tabular.preprocess import TabularPreprocessor, raw_violations, validate_raw
from bastion.data.tabular.schema import OTHER, Feature, FeatureKind, LinearRelation, TabularSchema
from bastion.data.tabular.table import BadRows, OnBadRows, TabularTable, UnknownAttack

__all__ = [
    "OTHER",
    "BadRows",
    "Feature",
    "FeatureKind",
    "LinearRelation",
    "OnBadRows",
    "TabularPreprocessor",
    "TabularSchema",
    "TabularTable",
    "UnknownAttack",
    "raw_violations",
    "validate_raw",
]
