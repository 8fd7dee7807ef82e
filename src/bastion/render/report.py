"""``bastion report``: run folders and experiment folders -> one self-contained HTML file plus Markdown.

The HTML embeds its figures as base64 PNGs and its style inline: it opens offline and loads nothing from
the network. The Markdown holds the same sections, its figures written as PNG files next to it.
Rendering only: every number comes from results.json, comparison.json and the runs' DONE markers.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.artifacts.results import read_results
from bastion.errors import CheckpointError, ConfigError
from bastion.io import atomic_write_bytes, atomic_write_text
from bastion.render import plots
from bastion.render.experiment import EXPLANATION, comparison_lines, method_table
from bastion.render.summary import accuracy_rows, headline_sentence, markdown_table

Table = tuple[list[str], list[list[str]]]


@dataclass
class Section:
    """One section: an id (the HTML anchor), a title, paragraphs, tables and at most one figure."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    figure: bytes | None = None
    caption: str = ""


@dataclass
class Source:
    """One input folder: a run (results.json) or an experiment (comparison.json + its runs)."""

    path: Path
    label: str
    runs: list[tuple[str, dict[str, Any], float | None]]  # (label prefix, results, peak RSS in MB)
    comparison: dict[str, Any] | None = None


def load_source(path: Path, label: str) -> Source:
    """Read a run folder or an experiment folder; a clear error for anything else."""
    if (path / "comparison.json").is_file():
        comparison = json.loads((path / "comparison.json").read_text())
        runs = []
        for done in sorted(path.glob("runs/*/*/seed-*/DONE")):
            run_dir = done.parent
            marker = json.loads(done.read_text())
            prefix = f"{run_dir.parent.parent.name}/{run_dir.name}: "
            runs.append((prefix, read_results(run_dir / "results.json"), marker.get("peak_rss_mb")))
        return Source(path, label, runs, comparison)
    if (path / "results.json").is_file():
        return Source(path, label, [("", read_results(path / "results.json"), None)])
    raise CheckpointError(f"{path} is neither a run folder (results.json) nor an experiment folder (comparison.json)")


def _measured(m: dict[str, Any]) -> str:
    parts = []
    for k, v in m.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, int | str):
            parts.append(f"{k}={v}")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            parts.append(f"{k}=" + "; ".join(", ".join(f"{a}={b}" for a, b in d.items()) for d in v))
    return "; ".join(parts)


Runs = list[tuple[str, dict[str, Any], float | None]]


def build_sections(sources: list[Source]) -> list[Section]:
    """Every section with data behind it, in reading order."""
    many = len(sources) > 1
    runs = [((f"{s.label}: " if many else "") + p, r, peak) for s in sources for p, r, peak in s.runs]
    # Figures that show one curve per model use the first seed of an experiment only, to stay readable.
    first = [(p, r) for p, r, _ in runs if "seed-" not in p or p.rstrip(": ").endswith(_first_seed(sources))]
    sections = [_overview(sources), _accuracy(runs), _checks(runs)]
    sections += [_statistics(s) for s in sources if s.comparison is not None]
    sections.append(_robust_vs_eps(sources))
    sections.append(
        _figure_section(
            "per-class",
            "Per-class robust accuracy",
            first,
            plots.per_class,
            "Clean and worst-case robust accuracy per class at the largest eps.",
        )
    )
    sections.append(
        _figure_section(
            "detector-roc",
            "Detector ROC",
            first,
            plots.detector_roc,
            "Clean test inputs (negatives) vs successful adversarial inputs (positives), largest eps.",
        )
    )
    sections += _transfer(sources)
    sections.append(
        _figure_section(
            "training",
            "Training curves",
            first,
            plots.training_curves,
            "Loss and accuracies per epoch; shaded bands are the schedule's stages.",
        )
    )
    sections.append(_cost(runs))
    return [s for s in sections if s.figure is not None or s.tables or s.paragraphs]


def _accuracy(runs: Runs) -> Section:
    acc = Section("accuracy", "Accuracy")
    acc.paragraphs.append(
        "Robust accuracy = share of test examples still classified correctly after the attack. "
        "Brackets are 95% Wilson intervals."
    )
    for prefix, results, _ in runs:
        acc.paragraphs.append(f"{prefix}{results['data']}: {headline_sentence(results)}")
        acc.tables.append((f"{prefix}{results['data']} (seed {results['seed']})", accuracy_rows(results, with_ci=True)))
    return acc


