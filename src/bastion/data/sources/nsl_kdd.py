"""``nsl-kdd:PATH``: NSL-KDD (Tavallaee et al. 2009), header-less CSV; schema, attack families and file layout.

Feature names and types follow the KDD Cup 1999 task description. PATH is a file (KDDTrain+,
KDDTrain+_20Percent, KDDTest+, KDDTest-21; stratified 70/10/20) or a folder (the training file, option
``train``, plus ``KDDTest+.txt`` as the official test split). Options: ``labels=binary|family``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.source import one_of, verbatim
from bastion.data.sources._fields import words
from bastion.data.tabular.loading import TabularSource, register_tabular
from bastion.data.tabular.rows import check_choice
from bastion.data.tabular.schema import Feature, FeatureKind, LinearRelation, TabularSchema
from bastion.data.tabular.table import OnBadRows, TabularTable, UnknownAttack
from bastion.errors import ConfigError

#: The training files a folder PATH may hold, tried in this order unless option ``train`` names one;
#: the test file beside them is the official test split.
TRAIN_FILES = ("KDDTrain+.txt", "KDDTrain+_20Percent.txt")
TEST_FILE = "KDDTest+.txt"

_NSL_KDD_FEATURES = words(
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root num_file_creations "
    "num_shells num_access_files num_outbound_cmds is_host_login is_guest_login count srv_count "
    "serror_rate srv_serror_rate rerror_rate srv_rerror_rate same_srv_rate diff_srv_rate "
    "srv_diff_host_rate dst_host_count dst_host_srv_count dst_host_same_srv_rate dst_host_diff_srv_rate "
    "dst_host_same_src_port_rate dst_host_srv_diff_host_rate dst_host_serror_rate "
    "dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate"
)

NSL_KDD_PROTOCOLS = ("icmp", "tcp", "udp")
NSL_KDD_FLAGS = ("OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH")
NSL_KDD_SERVICES = words(
    "aol auth bgp courier csnet_ns ctf daytime discard domain domain_u echo eco_i ecr_i efs exec finger "
    "ftp ftp_data gopher harvest hostnames http http_2784 http_443 http_8001 imap4 IRC iso_tsap klogin "
    "kshell ldap link login mtp name netbios_dgm netbios_ns netbios_ssn netstat nnsp nntp ntp_u other "
    "pm_dump pop_2 pop_3 printer private red_i remote_job rje shell smtp sql_net ssh sunrpc supdup "
    "systat telnet tftp_u tim_i time urh_i urp_i uucp uucp_path vmnet whois X11 Z39_50"
)
"""The 70 services of NSL-KDD's KDDTrain+ and KDDTest+ (aol, harvest, http_2784 occur in KDDTrain+ only)."""


def _families(**names: str) -> dict[str, str]:
    return {name: family for family, text in names.items() for name in text.split()}


NSL_KDD_FAMILIES: Mapping[str, str] = {
    "normal": "normal",
    **_families(
        DoS="back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm",
        Probe="ipsweep nmap portsweep satan mscan saint",
        R2L="ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named sendmail "
        "snmpgetattack snmpguess xlock xsnoop worm",
        U2R="buffer_overflow loadmodule perl rootkit httptunnel ps sqlattack xterm",
    ),
}
"""Attack name -> family for every name in KDDTrain+ and KDDTest+ (DARPA 1998/1999 categories).

httptunnel is filed under U2R, as in most NSL-KDD work (it gives the commonly quoted 200 U2R rows of
KDDTest+); some sources list it under R2L.
"""

_NSL_KDD_LOG = frozenset(words("duration src_bytes dst_bytes hot num_compromised num_root num_file_creations"))
_NSL_KDD_BINARY = frozenset(words("land logged_in root_shell is_host_login is_guest_login"))
_NSL_KDD_IMMUTABLE = frozenset({"protocol_type", "service", "flag"})


def _nsl_kdd_feature(name: str) -> Feature:
    if name in _NSL_KDD_IMMUTABLE:
        categories = {"protocol_type": NSL_KDD_PROTOCOLS, "service": NSL_KDD_SERVICES, "flag": NSL_KDD_FLAGS}
        return Feature(name=name, kind=FeatureKind.CATEGORICAL, values=categories[name], mutable=False)
    if name in _NSL_KDD_BINARY:
        return Feature(name=name, kind=FeatureKind.BINARY)
    if name.endswith("_rate"):
        return Feature(name=name, kind=FeatureKind.CONTINUOUS, bounds=(0.0, 1.0))
    upper = {"count": 511.0, "srv_count": 511.0, "dst_host_count": 255.0, "dst_host_srv_count": 255.0}
    return Feature(
        name=name,
        kind=FeatureKind.INTEGER,
        bounds=(0.0, upper.get(name, math.inf)),
        log_scale=name in _NSL_KDD_LOG,
    )


def _nsl_kdd_relations() -> tuple[LinearRelation, ...]:
    disjoint = [
        ("serror_rate", "rerror_rate"),
        ("srv_serror_rate", "srv_rerror_rate"),
        ("dst_host_serror_rate", "dst_host_rerror_rate"),
        ("dst_host_srv_serror_rate", "dst_host_srv_rerror_rate"),
    ]
    return (
        LinearRelation.less_equal("root_shell", "logged_in", name="root shell needs a login"),
        LinearRelation.less_equal("is_host_login", "logged_in", name="host login is a login"),
        *(LinearRelation(name=f"{a} + {b} <= 1", terms=((a, 1.0), (b, 1.0)), bound=1.01) for a, b in disjoint),
    )


