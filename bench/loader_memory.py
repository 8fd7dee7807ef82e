"""Peak memory of bastion's loaders on valid and hostile inputs, as a multiple of the input's size.

Each case runs in a fresh subprocess: it imports bastion, records its resident set (the baseline), loads
one file (or parses one request body), and reports the peak resident set above the baseline (``VmHWM``
after resetting it through ``/proc/self/clear_refs``; Linux). The extra peak is compared with the bound
docs/security.md states for that loader: a multiple of the input's size plus a fixed allowance. Hostile
cases are the issue-17 memory bombs: a gzip IDX whose header declares gigabytes, npz labels
{0, 1e6, 2e6}, an .npy body whose header declares a huge shape, a model.json whose options ask for a
10-million-unit layer. A hostile case passes when it is refused within its bound.

This is a benchmark, not a test: the numbers depend on the allocator and the machine.

Usage: python bench/loader_memory.py [--out bench/results/loader_memory.json]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: loader -> (stated bound on extra peak memory / input bytes, plus a fixed allowance in MiB)
BOUNDS: dict[str, tuple[float, float]] = {
    "idx (plain)": (3.0, 16.0),  # the bytes, the parsed array, its native-order copy
    "idx (gzip)": (3 * 1032 + 1, 16.0),  # deflate expands at most ~1032x; then as plain
    "npz": (4.0, 16.0),
    "npy request body": (3.0, 16.0),
    "model.json + weights": (4.0, 16.0),
    # pandas parses the text, then the preprocessing one-hot encodes and scales into float32 splits
    "tabular csv": (30.0, 32.0),
    # every decoded image is kept as float32 (4 bytes per pixel value, after resizing to the spec's size)
    "image folder": (12.0, 32.0),
}
SHARED = REPO.parent / "shared" / "data"

CHILD = r"""
import json, sys
def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)
import numpy, torch, pandas, sklearn.preprocessing, PIL.Image  # noqa: F401  baseline includes the libraries
import bastion.data  # noqa: F401
from bastion.errors import BastionError
kind, path = sys.argv[1], sys.argv[2]
if kind.startswith("npy"):
    from bastion.data import load_dataset
    from bastion.service.inputs import parse_npy
    spec = load_dataset("digits").spec
from bastion.data.formats.idx import read_idx
from bastion.data.formats.folders import load_npz
from bastion.models.checkpoint import load_model
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak resident set (VmHWM) to the current one
base = status_mb("VmRSS")
outcome = "loaded"
try:
    if kind == "tabular csv":
        from bastion.data import load_tabular
        load_tabular(path)
    elif kind == "image folder":
        from bastion.data import load_dataset
        load_dataset(path)
    elif kind.startswith("idx"):
        read_idx(path)
    elif kind == "npz":
        load_npz(path)
    elif kind.startswith("npy"):
        parse_npy(open(path, "rb").read(), spec, max_inputs=1 << 20)
    else:
        load_model(path)
except BastionError as exc:
    outcome = "refused: " + str(exc)[:120]
except Exception as exc:
    if type(exc).__name__ != "RequestError":  # the service's 4xx
        raise
    outcome = f"refused ({exc.status}): " + str(exc)[:120]
