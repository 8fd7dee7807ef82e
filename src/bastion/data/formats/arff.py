"""ARFF (Weka attribute-relation file format): nominal and numeric attributes, dense data.

:func:`read_arff` parses a file without a schema; :func:`read_arff_with_schema` feeds its rows through
:mod:`bastion.data.tabular.rows`, so a value outside its @attribute's nominal list is a bad row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.data.tabular.rows import RowStream, check_choice, collect, decoded_lines, existing_file
from bastion.data.tabular.schema import TabularSchema
from bastion.data.tabular.table import BadRows, OnBadRows, TabularTable
from bastion.errors import DataFormatError


@dataclass(frozen=True)
class ArffAttribute:
    """One ``@attribute``: kind is "nominal", "numeric", "string" or "date"; values for nominal ones."""

    name: str
    kind: str
    values: tuple[str, ...] | None
    line: int


@dataclass(frozen=True)
class ArffData:
    """A parsed ARFF file: header, data rows as text with their lines, and refused / skipped lines."""

    relation: str
    attributes: tuple[ArffAttribute, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    bad_rows: BadRows


def _arff_tokens(text: str, path: Path, number: int, *, sep: str) -> list[str]:
    """Split on ``sep`` outside single or double quotes; quotes are removed, backslash escapes kept simple."""
    tokens: list[str] = []
    current: list[str] = []
    quote: str | None = None
    was_quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "'\"" and not "".join(current).strip():
            quote, was_quoted, current = ch, True, []
        elif (ch == sep) or (sep == " " and ch.isspace()):
            if current or was_quoted:
                tokens.append("".join(current) if was_quoted else "".join(current).strip())
            current, was_quoted = [], False
        else:
            current.append(ch)
        i += 1
    if quote is not None:
        raise DataFormatError(f"{path}:{number}: unterminated {quote} quote")
    if current or was_quoted:
        tokens.append("".join(current) if was_quoted else "".join(current).strip())
    return tokens


def _arff_name(rest: str, path: Path, number: int) -> tuple[str, str]:
    """Leading (possibly quoted) name and the remaining text."""
    rest = rest.strip()
    if not rest:
        raise DataFormatError(f"{path}:{number}: missing name")
    if rest[0] in "'\"":
        end = rest.find(rest[0], 1)
        while end > 0 and rest[end - 1] == "\\":
            end = rest.find(rest[0], end + 1)
        if end < 0:
            raise DataFormatError(f"{path}:{number}: unterminated {rest[0]} quote in name")
        return rest[1:end].replace("\\" + rest[0], rest[0]), rest[end + 1 :].strip()
    parts = rest.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _arff_header(path: Path, lines: Iterator[tuple[int, str | None, str]]) -> tuple[str, list[ArffAttribute]]:
    relation: str | None = None
    attributes: list[ArffAttribute] = []
    for number, text, problem in lines:
        if text is None:
            raise DataFormatError(f"{path}:{number}: header line is {problem}")
        stripped = text.strip()
        if not stripped or stripped.startswith("%"):
            continue
        keyword = stripped.split(None, 1)[0].lower()
        rest = stripped[len(keyword) :]
        if keyword == "@relation":
            if relation is not None:
                raise DataFormatError(f"{path}:{number}: second @relation")
            relation, _ = _arff_name(rest, path, number)
        elif keyword == "@attribute":
            if relation is None:
                raise DataFormatError(f"{path}:{number}: @attribute before @relation")
            attributes.append(_arff_attribute(rest, path, number, attributes))
        elif keyword == "@data":
            if relation is None or not attributes:
                raise DataFormatError(f"{path}:{number}: @data before @relation and @attribute lines")
            return relation, attributes
        else:
            raise DataFormatError(f"{path}:{number}: expected @relation, @attribute or @data, got {stripped[:40]!r}")
    raise DataFormatError(f"{path}: no @data section")


def _arff_attribute(rest: str, path: Path, number: int, previous: list[ArffAttribute]) -> ArffAttribute:
    name, spec = _arff_name(rest, path, number)
    if any(a.name == name for a in previous):
        raise DataFormatError(f"{path}:{number}: attribute '{name}' declared twice")
    if not spec:
        raise DataFormatError(f"{path}:{number}: attribute '{name}' has no type")
    if spec.startswith("{"):
        if not spec.endswith("}"):
            raise DataFormatError(f"{path}:{number}: attribute '{name}': nominal list must end with '}}'")
        values = _arff_tokens(spec[1:-1], path, number, sep=",")
        if not values or any(v == "" for v in values):
            raise DataFormatError(f"{path}:{number}: attribute '{name}': empty nominal value list or value")
        return ArffAttribute(name=name, kind="nominal", values=tuple(values), line=number)
    kind = spec.split(None, 1)[0].lower()
    if kind in ("numeric", "real", "integer"):
        return ArffAttribute(name=name, kind="numeric", values=None, line=number)
    if kind in ("string", "date"):
        return ArffAttribute(name=name, kind=kind, values=None, line=number)
    raise DataFormatError(f"{path}:{number}: attribute '{name}': unsupported type {spec[:30]!r}")


def _arff_rows(path: Path, encoding: str) -> tuple[str, list[ArffAttribute], RowStream]:
    """The header (relation, attributes) and the data rows; nominal value lists become allowed texts."""
    lines = decoded_lines(path, encoding)
    relation, attributes = _arff_header(path, lines)
    bad: list[tuple[int, str]] = []
    skipped: list[tuple[int, str]] = []
    n_fields = len(attributes)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for number, text, problem in lines:
            if text is None:
                bad.append((number, problem))
                continue
            stripped = text.strip()
            if not stripped:
                skipped.append((number, "blank line"))
                continue
            if stripped.startswith("%"):
                skipped.append((number, "comment"))
                continue
            if stripped.startswith("{"):
                bad.append((number, "sparse ARFF rows are not supported"))
                continue
            try:
                fields = _arff_tokens(stripped, path, number, sep=",")
            except DataFormatError as err:
                bad.append((number, str(err).split(": ", 1)[1]))
                continue
            if len(fields) != n_fields:
                bad.append((number, f"expected {n_fields} fields, found {len(fields)}"))
                continue
            yield number, fields

    allowed = {a.name: frozenset(a.values) for a in attributes if a.values is not None}
    events = RowStream(
        names=[a.name for a in attributes],
        name_lines={a.name: a.line for a in attributes},
        rows=rows(),
        bad=bad,
        skipped=skipped,
        allowed_text=allowed,
    )
    return relation, attributes, events


def read_arff(path: str | Path, *, encoding: str = "utf-8") -> ArffData:
    """Parse an ARFF file without a schema: header errors raise, data line errors become bad rows."""
    path = existing_file(path)
    relation, attributes, events = _arff_rows(path, encoding)
    declared = [(i, a.name, frozenset(a.values)) for i, a in enumerate(attributes) if a.values is not None]
    kept = []
    undeclared: list[tuple[int, str]] = []
    for number, fields in events.rows:
        wrong = [(name, fields[i]) for i, name, allowed in declared if fields[i] not in allowed | {"?"}]
        if wrong:
            name, value = wrong[0]
            undeclared.append((number, f"column '{name}': value '{value}' is not declared in its @attribute"))
        else:
            kept.append((number, tuple(fields)))
    bad = events.bad + undeclared  # events.bad is complete only once its rows are consumed
    return ArffData(
        relation=relation,
        attributes=tuple(attributes),
        rows=tuple(kept),
        bad_rows=BadRows(rows=tuple(sorted(bad)), skipped=tuple(events.skipped)),
    )


def read_arff_with_schema(
    path: str | Path,
    schema: TabularSchema,
    *,
    on_bad_rows: OnBadRows = "drop",
    encoding: str = "utf-8",
    label_normalizer: Callable[[str], str] | None = None,
) -> TabularTable:
    """Read an ARFF file against ``schema``: attribute names must be the schema's columns (any order);
    a value outside its @attribute's nominal list, or '?', is a bad row."""
    check_choice("on_bad_rows", on_bad_rows, ("drop", "raise"))
    path = existing_file(path)
    _, _, events = _arff_rows(path, encoding)
    return collect(path, schema, events, header_like=True, on_bad_rows=on_bad_rows, label_normalizer=label_normalizer)