def nsl_kdd_schema(
    labels: Literal["binary", "family"] = "binary", *, unknown_attack: UnknownAttack = "bad"
) -> TabularSchema:
    """NSL-KDD schema: 41 features, label column "attack" (the attack name), extra "difficulty".

    Categorical protocol_type / service / flag use fixed category lists (train and test agree) and are
    immutable: the protocol, the targeted service and the TCP connection status are what make the attack
    work, so an evasion that changes them is a different connection, not the same attack. su_attempted
    is an integer (NSL-KDD has the values 0, 1, 2), counts are non-negative integers, log-scaled when
    heavy-tailed, rates lie in [0, 1].

    Relations, checked on all 47,736 rows of KDDTrain+_20Percent and KDDTest+ (none violated):
    root_shell <= logged_in and is_host_login <= logged_in (a root shell and a host login happen inside a
    logged-in session), and for each of the four (S-error rate, REJ-error rate) pairs over the same
    connection window, sum <= 1.01 (the SYN-error and REJ states are disjoint; the files round rates to
    two decimals, whose worst case 1.01 occurs). Rejected because the data violates them:
    is_guest_login <= logged_in (98 rows, mostly guess_passwd), same_srv_rate + diff_srv_rate <= 1 (max
    1.5), su_attempted <= root_shell (7 rows).

    Args:
        labels: "binary" (normal, attack) or "family" (normal, DoS, Probe, R2L, U2R).
        unknown_attack: "bad" makes an attack name missing from NSL_KDD_FAMILIES a bad row; "attack" maps
            it to the attack class (binary labels only), never to normal.
    """
    check_choice("labels", labels, ("binary", "family"))
    check_choice("unknown_attack", unknown_attack, ("bad", "attack"))
    if labels == "family":
        if unknown_attack == "attack":
            raise ConfigError("unknown_attack='attack' needs labels='binary': an unknown name has no family")
        classes: tuple[str, ...] = ("normal", "DoS", "Probe", "R2L", "U2R")
        values = dict(NSL_KDD_FAMILIES)
    else:
        classes = ("normal", "attack")
        values = {name: "normal" if fam == "normal" else "attack" for name, fam in NSL_KDD_FAMILIES.items()}
    return TabularSchema(
        name=f"nsl-kdd-{labels}",
        features=tuple(_nsl_kdd_feature(n) for n in _NSL_KDD_FEATURES),
        label="attack",
        classes=classes,
        benign=0,
        label_values=tuple(values.items()),
        unknown_label="attack" if unknown_attack == "attack" else None,
        relations=_nsl_kdd_relations(),
        extras=("difficulty",),
        description="NSL-KDD (KDDTrain+, KDDTrain+_20Percent, KDDTest+, KDDTest-21): header-less CSV.",
    )


def read_nsl_kdd(
    path: str | Path,
    *,
    labels: Literal["binary", "family"] = "binary",
    unknown_attack: UnknownAttack = "bad",
    on_bad_rows: OnBadRows = "drop",
) -> TabularTable:
    """Read KDDTrain+.txt, KDDTrain+_20Percent.txt, KDDTest+.txt or KDDTest-21.txt (43 fields, no header).

    ``table.raw_labels`` holds the attack names (see attack_drift), ``table.extras["difficulty"]`` the
    difficulty level text.
    """
    schema = nsl_kdd_schema(labels, unknown_attack=unknown_attack)
    return read_csv_with_schema(path, schema, header=False, on_bad_rows=on_bad_rows)


@dataclass(frozen=True)
class AttackDrift:
    """Which attack names / families of a test set never occur in its training set."""

    train_names: tuple[str, ...]
    test_names: tuple[str, ...]
    unseen_names: tuple[str, ...]
    seen_families: tuple[str, ...]
    unseen_families: tuple[str, ...]
    n_unseen_rows: int


def attack_drift(
    train: TabularTable, test: TabularTable, families: Mapping[str, str] = NSL_KDD_FAMILIES
) -> AttackDrift:
    """Compare raw label names: on NSL-KDD, 18 of KDDTest+'s 38 names are absent from KDDTrain+_20Percent."""
    train_names = set(train.raw_labels.tolist())
    test_names = set(test.raw_labels.tolist())
    unseen = sorted(test_names - train_names)
    seen_fams = sorted({families.get(n, "unknown") for n in train_names})
    test_fams = {families.get(n, "unknown") for n in test_names}
    return AttackDrift(
        train_names=tuple(sorted(train_names)),
        test_names=tuple(sorted(test_names)),
        unseen_names=tuple(unseen),
        seen_families=tuple(seen_fams),
        unseen_families=tuple(sorted(test_fams - set(seen_fams))),
        n_unseen_rows=int(np.isin(test.raw_labels, unseen).sum()),
    )


NSL_KDD = register_tabular(
    TabularSource(
        name="nsl-kdd",
        read=lambda path, options: read_nsl_kdd(
            path, labels=options.get("labels", "binary"), on_bad_rows=options["on_bad_rows"]
        ),
        options={"labels": one_of("binary", "family"), "train": verbatim},
        train_files=TRAIN_FILES,
        test_file=TEST_FILE,
        header=False,
    )
)