print(json.dumps({"extra_mb": status_mb("VmHWM") - base, "outcome": outcome}))
"""


def _idx(shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def make_cases(root: Path) -> list[tuple[str, str, Path]]:
    import numpy as np
    import torch

    from bastion.data import load_dataset
    from bastion.models import checkpoint
    from bastion.models.registry import Architecture, build_model, normalization_stats

    rng = np.random.default_rng(0)
    cases: list[tuple[str, str, Path]] = []
    images = rng.integers(0, 256, (20000, 28, 28), dtype=np.uint8).tobytes()
    (root / "images-idx3-ubyte").write_bytes(_idx((20000, 28, 28), images))
    cases.append(("idx (plain)", "valid: 20,000 random 28x28 images", root / "images-idx3-ubyte"))
    (root / "images-idx3-ubyte.gz").write_bytes(_gzip(_idx((20000, 28, 28), images)))
    cases.append(("idx (gzip)", "valid: the same, gzipped", root / "images-idx3-ubyte.gz"))
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = bomb.compress(_idx((5_000_000, 28, 28), b""))
    for _ in range(2000):
        blob += bomb.compress(bytes(1 << 20))
    (root / "bomb-idx3-ubyte.gz").write_bytes(blob + bomb.flush())
    cases.append(("idx (gzip)", "hostile: 2 MB gzip declaring 3.9 GB", root / "bomb-idx3-ubyte.gz"))
    np.savez(root / "ok.npz", x=rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, 5000))
    cases.append(("npz", "valid: 5,000 32x32 RGB images", root / "ok.npz"))
    np.savez(root / "labels.npz", x=np.zeros((3, 8, 8), dtype=np.uint8), y=np.array([0, 1_000_000, 2_000_000]))
    cases.append(("npz", "hostile: labels {0, 1e6, 2e6}", root / "labels.npz"))
    body = root / "ok.npy"
    np.save(body, rng.random((4096, 1, 8, 8), dtype=np.float32))
    cases.append(("npy request body", "valid: 4,096 digits inputs", body))
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12, 1, 8, 8)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    (root / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(1000))
    cases.append(("npy request body", "hostile: header declares (1e12, 1, 8, 8), 1,000 data bytes", root / "huge.npy"))
    data = load_dataset("digits")
    mean, std = normalization_stats(data.train.x)
    arch = Architecture(name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=mean, std=std)
    model = build_model(arch, seed=0)
    checkpoint.save_model(model, arch, data.spec, root / "model")
    cases.append(("model.json + weights", "valid: the default MLP", root / "model"))
    checkpoint.save_model(model, arch, data.spec, root / "bomb-model")
    description = json.loads((root / "bomb-model" / "model.json").read_text())
    description["architecture"]["options"] = {"hidden": [10_000_000]}
    (root / "bomb-model" / "model.json").write_text(json.dumps(description))
    cases.append(("model.json + weights", "hostile: options hidden [10000000]", root / "bomb-model"))
    for name, spec, file in [
        ("nsl-kdd", "nsl-kdd:{}", SHARED / "nsl-kdd" / "KDDTrain+_20Percent.txt"),
        ("ClaMP malware", "malware:{}", SHARED / "malware" / "ClaMP_Integrated-5184.csv"),
        ("UCI phishing", "phishing:{}", SHARED / "phishing" / "phishing-websites.csv"),
    ]:
        if file.is_file():  # real data: measured when ../shared/data is present
            cases.append(("tabular csv", f"valid: {name} ({file.name})", Path(spec.format(file))))
    gtsrb_class = SHARED / "gtsrb" / "GTSRB" / "Final_Training" / "Images" / "00001"
    if gtsrb_class.is_dir():
        folder = root / "imagefolder"
        (folder / "a").mkdir(parents=True)
        (folder / "b").mkdir()
        for i, ppm in enumerate(sorted(gtsrb_class.glob("*.ppm"))[:600]):
            (folder / ("a" if i % 2 else "b") / ppm.name).write_bytes(ppm.read_bytes())
        cases.append(("image folder", "valid: 600 GTSRB PPM files as an imagefolder", Path(f"imagefolder:{folder}")))
    del torch
    return cases


def input_bytes(path: Path) -> int:
    if ":" in str(path):  # a data SPEC: the file or folder after the loader's name
        path = Path(str(path).split(":", 1)[1])
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind, what, path in make_cases(Path(tmp)):
            env_path = str(REPO / "src")
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, kind, str(path)],
                capture_output=True,
                text=True,
                env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                timeout=600,
            )
            if proc.returncode != 0:  # a loader failed with something other than a clear refusal
                print(f"{kind} / {what}: {proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            size = input_bytes(path)
            ratio, allowance = BOUNDS[kind]
            bound_mb = ratio * size / 2**20 + allowance
            within = result["extra_mb"] <= bound_mb
            ok &= within
            rows.append(
                {
                    "loader": kind,
                    "case": what,
                    "input_mb": round(size / 2**20, 3),
                    "extra_peak_mb": round(result["extra_mb"], 1),
                    "bound_mb": round(bound_mb, 1),
                    "within_bound": within,
                    "outcome": result["outcome"],
                }
            )
            r = rows[-1]
            print(
                f"{kind:22s} {what:58s} input {r['input_mb']:9.3f} MB  peak +{r['extra_peak_mb']:7.1f} MB  "
                f"bound {r['bound_mb']:8.1f} MB  {'ok' if within else 'OVER'}  {r['outcome'][:60]}",
                flush=True,
            )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"bounds": BOUNDS, "cases": rows}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