def _checks(runs: Runs) -> Section:
    checks = Section("checks", "Sanity checks")
    checks.paragraphs.append(
        "Each evaluation checks itself for the classic signs of gradient masking and weak attacks "
        "(docs/checks.md). SUSPECT means the robust accuracy above should not be believed as is."
    )
    by_model = {
        prefix + name: m["checks"]
        for prefix, results, _ in runs
        for name, m in results["models"].items()
        if m.get("checks")
    }
    codes = list(dict.fromkeys(code for c in by_model.values() for code in c))
    suspect = [
        [model, code, c["detail"], _measured(c.get("measured", {}))]
        for model, cs in by_model.items()
        for code, c in cs.items()
        if c["status"] == "SUSPECT"
    ]
    total = sum(len(c) for c in by_model.values())
    checks.paragraphs.append(
        f"{len(suspect)} SUSPECT of {total} checks." if total else "No checks in these results (written before checks)."
    )
    if by_model:
        status_rows = [
            [model, *(cs.get(code, {}).get("status", "-") for code in codes)] for model, cs in by_model.items()
        ]
        checks.tables.append(("Status per model", (["model", *codes], status_rows)))
    if suspect:
        checks.tables.append(("SUSPECT checks", (["model", "check", "why", "measured"], suspect)))
    return checks


def _robust_vs_eps(sources: list[Source]) -> Section:
    many = len(sources) > 1
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    interval = "95% Wilson interval"
    for s in sources:
        if s.comparison is not None:
            curves.update(plots.curves_from_comparison(s.comparison))
            interval = (
                "95% interval (t over seeds; Wilson for single runs)"
                if len(sources) > 1
                else "95% t interval over seeds"
            )
        else:
            for prefix, results, _ in s.runs:
                curves.update(plots.curves_from_results(results, (f"{s.label}: " if many else "") + prefix))
    return Section(
        "robust-vs-eps",
        "Robust accuracy vs eps",
        figure=plots.robust_vs_eps(curves, "Worst-case robust accuracy", interval),
        caption=f"Worst case over the suite per model; eps 0 is clean accuracy; bands: {interval}.",
    )


def _transfer(sources: list[Source]) -> list[Section]:
    sections = []
    for s in sources:
        for dataset, block in (s.comparison or {}).get("datasets", {}).items():
            png = plots.transfer_heatmap(block.get("transfer"))
            if png is not None:
                sections.append(
                    Section(
                        f"transfer-{_anchor(dataset)}",
                        f"Transferability: {dataset}",
                        figure=png,
                        caption="Accuracy of each target model on PGD examples crafted on each source "
                        "model (mean over seeds); the diagonal is the white-box accuracy.",
                    )
                )
    return sections


def _cost(runs: Runs) -> Section:
    cost = [row for prefix, results, peak in runs for row in plots.cost_rows(results, prefix, peak)]
    return Section(
        "cost",
        "Cost vs robustness",
        figure=plots.cost_pareto(cost),
        caption="Training cost against worst-case robust accuracy at the largest eps; the dashed "
        "line joins the Pareto-optimal models. Peak memory is shown when measured "
        "(experiments: the peak resident memory of the process that ran the run).",
        tables=[("", _cost_table(cost))] if cost else [],
    )


def _cost_table(cost: list[dict[str, Any]]) -> Table:
    header = [
        "model",
        "robust accuracy",
        "eps",
        "training gradient evaluations",
        "training wall time (s)",
        "peak RSS (MB)",
    ]
    rows = [
        [
            r["label"],
            f"{100 * r['robust']:.1f}%",
            str(r["eps"]),
            f"{r['gradient_evaluations']:,}",
            f"{r['wall_time_s']:.1f}",
            "n/a" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}",
        ]
        for r in cost
    ]
    return header, rows


def _first_seed(sources: list[Source]) -> str:
    for s in sources:
        if s.comparison is not None and s.comparison.get("seeds"):
            return f"seed-{s.comparison['seeds'][0]}"
    return "seed-0"


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "data"


def _figure_section(id_: str, title: str, runs: list[tuple[str, dict[str, Any]]], fn: Any, caption: str) -> Section:
    """One figure over several runs: model names prefixed by their run."""
    merged = {"models": {prefix + n: m for prefix, r in runs for n, m in r["models"].items()}}
    return Section(id_, title, figure=fn(merged), caption=caption)


