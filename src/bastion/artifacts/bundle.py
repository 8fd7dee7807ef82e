"""A deployable model bundle: one folder with everything a service needs, checked before use.

Layout (``bastion export RUN --out BUNDLE``)::

    BUNDLE/manifest.json              what the bundle holds (see ``docs/deploy.md``)
    BUNDLE/model/                     weights.safetensors + model.json (bastion.models.checkpoint)
    BUNDLE/defense/                   defense.json + detector.safetensors (bastion.defenses.store), if any
    BUNDLE/model.onnx, defended.onnx  optional ONNX graphs (bastion.artifacts.onnx)
    BUNDLE/SHA256SUMS                 sha256 of every other file, in ``sha256sum -c`` format

Loading checks SHA256SUMS first (every file listed, none missing, none extra), then reads only JSON and
safetensors: nothing is unpickled. The checksums catch corruption and accidental edits; against a
deliberate tamperer who can rewrite SHA256SUMS too, compare the bundle digest (the sha256 of SHA256SUMS,
printed by ``bastion export``) with a value kept elsewhere: ``load_bundle(path, expected_digest=...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from bastion.artifacts.results import environment, read_results
from bastion.data.spec import DatasetSpec
from bastion.defenses.pipeline import Defense
from bastion.defenses.store import load_defense
from bastion.errors import CheckpointError
from bastion.io import atomic_write_json, atomic_write_text, make_temp_dir
from bastion.models import checkpoint

FORMAT = "bastion.bundle"  # the manifest format name (stable; not the module path)
VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
MODEL_DIR = "model"
DEFENSE_DIR = "defense"
DEFENSE_SUFFIX = "+defense"


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: the model (eval mode), its runtime defense (or None) and the manifest."""

    path: Path
    manifest: dict[str, Any]
    spec: DatasetSpec
    model: nn.Module
    defense: Defense | None
    digest: str

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _choose_model(run_dir: Path, name: str | None) -> tuple[str, Path]:
    """The named model, else the only defended one, else the only one."""
    models = checkpoint.model_dirs(run_dir)
    if name is not None:
        if name not in models:
            raise CheckpointError(f"{run_dir} has no model {name!r}; available: {', '.join(models)}")
        return name, models[name]
    defended = [n for n in models if (run_dir / "defenses" / n).is_dir()]
    if len(defended) == 1:
        return defended[0], models[defended[0]]
    if len(models) == 1:
        return next(iter(models.items()))
    choices = defended or list(models)
    raise CheckpointError(f"{run_dir} holds several models ({', '.join(choices)}); choose one with --model NAME")


