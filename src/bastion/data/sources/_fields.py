"""Field-size limits and name-list shorthand shared by the tabular dataset schemas."""

from __future__ import annotations

#: Largest unsigned 16-bit value (a PE-header WORD, a TCP window).
WORD = 65535.0
#: Largest unsigned 32-bit value (a PE-header DWORD, a TCP sequence number).
DWORD = 4294967295.0


def words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """Compact name lists: 'a b c' -> ('a', 'b', 'c')."""
    return tuple(text.split(sep))