def _overview(sources: list[Source]) -> Section:
    sec = Section("overview", "Overview")
    rows = []
    for s in sources:
        for prefix, r, _ in s.runs:
            env = r.get("environment", {})
            threat = r.get("threat", {})
            rows.append(
                [
                    s.label + (f" / {prefix.rstrip(': ')}" if prefix else ""),
                    str(r.get("command", "?")),
                    str(r["data"]),
                    str(r["seed"]),
                    f"{threat.get('norm', '?')} eps {', '.join(threat.get('eps', []))}; "
                    f"suite {threat.get('suite', '?')}",
                    str(r.get("created", "?")),
                    f"bastion {env.get('bastion', '?')}, torch {env.get('torch', '?')}",
                ]
            )
    sec.paragraphs.append(f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from {len(sources)} folder(s).")
    sec.tables.append(("", (["source", "command", "data", "seed", "threat", "created", "environment"], rows)))
    return sec


def _statistics(source: Source) -> Section:
    comparison = source.comparison or {}
    sec = Section(f"statistics-{_anchor(source.label)}", f"Statistics across seeds: {comparison.get('experiment', '')}")
    sec.paragraphs.append(EXPLANATION)
    for dataset, block in comparison.get("datasets", {}).items():
        for metric, m in block["metrics"].items():
            sec.tables.append((f"{dataset}: {metric}", method_table(m["by_method"])))
            sec.paragraphs += [f"{dataset}, {metric}: {line}" for line in comparison_lines(m["comparisons"])]
    return sec


def _md_table(title: str, table: Table) -> str:
    header, rows = table
    body = markdown_table(header, [[c.replace("|", "\\|") for c in r] for r in rows])
    return f"**{title}**\n\n{body}" if title else body


def _html_table(title: str, table: Table) -> str:
    header, rows = table
    cap = f"<caption>{html.escape(title)}</caption>" if title else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{_cls(c)}">{html.escape(c)}</td>' for c in r) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cls(cell: str) -> str:
    return {"SUSPECT": "suspect", "pass": "pass", "skipped": "skipped"}.get(cell, "")


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
nav a { margin-right: 1em; } table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; } img { max-width: 100%; }
td.suspect { background: #fdd; font-weight: bold; } td.pass { background: #dfd; } td.skipped { color: #888; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
"""


#: Marks an HTML file as a bastion report: ``--out FOLDER`` replaces a report.html only if it carries it.
GENERATOR = '<meta name="generator" content="bastion report">'
#: The file names ``--out FOLDER`` writes inside the folder.
REPORT_NAME = "report.html"


def report_path(out: Path) -> Path:
    """The HTML file ``--out`` names: ``out`` itself when it ends in .html, else ``out/report.html``.

    Raises:
        ConfigError: ``out`` is an existing file not ending in .html, or ``out/report.html`` exists and is
            not a bastion report, or report.md / report_files/ exist without one (an unrelated file is never
            overwritten).
    """
    if out.suffix.lower() == ".html":
        return out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file; give a folder or a file name ending in .html")
    html_path = out / REPORT_NAME
    ours = False
    if html_path.is_file():
        try:
            ours = GENERATOR in html_path.read_text(encoding="utf-8", errors="replace")[:2000]
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot read the existing {html_path}: {exc}") from None
    others = [p for p in (html_path, html_path.with_suffix(".md"), out / f"{html_path.stem}_files") if p.exists()]
    if others and not ours:
        raise ConfigError(f"--out {out}: {others[0]} exists and is not from a bastion report; choose another --out")
    return html_path


def render_html(sections: list[Section], title: str) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8">{GENERATOR}',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        parts += [_html_table(t, table) for t, table in s.tables]
        if s.figure is not None:
            data = base64.b64encode(s.figure).decode("ascii")
            parts.append(
                f'<figure><img id="fig-{s.id}" alt="{html.escape(s.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(s.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(sections: list[Section], title: str, image_dir: Path) -> tuple[str, dict[str, bytes]]:
    """Markdown text and the PNG files it links to (name -> bytes, relative to the Markdown file)."""
    images: dict[str, bytes] = {}
    out = [f"# {title}"]
    for s in sections:
        out += ["", f"## {s.title}", ""]
        out += [p + "\n" for p in s.paragraphs]
        out += [_md_table(t, table) + "\n" for t, table in s.tables]
        if s.figure is not None:
            name = f"{image_dir.name}/{s.id}.png"
            images[name] = s.figure
            out.append(f"![{s.title}]({name})\n\n*{s.caption}*")
    return "\n".join(out) + "\n", images


def write_report(paths: list[Path], out: Path, title: str = "bastion report") -> tuple[Path, Path]:
    """Write the HTML file ``out`` names (see :func:`report_path`: ``out/report.html`` for a folder), the
    Markdown next to it (suffix .md) and its figures in ``STEM_files/``."""
    if not paths:
        raise CheckpointError("give at least one run or experiment folder")
    out = report_path(out)
    for target in (out, out.with_suffix(".md")):
        if target.is_dir():
            raise ConfigError(f"--out {target} is an existing folder; name the HTML file to write")
    figures = out.parent / f"{out.stem}_files"
    if figures.exists() and not figures.is_dir():
        raise ConfigError(f"--out {out}: the figures folder {figures} is an existing file; choose another --out")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
    labels = [p.name or str(p) for p in paths]
    if len(set(labels)) != len(labels):
        labels = [str(p) for p in paths]
    sources = [load_source(Path(p), label) for p, label in zip(paths, labels, strict=True)]
    sections = build_sections(sources)
    atomic_write_text(out, render_html(sections, title))
    md_path = out.with_suffix(".md")
    text, images = render_markdown(sections, title, out.parent / f"{out.stem}_files")
    for name, data in images.items():
        atomic_write_bytes(out.parent / name, data)
    atomic_write_text(md_path, text)
    return out, md_path
