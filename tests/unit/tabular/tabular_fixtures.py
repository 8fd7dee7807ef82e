"""Text of small files in each published layout, for the tabular tests to write into tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bastion.data.sources.cic_ids2017 import cic_ids2017_schema
from bastion.data.sources.nsl_kdd import nsl_kdd_schema
from bastion.data.sources.phishing import phishing_schema
from bastion.data.sources.unsw_nb15 import unsw_nb15_schema
from bastion.data.tabular import FeatureKind


def kdd_fields(**overrides: str) -> list[str]:
    """One valid NSL-KDD record (41 features, attack name, difficulty) as text fields."""
    fields = {f.name: "0.00" if f.kind is FeatureKind.CONTINUOUS else "0" for f in nsl_kdd_schema().features}
    fields.update(protocol_type="tcp", service="http", flag="SF")
    fields.update(src_bytes="215", dst_bytes="45076", logged_in="1", count="1", srv_count="1")
    fields.update(attack="normal", difficulty="21")
    for key, value in overrides.items():
        if key not in fields:
            raise KeyError(key)
        fields[key] = value
    return list(fields.values())


def kdd_line(**overrides: str) -> str:
    return ",".join(kdd_fields(**overrides))


KDD_SERVICES = ("http", "smtp", "ftp", "private")


def kdd_rows(n: int, seed: int) -> list[str]:
    """n valid NSL-KDD lines, every other one an attack; attacks have short connections with many SYN
    errors (learnable by a tiny MLP in a few epochs)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        attack = i % 2 == 1
        out.append(
            kdd_line(
                service=KDD_SERVICES[int(rng.integers(len(KDD_SERVICES)))],
                src_bytes=str(int(rng.integers(0, 300 if attack else 5000))),
                count=str(int(rng.integers(100, 300) if attack else rng.integers(1, 20))),
                serror_rate=f"{rng.uniform(0.6, 1.0) if attack else rng.uniform(0, 0.2):.2f}",
                attack="neptune" if attack else "normal",
                difficulty=str(int(rng.integers(10, 22))),
            )
        )
    return out


def train_mlp(data: str, out: Path, *, hidden: int = 8, **options: Any) -> Path:
    """Train a small MLP on ``data`` into the run folder ``out`` (standard, 1 epoch, no validation, CPU,
    unless ``options`` say otherwise); the folder."""
    from bastion.app.config import TrainConfig
    from bastion.app.train import run_train

    base = {"data": data, "model": "mlp", "model_options": {"hidden": [hidden]}, "method": "standard"}
    cfg = TrainConfig.parse({**base, "epochs": 1, "val_examples": 0, "device": "cpu", **options})
    run_train(cfg, out)
    return out


def phishing_fields(result: str = "-1", **overrides: str) -> list[str]:
    fields = {f.name: "1" if f.name != "Redirect" else "0" for f in phishing_schema().features}
    fields.update(overrides)
    return [*fields.values(), result]


def phishing_arff(rows: list[list[str]], *, header_extra: str = "") -> str:
    """The original ARFF layout: nominal attributes with their declared value sets."""
    lines = ["% UCI phishing websites (test fixture)", "@relation phishing", ""]
    for feature in phishing_schema().features:
        values = ",".join(str(int(v)) for v in feature.values or ())
        lines.append(f"@attribute {feature.name} {{ {values} }}")
    lines += ["@attribute Result { -1,1 }", header_extra, "@data", ""]
    lines += [",".join(r) for r in rows]
    return "\n".join(lines) + "\n"


CLAMP_HEADER = (
    "e_cblp,e_cp,e_cparhdr,e_maxalloc,e_sp,e_lfanew,NumberOfSections,CreationYear,"
    + ",".join(f"FH_char{k}" for k in range(15))
    + ",MajorLinkerVersion,MinorLinkerVersion,SizeOfCode,SizeOfInitializedData,SizeOfUninitializedData,"
    "AddressOfEntryPoint,BaseOfCode,BaseOfData,ImageBase,SectionAlignment,FileAlignment,"
    "MajorOperatingSystemVersion,MinorOperatingSystemVersion,MajorImageVersion,MinorImageVersion,"
    "MajorSubsystemVersion,MinorSubsystemVersion,SizeOfImage,SizeOfHeaders,CheckSum,Subsystem,"
    + ",".join(f"OH_DLLchar{k}" for k in range(11))
    + ",SizeOfStackReserve,SizeOfStackCommit,SizeOfHeapReserve,SizeOfHeapCommit,LoaderFlags,sus_sections,"
    "non_sus_sections,packer,packer_type,E_text,E_data,filesize,E_file,fileinfo,class"
)


def clamp_line(*, packer_type: str = "NoPacker", label: str = "0", e_text: str = "6.6") -> str:
    """A ClaMP_Integrated row shaped like the published file's first record."""
    head = "144,3,4,65535,184,256,4,1," + ",".join("1" if k in (1, 7) else "0" for k in range(15))
    mid = ",8,0,1100288,225792,0,1069880,4096,1110016,0,1,1,4,0,0,0,5,1,1,1,1194954,3,"
    dll = ",".join("0" for _ in range(11))
    packer = "0" if packer_type == "NoPacker" else "1"
    tail = f",1048576,4096,1048576,4096,1,1,3,{packer},{packer_type},{e_text},5.44,1181520,6.62,1,{label}"
    return head + mid + dll + tail


def unsw_header() -> str:
    return ",".join(["id", *unsw_nb15_schema().names, "attack_cat", "label"])


def unsw_line(row_id: int = 1, *, attack_cat: str = "Normal", label: str = "0", proto: str = "tcp") -> str:
    values = []
    for feature in unsw_nb15_schema().features:
        if feature.name == "proto":
            values.append(proto)
        elif feature.name == "service":
            values.append("-")
        elif feature.name == "state":
            values.append("FIN")
        elif feature.kind is FeatureKind.CONTINUOUS:
            values.append("0.121478")
        else:
            values.append("1" if feature.name != "is_sm_ips_ports" else "0")
    return ",".join([str(row_id), *values, attack_cat, label])


def cic_header() -> str:
    """The published header: names prefixed by a space, 'Fwd Header Length' twice, ' Label' last."""
    names = [n.removesuffix(".1") for n in cic_ids2017_schema().names]
    return ",".join(f" {n}" if i % 3 else n for i, n in enumerate([*names, "Label"]))


def cic_line(label: str = "BENIGN", **overrides: str) -> str:
    values = {n: "0" for n in cic_ids2017_schema().names}
    values.update({"Destination Port": "80", "Flow Duration": "3", "Total Fwd Packets": "2"})
    values.update({"Flow Bytes/s": "4000000.0", "Flow Packets/s": "666666.6667"})
    values.update(overrides)
    return ",".join([*values.values(), label])
