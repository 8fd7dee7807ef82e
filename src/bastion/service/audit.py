"""JSONL audit log of flagged and rejected inputs: whole-line appends, size-bounded rotation.

Each record is one ``os.write`` of a complete line to a file opened with O_APPEND, under a lock, so
concurrent writers in this process never interleave and a reader never sees half a record (short of
a crash mid-write, which leaves at most one truncated last line). When the next line would take the
file past ``max_bytes`` the file is rotated (``audit.jsonl`` -> ``audit.jsonl.1`` -> ... up to
``backups``, the oldest dropped), so disk use stays below ``(backups + 1) * max_bytes`` plus one line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError


class AuditLog:
    """Append-only JSONL file with rotation (see the module docstring).

    Args:
        path: the live file; rotated copies get ``.1``, ``.2``... suffixes.
        max_bytes: rotate before the file would exceed this size.
        backups: rotated files kept (0 = truncate by starting a fresh file).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 10 << 20, backups: int = 3) -> None:
        if max_bytes < 1024:
            raise ConfigError(f"audit log max_bytes must be >= 1024, got {max_bytes}")
        if backups < 0:
            raise ConfigError(f"audit log backups must be >= 0, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _rotate(self) -> None:
        for i in range(self.backups, 0, -1):
            src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
        if self.backups == 0:
            self.path.unlink(missing_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        """Append one line per record; return how many were written."""
        n = 0
        with self._lock:
            for record in records:
                line = (json.dumps(record, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n").encode()
                try:
                    size = self.path.stat().st_size
                except FileNotFoundError:
                    size = 0
                if size > 0 and size + len(line) > self.max_bytes:
                    self._rotate()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    view = memoryview(line)
                    while view:  # a regular file takes the whole line at once; a short write is finished
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                n += 1
        return n
