"""Reading a whole file for a format parser, with errors that name the file and what was expected."""

from __future__ import annotations

from pathlib import Path

from bastion.errors import DataNotFoundError


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``; ``what`` is the expected file with its article, e.g. ``"an IDX file"``.

    Raises:
        DataNotFoundError: the file does not exist, or is a directory.
    """
    noun = what.split(" ", 1)[1]
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{path}: {noun} does not exist") from exc
    except IsADirectoryError as exc:
        raise DataNotFoundError(f"{path}: expected {what}, found a directory") from exc
