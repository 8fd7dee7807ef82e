"""Atomic file writes: a crash mid-write never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from bastion.errors import CheckpointError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the umask (tempfile's files are 0o600)."""
    return 0o666 & ~current_umask()


def make_temp_dir(parent: str | os.PathLike[str], *, prefix: str, suffix: str = ".tmp") -> Path:
    """A fresh temp folder in ``parent`` with the mode ``mkdir`` would give it (0o777 minus the umask, not
    tempfile's 0o700), for folders that are renamed into place once complete."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def make_temp_file(parent: str | os.PathLike[str], *, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``parent``, the file given :func:`file_mode` (it is renamed into place)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    try:
        os.fchmod(fd, file_mode())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    The file gets the mode a plain ``open(path, "w")`` would (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """JSON with sorted keys and a trailing newline; NaN/inf are refused rather than written as invalid JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lowercase hex digits (what model.json and defense.json record)."""
    return hashlib.sha256(data).hexdigest()


def read_verified(path: str | os.PathLike[str], expected_sha256: Any, *, what: str = "file") -> bytes:
    """The bytes of ``path``, only if their SHA-256 is ``expected_sha256`` (recorded when it was written).

    This is the one integrity check of saved state: model weights, detector tensors and defense configs all
    go through it, so a corrupted or replaced file is refused before it is parsed.

    Raises:
        CheckpointError: the file is missing or unreadable, no checksum was recorded, or it differs.
    """
    path = Path(path)
    if not isinstance(expected_sha256, str) or len(expected_sha256) != 64:
        raise CheckpointError(f"{path}: no valid SHA-256 recorded for this {what}; refusing to load it unverified")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {what}: {exc}") from exc
    if sha256_hex(data) != expected_sha256.lower():
        raise CheckpointError(f"{path}: checksum mismatch (file corrupt or replaced)")
    return data


def canonical_json_sha256(obj: Any) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys, no whitespace), for self-checksummed JSON."""
    return sha256_hex(json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def read_json_file(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Parse a UTF-8 JSON file; NaN/Infinity literals are refused (bastion never writes them).

    Raises:
        CheckpointError: missing, unreadable, not UTF-8, not JSON, or holding NaN/Infinity.
    """
    path = Path(path)

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not allowed")

    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not UTF-8 text: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
