"""``python -m bastion.app.constraints``: list the rules a training file never breaks, and audit written records.

    python -m bastion.app.constraints mine nsl-kdd:KDDTrain+_20Percent.txt --min-support 30 --out rules.yaml
    python -m bastion.app.constraints audit nsl-kdd:KDDTrain+_20Percent.txt adv.txt --original KDDTest+.txt

``mine`` prints the candidate hard constraints (id, support, confidence) and the decimal grids, and with
``--out`` writes them as a constraint file (bastion-constraints/1) to review and accept. ``--reject ID``
(repeatable; an id or a full rule name) and ``--reject-file FILE`` (one a line, ``#`` comments) leave rules
out of that file. Training accepts every mined rule unless told otherwise: train on the reviewed file with
``--data 'nsl-kdd:DIR?rules=reviewed.yaml'``, or keep the automatic set minus some rules with
``?reject=r1a2b3c4d,r5e6f7a8b`` (ids), or the shipped rules only with ``?rules=shipped``. ``audit`` re-reads
records written by ``bastion evaluate --save-adversarial`` and their original rows (by the line sidecar)
and counts, with rules mined from the training file by :mod:`bastion.data.tabular.mining` alone, the
records that break a rule their clean row kept and the values off the data's grid.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from bastion.data.catalog import open_source
from bastion.data.tabular.loading import TabularSource, tabular_source
from bastion.data.tabular.mining import audit, mine, read_rejections, rules_table
from bastion.data.tabular.table import TabularTable
from bastion.errors import ConfigError
from bastion.io import atomic_write_text


def _read(spec: str) -> tuple[TabularTable, TabularSource, dict[str, Any]]:
    """The SPEC's (training) file, its dataset entry and typed options."""
    source = open_source(spec)
    entry = tabular_source(source.name)
    options = entry.typed_options(source)
    path = source.location()
    if path.is_dir():
        path = entry.files(path, options)[0]
    return entry.read_file(path, options), entry, options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mine", help="rules no training row breaks, and the decimal grids")
    m.add_argument("data", help="a tabular SPEC, e.g. nsl-kdd:KDDTrain+_20Percent.txt (its training file)")
    m.add_argument("--min-support", type=int, default=30)
    m.add_argument("--ranges", action="store_true", help="also list range rules (atom => Y <= max, >= min)")
    m.add_argument("--show", type=int, default=30, help="rules to print")
    m.add_argument("--out", type=Path, help="write the candidates as a constraint file")
    m.add_argument(
        "--reject", action="append", default=[], metavar="RULE", help="leave a rule out (its id or full name)"
    )
    m.add_argument("--reject-file", type=Path, help="rule ids or names to leave out, one a line")
    a = sub.add_parser("audit", help="written records vs rules mined from the training file")
    a.add_argument("data", help="the training SPEC the rules are mined from")
    a.add_argument("records", type=Path, help="a file written by --save-adversarial")
    a.add_argument("--original", type=Path, required=True, help="the file the records were crafted from")
    a.add_argument("--min-support", type=int, default=30)
    args = parser.parse_args(argv)

    train, entry, options = _read(args.data)
    mined = mine(train.features, train.schema, min_support=args.min_support, ranges=getattr(args, "ranges", False))
    if args.command == "mine":
        rejected = [*args.reject, *(read_rejections(args.reject_file) if args.reject_file else [])]
        try:
            kept = mined.without(rejected)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        hard = kept.hard()
        print(f"{len(hard)} rules hold on all {mined.n_rows} training rows (support >= {args.min_support}):")
        if rejected:
            print(f"  ({len(mined.hard()) - len(hard)} rejected by --reject / --reject-file)")
        for rid, name, support, confidence in rules_table(hard, args.show):
            print(f"  {rid}  {name:60s} support {support:6d}  confidence {confidence:.3f}")
        print("decimal grids:", json.dumps(dict(mined.decimals)))
        if args.out:
            d = kept.to_constraint_dict(train.schema.name)
            atomic_write_text(args.out, yaml.safe_dump(d, sort_keys=False, width=110))
            print(
                f"wrote {args.out}: review it (delete any rule you do not trust), then train on it with "
                f"--data '{args.data.split('?')[0]}?rules={args.out}'"
            )
        return 0
    written = entry.read_file(args.records, options)
    original = entry.read_file(args.original, options)
    with open(str(args.records) + ".lines.csv", newline="") as fh:
        lines = [int(row["line"]) for row in csv.DictReader(fh)]
    position = {int(ln): i for i, ln in enumerate(original.line_numbers.tolist())}
    originals = original.features.iloc[[position[ln] for ln in lines]]
    print(json.dumps(audit(written.features, originals, mined), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
