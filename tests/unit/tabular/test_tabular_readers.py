"""Readers against small files in each published layout, valid and malformed, written per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tabular_fixtures import (
    CLAMP_HEADER,
    cic_header,
    cic_line,
    clamp_line,
    kdd_fields,
    kdd_line,
    phishing_arff,
    phishing_fields,
    unsw_header,
    unsw_line,
)

from bastion.data.formats.arff import read_arff
from bastion.data.sources.cic_ids2017 import read_cic_ids2017
from bastion.data.sources.malware import read_clamp
from bastion.data.sources.nsl_kdd import NSL_KDD_FAMILIES, nsl_kdd_schema, read_nsl_kdd
from bastion.data.sources.phishing import read_phishing, read_phishing_arff, read_phishing_csv
from bastion.data.sources.unsw_nb15 import read_unsw_nb15
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

Write = Callable[..., Path]


# ---- NSL-KDD


def test_nsl_kdd_valid_rows(write: Write) -> None:
    path = write(
        "KDDTest+.txt",
        [kdd_line(), kdd_line(attack="neptune", flag="S0", difficulty="18"), kdd_line(attack="mscan")],
    )
    table = read_nsl_kdd(path)
    assert len(table) == 3 and table.bad_rows.count == 0
    assert table.labels.tolist() == [0, 1, 1]
    assert table.line_numbers.tolist() == [1, 2, 3]
    assert table.raw_labels.tolist() == ["normal", "neptune", "mscan"]
    assert table.extras["difficulty"].tolist() == ["21", "18", "21"]
    assert list(table.features.columns) == list(nsl_kdd_schema().names)
    assert table.features["src_bytes"].dtype == np.int64
    assert table.features["serror_rate"].dtype == np.float64
    assert table.features["service"].tolist() == ["http"] * 3


def test_nsl_kdd_family_labels_cover_test_only_attacks(write: Write) -> None:
    names = [
        "apache2",
        "mailbomb",
        "processtable",
        "udpstorm",
        "saint",
        "mscan",
        "snmpgetattack",
        "snmpguess",
    ]
    names += [
        "httptunnel",
        "named",
        "sendmail",
        "xlock",
        "xsnoop",
        "worm",
        "ps",
        "sqlattack",
        "xterm",
        "normal",
    ]
    path = write("KDDTest+.txt", [kdd_line(attack=n) for n in names])
    table = read_nsl_kdd(path, labels="family")
    assert table.bad_rows.count == 0
    classes = table.schema.classes
    assert [classes[i] for i in table.labels] == [NSL_KDD_FAMILIES[n] for n in names]
    assert dict(zip(names, [classes[i] for i in table.labels], strict=True))["saint"] == "Probe"


def test_nsl_kdd_wrong_field_count_names_the_line(write: Write) -> None:
    short = ",".join(kdd_fields()[:-1])
    path = write("KDDTrain+.txt", [kdd_line(), kdd_line(), short, kdd_line()])
    table = read_nsl_kdd(path)
    assert len(table) == 3
    assert table.bad_rows.rows == ((3, "expected 43 fields, found 42"),)
    assert table.line_numbers.tolist() == [1, 2, 4]
    with pytest.raises(DataFormatError, match=r"KDDTrain\+\.txt:3: expected 43 fields, found 42"):
        read_nsl_kdd(path, on_bad_rows="raise")


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"src_bytes": "abc"}, "column 'src_bytes': 'abc' is not a number"),
        ({"src_bytes": "12.5"}, "column 'src_bytes': '12.5' is not an integer"),
        ({"src_bytes": ""}, "column 'src_bytes': missing value ''"),
        ({"duration": "-1"}, "column 'duration': -1 is outside bounds [0, inf]"),
        ({"serror_rate": "1.50"}, "column 'serror_rate': 1.50 is outside bounds [0, 1]"),
        ({"serror_rate": "NaN"}, "column 'serror_rate': non-finite value 'NaN'"),
        ({"dst_bytes": "inf"}, "column 'dst_bytes': non-finite value 'inf'"),
        ({"land": "2"}, "column 'land': '2' is not 0 or 1"),
        ({"service": "gopherx"}, "column 'service': unknown category 'gopherx'"),
        ({"protocol_type": "TCP"}, "column 'protocol_type': unknown category 'TCP'"),
        ({"attack": "zeroday"}, "column 'attack': unknown label 'zeroday'"),
        ({"attack": ""}, "column 'attack': empty label"),
    ],
)
def test_nsl_kdd_bad_values_are_reported_by_line(write: Write, override: dict[str, str], reason: str) -> None:
    path = write("KDDTest+.txt", [kdd_line(), kdd_line(**override)])
    table = read_nsl_kdd(path)
    assert len(table) == 1
    assert table.bad_rows.rows == ((2, reason),)
    with pytest.raises(DataFormatError, match=":2: "):
        read_nsl_kdd(path, on_bad_rows="raise")


def test_nsl_kdd_several_problems_in_one_row_are_all_named(write: Write) -> None:
    path = write("KDDTest+.txt", [kdd_line(src_bytes="x", land="7")])
    ((line, reason),) = read_nsl_kdd(path).bad_rows.rows
    assert line == 1 and "'src_bytes'" in reason and "'land'" in reason


def test_nsl_kdd_unknown_attack_is_never_normal(write: Write) -> None:
    path = write("KDDTest+.txt", [kdd_line(attack="zeroday"), kdd_line()])
    assert read_nsl_kdd(path).bad_rows.count == 1
    lenient = read_nsl_kdd(path, unknown_attack="attack")
    assert lenient.bad_rows.count == 0
    assert lenient.labels.tolist() == [1, 0]
    assert lenient.raw_labels[0] == "zeroday"
    with pytest.raises(ConfigError, match="labels='binary'"):
        read_nsl_kdd(path, labels="family", unknown_attack="attack")


def test_blank_lines_are_skipped_and_counted(write: Write) -> None:
    path = write("KDDTest+.txt", [kdd_line(), "", "   ", kdd_line()])
    table = read_nsl_kdd(path)
    assert len(table) == 2 and table.bad_rows.count == 0
    assert table.bad_rows.skipped == ((2, "blank line"), (3, "blank line"))
    assert table.line_numbers.tolist() == [1, 4]


def test_undecodable_line_is_a_bad_row(write: Write, tmp_path: Path) -> None:
    path = tmp_path / "KDDTest+.txt"
    path.write_bytes((kdd_line() + "\n").encode() + b"0,tcp,\xff\xfe\n" + (kdd_line() + "\n").encode())
    table = read_nsl_kdd(path)
    assert len(table) == 2
    ((line, reason),) = table.bad_rows.rows
    assert line == 2 and "not valid utf-8" in reason


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope.txt"):
        read_nsl_kdd(tmp_path / "nope.txt")
    (tmp_path / "x.txt").write_text(kdd_line())
    with pytest.raises(ConfigError, match="on_bad_rows"):
        read_nsl_kdd(tmp_path / "x.txt", on_bad_rows="ignore")  # type: ignore[arg-type]


# ---- UCI phishing


def test_phishing_csv(write: Write) -> None:
    rows = [phishing_fields("-1"), phishing_fields("1", URL_Length="0"), phishing_fields("1", Redirect="1")]
    path = write("phishing.csv", [",".join(r) for r in rows])
    table = read_phishing_csv(path)
    assert table.bad_rows.count == 0
    assert table.schema.classes[table.schema.benign] == "legitimate"
    assert table.labels.tolist() == [1, 0, 0]
    assert table.features["URL_Length"].tolist() == [1, 0, 1]
    assert table.features.dtypes.unique().tolist() == [np.dtype(np.int64)]


@pytest.mark.parametrize(
    ("override", "result", "reason"),
    [
        ({"having_IP_Address": "0"}, "1", "column 'having_IP_Address': '0' is not one of {-1, 1}"),
        ({"URL_Length": "2"}, "1", "column 'URL_Length': '2' is not one of {-1, 0, 1}"),
        ({}, "0", "column 'Result': unknown label '0'"),
    ],
)
def test_phishing_csv_bad_values(write: Write, override: dict[str, str], result: str, reason: str) -> None:
    path = write("phishing.csv", [",".join(phishing_fields(result, **override))])
    assert read_phishing_csv(path).bad_rows.rows == ((1, reason),)


def test_phishing_arff_with_comments_blank_lines_and_missing_values(write: Write) -> None:
    rows = [phishing_fields("-1"), phishing_fields("1", SFH="0")]
    text = phishing_arff(rows).replace("@data\n", "@DATA\n% a comment in the data\n\n")
    text += ",".join(phishing_fields("1", port="?")) + "\n"
    text += "{0 1, 3 -1}\n"
    path = write("Training Dataset.arff", text)
    table = read_phishing(path)
    assert table.labels.tolist() == [1, 0]
    assert table.features["SFH"].tolist() == [1, 0]
    lines = text.splitlines()
    port_line = lines.index(",".join(phishing_fields("1", port="?"))) + 1
    assert table.bad_rows.rows == (
        (port_line, "column 'port': missing value '?'"),
        (port_line + 1, "sparse ARFF rows are not supported"),
    )
    assert [reason for _, reason in table.bad_rows.skipped] == ["comment", "blank line", "blank line"]


def test_phishing_arff_value_not_declared_in_attribute(write: Write) -> None:
    text = phishing_arff([phishing_fields("1", Redirect="-1")])
    path = write("p.arff", text)
    redirect_line = text.splitlines().index("@attribute Redirect { 0,1 }") + 1
    ((_, reason),) = read_phishing_arff(path).bad_rows.rows
    assert f"column 'Redirect': value '-1' is not declared in its @attribute (line {redirect_line})" in reason


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("@attribute URL_Length {-1,0,1", "nominal list must end with '}'"),
        ("@attribute port", "attribute 'port' has no type"),
        ("@attribute 'odd name {-1,1}", "unterminated ' quote"),
        ("@attribute Iframe relational", "unsupported type"),
        ("this is not arff", "expected @relation, @attribute or @data"),
    ],
)
def test_arff_malformed_header_line_names_its_line(write: Write, bad_line: str, message: str) -> None:
    text = "% header\n@relation 'phishing websites'\n\n@attribute a {-1,1}\n" + bad_line + "\n@data\n1\n"
    path = write("bad.arff", text)
    with pytest.raises(DataFormatError, match=rf"bad\.arff:5: .*{message}"):
        read_arff(path)


def test_arff_generic_parser_quoted_names_and_numeric(write: Write) -> None:
    text = (
        "@RELATION \"my data\"\n@ATTRIBUTE 'first attr' NUMERIC\n@attribute kind {'a b', c}\n@data\n"
        "1.5,'a b'\n2,c\n3,d\n4\n"
    )
    data = read_arff(write("d.arff", text))
    assert data.relation == "my data"
    assert [a.name for a in data.attributes] == ["first attr", "kind"]
    assert data.attributes[1].values == ("a b", "c")
    assert data.rows == ((5, ("1.5", "a b")), (6, ("2", "c")))
    assert data.bad_rows.rows == (
        (7, "column 'kind': value 'd' is not declared in its @attribute"),
        (8, "expected 2 fields, found 1"),
    )


def test_arff_without_data_section(write: Write) -> None:
    with pytest.raises(DataFormatError, match="no @data section"):
        read_arff(write("d.arff", "@relation r\n@attribute a numeric\n"))
    with pytest.raises(DataFormatError, match=r"d2\.arff:1: @attribute before @relation"):
        read_arff(write("d2.arff", "@attribute a numeric\n@data\n"))


def test_arff_attribute_names_must_match_the_schema(write: Write) -> None:
    text = phishing_arff([phishing_fields("1")]).replace("@attribute port ", "@attribute Port ")
    port_line = text.splitlines().index("@attribute Port { -1,1 }") + 1
    with pytest.raises(DataFormatError, match=rf"missing column\(s\) 'port'|p\.arff:{port_line}: column 'Port'"):
        read_phishing_arff(write("p.arff", text))


# ---- ClaMP


def test_clamp_blank_rows_are_skipped_not_bad(write: Write) -> None:
    blank = "," * 69
    lines = [CLAMP_HEADER, clamp_line(), clamp_line(packer_type="UPXv20MarkusLaszloReiser", label="1"), blank]
    lines += [clamp_line(label="1"), blank]
    path = write("ClaMP_Integrated-5184.csv", lines, newline="\r\n")
    table = read_clamp(path)
    assert len(table) == 3 and table.bad_rows.count == 0
    assert table.bad_rows.skipped == ((4, "blank row (separators only)"), (6, "blank row (separators only)"))
    assert table.labels.tolist() == [0, 1, 1]
    assert table.features["packer_type"].tolist()[1] == "UPXv20MarkusLaszloReiser"
    assert table.features["E_text"].dtype == np.float64 and table.features["CheckSum"].dtype == np.int64


def test_clamp_bad_values(write: Write) -> None:
    path = write("c.csv", [CLAMP_HEADER, clamp_line(e_text="8.5"), clamp_line(label="2"), clamp_line(packer_type="")])
    rows = dict(read_clamp(path).bad_rows.rows)
    assert rows == {
        2: "column 'E_text': 8.5 is outside bounds [0, 8]",
        3: "column 'class': unknown label '2'",
        4: "column 'packer_type': missing value ''",
    }


def test_header_with_an_unknown_column_is_refused(write: Write) -> None:
    path = write("c.csv", [CLAMP_HEADER + ",extra", clamp_line() + ",1"])
    with pytest.raises(DataFormatError, match=r"c\.csv:1: column 'extra' is not in schema 'clamp-integrated'"):
        read_clamp(path)
    path = write("d.csv", [CLAMP_HEADER.replace("e_sp,", ""), clamp_line()])
    with pytest.raises(DataFormatError, match=r"d\.csv:1: missing column\(s\) 'e_sp'"):
        read_clamp(path)


# ---- UNSW-NB15


def test_unsw_nb15_binary_and_family(write: Write) -> None:
    lines = [unsw_header(), unsw_line(1), unsw_line(2, attack_cat="Exploits", label="1", proto="udp")]
    lines += [unsw_line(3, attack_cat=" Backdoors", label="1")]
    path = write("UNSW_NB15_training-set.csv", lines)
    table = read_unsw_nb15(path)
    assert table.bad_rows.count == 0 and table.labels.tolist() == [0, 1, 1]
    assert table.extras["id"].tolist() == ["1", "2", "3"]
    assert table.features["proto"].tolist() == ["tcp", "udp", "tcp"]
    family = read_unsw_nb15(path, labels="family")
    assert [family.schema.classes[i] for i in family.labels] == ["normal", "Exploits", "Backdoor"]


def test_unsw_nb15_label_and_attack_cat_must_agree(write: Write) -> None:
    path = write("t.csv", [unsw_header(), unsw_line(1), unsw_line(2, attack_cat="Normal", label="1")])
    table = read_unsw_nb15(path)
    assert len(table) == 1
    assert table.bad_rows.rows == ((3, "columns 'label' and 'attack_cat' disagree: label 1 with attack_cat 'Normal'"),)


def test_unsw_nb15_unknown_attack_category(write: Write) -> None:
    path = write("t.csv", [unsw_header(), unsw_line(1, attack_cat="Ransom", label="1")])
    assert read_unsw_nb15(path, labels="family").bad_rows.rows == ((2, "column 'attack_cat': unknown label 'Ransom'"),)


# ---- CIC-IDS2017


def test_cic_ids2017_layout(write: Write) -> None:
    web = "Web Attack \x96 Brute Force"
    lines = [cic_header(), cic_line(), cic_line("DDoS"), cic_header(), cic_line(web), ""]
    path = write("Thursday-WorkingHours-Morning-WebAttacks.pcap_ISCX.csv", lines, encoding="latin-1")
    table = read_cic_ids2017(path)
    assert table.bad_rows.count == 0
    assert table.bad_rows.skipped == ((4, "repeated header row"), (6, "blank line"))
    assert table.labels.tolist() == [0, 1, 1]
    assert table.raw_labels.tolist() == ["BENIGN", "DDoS", "Web Attack - Brute Force"]
    assert "Fwd Header Length.1" in table.features.columns
    assert table.features["Destination Port"].tolist() == [80, 80, 80]


def test_cic_ids2017_infinity_dropped_by_default(write: Write) -> None:
    lines = [cic_header(), cic_line(), cic_line(**{"Flow Bytes/s": "Infinity", "Flow Packets/s": "Infinity"})]
    lines += [cic_line(**{"Flow Bytes/s": "NaN"}), cic_line("PortScan", **{"Flow Bytes/s": "12.5"})]
    path = write("Friday.csv", lines)
    table = read_cic_ids2017(path)
    assert len(table) == 2
    assert table.bad_rows.rows == (
        (
            3,
            "column 'Flow Bytes/s': non-finite value 'Infinity'; column 'Flow Packets/s': non-finite value 'Infinity'",
        ),
        (4, "column 'Flow Bytes/s': non-finite value 'NaN'"),
    )


def test_cic_ids2017_infinity_clipped_to_training_max(write: Write) -> None:
    lines = [
        cic_header(),
        cic_line(),
        cic_line(**{"Flow Bytes/s": "Infinity"}),
        cic_line(**{"Flow Bytes/s": "12.5"}),
    ]
    lines += [cic_line(**{"Flow Bytes/s": "NaN"})]
    train = read_cic_ids2017(write("train.csv", lines), nonfinite="clip")
    assert len(train) == 3 and train.bad_rows.lines == (5,)
    assert train.features["Flow Bytes/s"].tolist() == [4000000.0, 4000000.0, 12.5]
    assert train.meta["clip_values"] == {"Flow Bytes/s": [12.5, 4000000.0]}
    test_lines = [
        cic_header(),
        cic_line(**{"Flow Bytes/s": "Infinity"}),
        cic_line(**{"Flow Bytes/s": "-Infinity"}),
    ]
    test = read_cic_ids2017(write("test.csv", test_lines), nonfinite="clip", clip_values=train.meta["clip_values"])
    assert test.features["Flow Bytes/s"].tolist() == [4000000.0, 12.5]


def test_cic_ids2017_unknown_label(write: Write) -> None:
    path = write("d.csv", [cic_header(), cic_line("Zero Day")])
    assert read_cic_ids2017(path).bad_rows.rows == ((2, "column 'Label': unknown label 'Zero Day'"),)
    assert read_cic_ids2017(path, unknown_attack="attack").labels.tolist() == [1]


def test_select_keeps_provenance(write: Write) -> None:
    path = write("KDDTest+.txt", [kdd_line(), kdd_line(attack="smurf"), kdd_line(attack="nmap")])
    table = read_nsl_kdd(path)
    part = table.select(np.array([False, True, True]))
    assert part.line_numbers.tolist() == [2, 3] and part.raw_labels.tolist() == ["smurf", "nmap"]
    assert part.features.index.tolist() == [0, 1] and part.extras["difficulty"].tolist() == ["21", "21"]