def _headline(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The robustness figures a deployer needs, copied from a results.json model entry."""
    if entry is None:
        return None
    keep = ("headline", "clean_accuracy", "n_examples", "robust_accuracy", "evasion_rate", "defense")
    return {k: entry[k] for k in keep if k in entry}


def _robustness(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = read_results(path)
    models = results["models"]
    model, defended = _headline(models.get(name)), _headline(models.get(name + DEFENSE_SUFFIX))
    deployed = defended if defended is not None else model
    return {
        "source": "results.json",
        "created": results.get("created"),
        "threat": results.get("threat"),
        # What the deployed artifact is worth: its worst case, and whether that is AA-grade or an upper bound.
        "headline": deployed.get("headline") if deployed else None,
        "model": model,
        "defended": defended,
    }


def _provenance(run_dir: Path, description: dict[str, Any]) -> dict[str, Any]:
    run: dict[str, Any] = {}
    if (run_dir / "run.json").is_file():
        try:
            run = json.loads((run_dir / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{run_dir / 'run.json'} is not valid JSON: {exc}") from exc
    return {
        "run_dir": str(run_dir.resolve()),
        "command": run.get("command"),
        "data": run.get("data", description["dataset"].get("source")),
        "seed": run.get("seed", description.get("seed")),
        "split": run.get("split", description.get("split")),
        "config": run.get("config"),
        "trained_with": run.get("environment"),
        "training": description.get("training"),
        "exported_with": environment(),
    }


def feature_schema(spec: DatasetSpec) -> list[dict[str, Any]] | None:
    """Tabular models: the raw fields a client sends (learned categories filled in); None for images."""
    pre = getattr(spec.domain, "preprocessor", None)
    if pre is None:
        return None
    return [{"name": f.name, **f.to_dict()} for f in pre.schema_.features]


def build_manifest(
    run_dir: Path, name: str, spec: DatasetSpec, description: dict[str, Any], defense: Defense | None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": name,
            "architecture": description["architecture"],
            "weights_sha256": description["weights_sha256"],
        },
        "input_shape": list(spec.input_shape),
        "classes": list(spec.classes),
        "modality": spec.modality,
        "benign": spec.benign,
        "dataset": spec.to_dict(),
        "dataset_fingerprint": spec.fingerprint(),
        "feature_schema": feature_schema(spec),
        "defense": None if defense is None else defense.describe(),
        "provenance": _provenance(run_dir, description),
        "robustness": _robustness(run_dir, name),
        "onnx": None,
    }


def write_sums(directory: Path) -> str:
    """Write SHA256SUMS over every file under ``directory``; return the bundle digest (sha256 of SUMS)."""
    lines = [
        f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}"
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != SUMS
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(directory / SUMS, text)
    return hashlib.sha256(text.encode()).hexdigest()


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    onnx: bool = False,
    overwrite: bool = False,
) -> tuple[Path, str]:
    """Write a bundle for one model of a run (and its saved defense); return (path, digest).

    The bundle is assembled in a temporary folder next to ``out`` and renamed into place, so ``out`` is
    either absent or complete. The model and defense are loaded (checksums verified) before copying.

    Raises:
        CheckpointError: unknown or ambiguous model, unreadable run files, ``out`` exists (without
            ``overwrite``; with it, ``out`` must be a previous bundle, see :func:`check_replaceable`), or an
            ONNX graph that does not reproduce the PyTorch outputs.
    """
    run_dir, out = Path(run_dir), Path(out)
    name, model_dir = _choose_model(run_dir, model)
    check_replaceable(out, run_dir, overwrite=overwrite)
    net = checkpoint.load_model(model_dir)
    spec = checkpoint.load_spec(model_dir)
    description = checkpoint.read_description(model_dir)
    defense_dir = run_dir / "defenses" / name
    defense = load_defense(defense_dir, net) if defense_dir.is_dir() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, prefix=f".{out.name}.")
    try:
        shutil.copytree(model_dir, tmp / MODEL_DIR, ignore=_only(checkpoint.WEIGHTS, checkpoint.DESCRIPTION))
        if defense is not None:
            shutil.copytree(defense_dir, tmp / DEFENSE_DIR, ignore=_only("defense.json", "detector.safetensors"))
        manifest = build_manifest(run_dir, name, spec, description, defense)
        if onnx:
            from bastion.artifacts.onnx import export_bundle_graphs

            manifest["onnx"] = export_bundle_graphs(net, defense, spec, tmp)
        atomic_write_json(tmp / MANIFEST, manifest)
        digest = write_sums(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, digest


def is_bundle(path: Path) -> bool:
    """True when ``path`` is a folder holding a bastion bundle manifest (and its SHA256SUMS)."""
    if not path.is_dir() or path.is_symlink() or not (path / SUMS).is_file():
        return False
    try:
        read_manifest(path)
    except CheckpointError:
        return False
    return True


def check_replaceable(out: Path, source: Path, *, overwrite: bool) -> None:
    """Refuse to write a bundle where it would destroy something that is not a previous bundle.

    ``out`` may be absent; with ``overwrite`` it may also be a previous bundle (recognised by its manifest),
    as long as the source run is not inside it. A file, a run folder or any other folder is never replaced.

    Raises:
        CheckpointError: naming ``out`` and why it is kept.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise CheckpointError(
            f"{out} already exists; choose another --out or pass --force to replace a previous bundle"
        )
    if not is_bundle(out):
        kind = "a file" if not out.is_dir() or out.is_symlink() else "a folder that is not a bastion bundle"
        raise CheckpointError(f"--force replaces only a previous bundle, and {out} is {kind}; it was left untouched")
    src, dst = source.resolve(), out.resolve()
    if src == dst or dst in src.parents:
        raise CheckpointError(f"--out {out} contains the source {source}; write the bundle somewhere else")


def _only(*names: str) -> Any:
    """shutil.copytree ignore-callback that keeps just ``names`` (no stray files enter a bundle)."""

    def ignore(_: str, entries: list[str]) -> list[str]:
        return [e for e in entries if e not in names]

    return ignore


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an existing out is moved aside first and removed only after the swap."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _read_sums(directory: Path) -> tuple[dict[str, str], bytes]:
    path = directory / SUMS
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a bastion bundle: {SUMS} is missing")
    raw = path.read_bytes()
    sums: dict[str, str] = {}
    for i, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        parts = PurePosixPath(rel).parts
        ok = sep and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        if not ok or not parts or rel.startswith("/") or ".." in parts or rel in sums:
            raise CheckpointError(f"{path}: line {i} is not 'SHA256  relative/path' for a unique file: {line!r}")
        sums[rel] = digest
    return sums, raw


def verify_bundle(path: str | Path, *, expected_digest: str | None = None) -> str:
    """Check every file against SHA256SUMS; return the bundle digest.

    Raises:
        CheckpointError: missing SUMS, a missing, changed or unlisted file, or a digest mismatch.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"bundle folder does not exist: {directory}")
    sums, raw = _read_sums(directory)
    digest = hashlib.sha256(raw).hexdigest()
    if expected_digest is not None and digest != expected_digest.lower():
        raise CheckpointError(f"{directory}: bundle digest {digest} differs from the expected {expected_digest}")
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()} - {SUMS}
    if missing := sorted(set(sums) - present):
        raise CheckpointError(f"{directory}: file(s) listed in {SUMS} are missing: {', '.join(missing)}")
    if extra := sorted(present - set(sums)):
        raise CheckpointError(f"{directory}: file(s) not listed in {SUMS} (added after export?): {', '.join(extra)}")
    for rel, expected in sums.items():
        if sha256_file(directory / rel) != expected:
            raise CheckpointError(f"{directory / rel}: checksum mismatch (file corrupt or modified)")
    if MANIFEST not in sums:
        raise CheckpointError(f"{directory}: {MANIFEST} is missing")
    return digest


def read_manifest(path: str | Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a bastion bundle manifest (format {FORMAT!r} expected)")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{file}: unsupported bundle version {manifest.get('version')!r} (expected {VERSION})")
    return manifest


def load_bundle(path: str | Path, *, expected_digest: str | None = None, device: str | torch.device = "cpu") -> Bundle:
    """Verify, then load a bundle. Reads JSON and safetensors only (no pickle).

    Raises:
        CheckpointError: see :func:`verify_bundle`, plus a manifest that disagrees with the model files.
    """
    directory = Path(path)
    digest = verify_bundle(directory, expected_digest=expected_digest)
    manifest = read_manifest(directory)
    model = checkpoint.load_model(directory / MODEL_DIR, device=device)
    spec = checkpoint.load_spec(directory / MODEL_DIR)
    if spec.fingerprint() != manifest.get("dataset_fingerprint"):
        raise CheckpointError(f"{directory}: {MANIFEST} describes other data than {MODEL_DIR}/model.json")
    description = checkpoint.read_description(directory / MODEL_DIR)
    advertised = {
        "input_shape": (manifest.get("input_shape"), list(spec.input_shape)),
        "classes": (manifest.get("classes"), list(spec.classes)),
        "modality": (manifest.get("modality"), spec.modality),
        "model.architecture": ((manifest.get("model") or {}).get("architecture"), description.get("architecture")),
        "model.weights_sha256": (
            (manifest.get("model") or {}).get("weights_sha256"),
            description.get("weights_sha256"),
        ),
    }
    for key, (claimed, actual) in advertised.items():
        if claimed != actual:  # a service would advertise what it does not accept
            raise CheckpointError(
                f"{directory}: {MANIFEST} {key} is {claimed!r} but {MODEL_DIR}/model.json says {actual!r}"[:500]
            )
    has_defense = (directory / DEFENSE_DIR).is_dir()
    if has_defense != (manifest.get("defense") is not None):
        raise CheckpointError(f"{directory}: {MANIFEST} and the {DEFENSE_DIR}/ folder disagree on the defense")
    defense = load_defense(directory / DEFENSE_DIR, model) if has_defense else None
    return Bundle(directory, manifest, spec, model, defense, digest)
