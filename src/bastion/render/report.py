"""``bastion report``: run folders and experiment folders -> one self-contained HTML file plus Markdown.

The HTML embeds its figures as base64 PNGs and its style inline: it opens offline and loads nothing from
the network. The Markdown holds the same sections, its figures written as PNG files next to it.
Every number comes from results.json, comparison.json and the runs' DONE markers, except what
:mod:`bastion.render.examples` adds: per-class test counts (for the intervals) and the adversarial
examples. Figures with an eps axis are drawn one per dataset and threat model: pixel eps and
model-space eps of different datasets are different units and never share an axis or a Pareto front.
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
from bastion.errors import BastionError, CheckpointError, ConfigError
from bastion.io import atomic_write_bytes, atomic_write_text
from bastion.render import examples, plots
from bastion.render.experiment import EXPLANATION, comparison_lines, method_table
from bastion.render.summary import accuracy_rows, headline_sentence, markdown_table

Table = tuple[list[str], list[list[str]]]


class Changed(str):
    """A table cell the report highlights: a field an attack changed (bold in Markdown)."""

    __slots__ = ()


@dataclass
class Figure:
    """One PNG of a section, with its own anchor (``fig-ID``), heading and caption."""

    id: str
    png: bytes
    caption: str
    title: str = ""


@dataclass
class Section:
    """One section: an id (the HTML anchor), a title, paragraphs, tables and figures."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    """One run's results: its label prefix in the report, peak RSS (experiments) and folder."""

    prefix: str
    results: dict[str, Any]
    peak_rss_mb: float | None = None
    path: Path | None = None


@dataclass
class Source:
    """One input folder: a run (results.json) or an experiment (comparison.json + its runs)."""

    path: Path
    label: str
    runs: list[Run]
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
            runs.append(Run(prefix, read_results(run_dir / "results.json"), marker.get("peak_rss_mb"), run_dir))
        return Source(path, label, runs, comparison)
    if (path / "results.json").is_file():
        return Source(path, label, [Run("", read_results(path / "results.json"), None, path)])
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


Runs = list[Run]


def dataset_name(data: str) -> str:
    """The dataset a SPEC names ("nsl-kdd:DATA/x" -> "nsl-kdd"); generic formats keep their path, since two
    csv: or npz: files are different datasets."""
    name, _, rest = str(data).partition(":")
    return str(data) if name.lower() in ("csv", "npz", "imagefolder") and rest else name.lower()


def _norm(results: dict[str, Any]) -> str:
    return str(results.get("threat", {}).get("norm", "?"))


def _tabular(results: dict[str, Any]) -> bool:
    return any("tabular" in m for m in results["models"].values())


def _group(runs: Runs, *, by_norm: bool = True) -> dict[tuple[str, str], Runs]:
    """Runs by (dataset, norm), in reading order: the units of one eps axis."""
    groups: dict[tuple[str, str], Runs] = {}
    for run in runs:
        key = (dataset_name(run.results["data"]), _norm(run.results) if by_norm else "")
        groups.setdefault(key, []).append(run)
    return groups


def _eps_axis(results: dict[str, Any], norm: str) -> tuple[str, str]:
    """(x label, y label) of an eps figure: the unit eps is measured in, and what accuracy counts."""
    if _tabular(results):
        x = f"eps ({norm}, model space: each feature scaled to [0, 1]; 0 = clean)"
    else:
        x = f"eps ({norm}, pixels in [0, 1]; 0 = clean)"
    denominators = {m.get("denominator") for m in results["models"].values()} - {None}
    y = f"{denominators.pop()} (%)" if len(denominators) == 1 else "accuracy (%)"
    return x, y


def build_sections(sources: list[Source]) -> list[Section]:
    """Every section with data behind it, in reading order."""
    many = len(sources) > 1
    runs = [
        Run((f"{s.label}: " if many else "") + r.prefix, r.results, r.peak_rss_mb, r.path)
        for s in sources
        for r in s.runs
    ]
    # Figures that show one curve per model use the first seed of an experiment only, to stay readable.
    seed = _first_seed(sources)
    first = [r for r in runs if "seed-" not in r.prefix or r.prefix.rstrip(": ").endswith(seed)]
    sections = [_overview(sources), _accuracy(runs), _checks(runs)]
    sections += [_statistics(s) for s in sources if s.comparison is not None]
    sections.append(_robust_vs_eps(sources))
    sections.append(_per_class(first))
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
    sections.append(_examples(first))
    return [s for s in sections if s.figures or s.tables or s.paragraphs]


def _accuracy(runs: Runs) -> Section:
    acc = Section("accuracy", "Accuracy")
    acc.paragraphs.append(
        "Robust accuracy = share of test examples still classified correctly after the attack. "
        "Brackets are 95% Wilson intervals."
    )
    for run in runs:
        prefix, results = run.prefix, run.results
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
        run.prefix + name: m["checks"] for run in runs for name, m in run.results["models"].items() if m.get("checks")
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
    """One figure per dataset and threat model: curves of different input spaces never share an axis."""
    many = len(sources) > 1
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group(dataset: str, norm: str, results: dict[str, Any]) -> dict[str, Any]:
        return groups.setdefault((dataset, norm), {"curves": {}, "results": results, "wilson": False, "seeds": False})

    for s in sources:
        label = f"{s.label}: " if many else ""
        if s.comparison is not None:
            for dataset in s.comparison.get("datasets", {}):
                matching = [r for r in s.runs if dataset_name(r.results["data"]) == dataset_name(dataset)]
                ref = (matching or s.runs)[0].results if (matching or s.runs) else {"models": {}}
                norms = {_norm(r.results) for r in matching} or {"?"}
                g = group(dataset_name(dataset), norms.pop() if len(norms) == 1 else "?", ref)
                curves = plots.curves_from_comparison(s.comparison, dataset)
                g["curves"].update({label + k: v for k, v in curves.items()})
                g["seeds"] = True
        else:
            for run in s.runs:
                g = group(dataset_name(run.results["data"]), _norm(run.results), run.results)
                g["curves"].update(plots.curves_from_results(run.results, label + run.prefix))
                g["wilson"] = True
    section = Section("robust-vs-eps", "Robust accuracy vs eps")
    for (dataset, norm), g in groups.items():
        interval = {
            (True, False): "95% t interval over seeds",
            (False, True): "95% Wilson interval",
            (True, True): "95% interval (t over seeds; Wilson for single runs)",
        }.get((g["seeds"], g["wilson"]), "95% interval")
        xlabel, ylabel = _eps_axis(g["results"], norm)
        png = plots.robust_vs_eps(
            g["curves"], f"Worst-case robust accuracy: {dataset}", interval, xlabel=xlabel, ylabel=ylabel
        )
        if png is not None:
            section.figures.append(
                Figure(
                    f"robust-vs-eps-{_anchor(dataset)}-{_anchor(norm)}",
                    png,
                    f"{dataset}, {norm}: worst case over the suite per model; eps 0 is clean accuracy; "
                    f"bands: {interval}.",
                    f"{dataset}, {norm}",
                )
            )
    return section


def _class_names(run: Run) -> tuple[str, ...] | None:
    from bastion.models import checkpoint

    for name, m in run.results["models"].items():
        path = None if run.path is None else examples.model_dir(run.path, name, m)
        if path is not None:
            try:
                return checkpoint.load_spec(path).classes
            except (BastionError, OSError, KeyError, ValueError):
                continue
    return None


def _counts_fit(counts: list[int] | None, m: dict[str, Any]) -> bool:
    """Recounted class sizes must reproduce every stored rate as a whole number of examples: a run
    evaluated on other examples than the ones recounted gets no intervals rather than wrong ones."""
    if counts is None:
        return False
    block = m["robust_accuracy_per_class"]
    for rates in (m["clean_accuracy_per_class"], *block["by_eps"].values()):
        if len(rates) > len(counts):
            return False
        for rate, n in zip(rates, counts, strict=False):
            if (rate is None) != (n == 0) or (rate is not None and abs(rate * n - round(rate * n)) > 1e-3):
                return False
    return True


def _per_class(runs: Runs) -> Section:
    """Per dataset: clean and robust accuracy per class, each bar with its count and 95% interval."""
    section = Section("per-class", "Per-class robust accuracy")
    for (dataset, _), group in _group(runs, by_norm=False).items():
        merged: dict[str, Any] = {}
        counts: dict[str, list[int] | None] = {}
        for run in group:
            for name, m in run.results["models"].items():
                if not m.get("robust_accuracy_per_class", {}).get("by_eps"):
                    continue
                merged[run.prefix + name] = m
                found = examples.class_counts(run.path, run.results, int(m["n_examples"]))
                counts[run.prefix + name] = found if _counts_fit(found, m) else None
        if not merged:
            continue
        png = plots.per_class({"models": merged}, counts, _class_names(group[0]))
        if png is None:
            continue
        known = all(c is not None for c in counts.values())
        section.figures.append(
            Figure(
                f"per-class-{_anchor(dataset)}",
                png,
                f"{dataset}: clean and worst-case robust accuracy per class at the largest eps; "
                + (
                    "each bar carries correct/n and its 95% Wilson interval (n: test examples of the class)."
                    if known
                    else "the per-class counts are not known here (the dataset cannot be loaded and the run "
                    "has no records.json), so bars have no intervals."
                ),
                dataset,
            )
        )
    return section


def _transfer(sources: list[Source]) -> list[Section]:
    sections = []
    for s in sources:
        for dataset, block in (s.comparison or {}).get("datasets", {}).items():
            png = plots.transfer_heatmap(block.get("transfer"))
            if png is not None:
                caption = (
                    "Accuracy of each target model on PGD examples crafted on each source "
                    "model (mean over seeds); the diagonal is the white-box accuracy."
                )
                sections.append(
                    Section(
                        f"transfer-{_anchor(dataset)}",
                        f"Transferability: {dataset}",
                        figures=[Figure(f"transfer-{_anchor(dataset)}", png, caption)],
                    )
                )
    return sections


def _cost(runs: Runs) -> Section:
    """Cost vs robustness per dataset and threat model: a Pareto front only among comparable models."""
    section = Section("cost", "Cost vs robustness")
    rows = []
    for (dataset, norm), group in _group(runs).items():
        cost = [row for run in group for row in plots.cost_rows(run.results, run.prefix, run.peak_rss_mb)]
        by_eps: dict[str, list[dict[str, Any]]] = {}
        for row in cost:
            by_eps.setdefault(str(row["eps"]), []).append(row)
        for eps, points in by_eps.items():
            png = plots.cost_pareto(points)
            if png is None:
                continue
            section.figures.append(
                Figure(
                    f"cost-{_anchor(dataset)}-{_anchor(norm)}-{_anchor(eps)}",
                    png,
                    f"{dataset}, {norm} eps {eps}: training cost against worst-case robust accuracy at the "
                    "largest eps; the dashed line joins the Pareto-optimal models of this dataset and "
                    "budget. Peak memory is shown when measured (experiments: the peak resident memory of "
                    "the process that ran the run).",
                    f"{dataset}, {norm} eps {eps}",
                )
            )
        rows += [{**row, "dataset": dataset} for row in cost]
    if rows:
        section.tables.append(("", _cost_table(rows)))
    return section


def _cost_table(cost: list[dict[str, Any]]) -> Table:
    header = [
        "dataset",
        "model",
        "robust accuracy",
        "eps",
        "training gradient evaluations",
        "training wall time (s)",
        "peak RSS (MB)",
    ]
    rows = [
        [
            r["dataset"],
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


def _figure_section(id_: str, title: str, runs: Runs, fn: Any, caption: str) -> Section:
    """One figure per dataset over its runs: model names prefixed by their run."""
    section = Section(id_, title)
    for (dataset, _), group in _group(runs, by_norm=False).items():
        merged = {"models": {run.prefix + n: m for run in group for n, m in run.results["models"].items()}}
        png = fn(merged)
        if png is not None:
            section.figures.append(Figure(f"{id_}-{_anchor(dataset)}", png, f"{dataset}: {caption}", dataset))
    return section


def _examples(runs: Runs) -> Section:
    """Adversarial examples: image triplets crafted here, tabular evasions as the evaluation wrote them."""
    section = Section("examples", "Adversarial examples")
    for run in runs:
        if run.path is None:
            continue
        where = f"{run.prefix}{run.results['data']}"
        try:
            if _tabular(run.results):
                records = examples.tabular_records(run.path, run.results)
                if records is not None:
                    _tabular_examples(section, where, records)
                elif "adversarial_file" not in run.results:
                    section.paragraphs.append(
                        f"{where}: no evasion records (evaluate with --save-adversarial FILE to show some)."
                    )
                else:
                    section.paragraphs.append(
                        f"{where}: the evasion records {run.results['adversarial_file']} or their "
                        ".lines.csv sidecar are not found here."
                    )
                continue
            shown = examples.image_examples(run.path, run.results)
        except (BastionError, OSError, ValueError, RuntimeError) as exc:
            section.paragraphs.append(f"{where}: no adversarial examples shown ({exc})")
            continue
        png = plots.adversarial_images(shown)
        if png is None:
            section.paragraphs.append(
                f"{where}: no adversarial examples shown (the run's saved models or its data are not "
                "available where the report runs)."
            )
            continue
        e = shown[0]
        section.figures.append(
            Figure(
                f"examples-{_anchor(run.prefix or run.results['data'])}",
                png,
                f"{where}: crafted for this report with {e.attack} at {e.norm} eps {e.eps:g} on the first "
                f"{examples.EXAMPLE_POOL} test images of each saved model, up to {examples.EXAMPLES_SHOWN} per "
                "model, first those the attack turned from correct to wrong (red title). Illustrations of "
                "the budget only: the robustness figures come from the evaluation's own suite.",
                where,
            )
        )
    return section


def _tabular_examples(section: Section, where: str, records: examples.TabularRecords) -> None:
    header = ["field"]
    for r in records.records:
        side = r["sidecar"]
        if r["original"] is not None:
            header.append(f"row {side.get('row')}: line {side.get('line')}, original")
        header.append(f"row {side.get('row')}: {side.get('attack')} (margin {side.get('margin')})")
    rows = []
    for i, column in enumerate(records.columns):
        cells = [column]
        for r in records.records:
            changed = column in str(r["sidecar"].get("changed_fields", "")).split(";")
            value = r["adversarial"][i] if i < len(r["adversarial"]) else ""
            if r["original"] is not None:
                cells.append(r["original"][i] if i < len(r["original"]) else "")
            cells.append(Changed(value) if changed else value)
        rows.append(cells)
    of = "" if records.n_malicious is None else f" of {records.n_malicious} malicious rows"
    section.paragraphs.append(
        f"{where}: {records.n_written} evasions{of} written at eps {records.eps} to {records.file} (sidecar "
        f"{records.file.name}.lines.csv); the first {len(records.records)} are shown as written, the fields the "
        "attack changed highlighted. The label and extra columns are copied from the original row."
    )
    section.tables.append((f"{where}: evasion records", (header, rows)))


def _overview(sources: list[Source]) -> Section:
    sec = Section("overview", "Overview")
    rows = []
    for s in sources:
        for run in s.runs:
            prefix, r = run.prefix, run.results
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


def _md_cell(cell: str) -> str:
    text = cell.replace("|", "\\|")
    return f"**{text}**" if isinstance(cell, Changed) and text else text


def _md_table(title: str, table: Table) -> str:
    header, rows = table
    body = markdown_table(header, [[_md_cell(c) for c in r] for r in rows])
    return f"**{title}**\n\n{body}" if title else body


def _html_table(title: str, table: Table) -> str:
    header, rows = table
    cap = f"<caption>{html.escape(title)}</caption>" if title else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{_cls(c)}">{html.escape(c)}</td>' for c in r) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cls(cell: str) -> str:
    if isinstance(cell, Changed):
        return "changed"
    return {"SUSPECT": "suspect", "pass": "pass", "skipped": "skipped"}.get(cell, "")


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
nav a { margin-right: 1em; } table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; } img { max-width: 100%; }
td.suspect { background: #fdd; font-weight: bold; } td.pass { background: #dfd; } td.skipped { color: #888; }
td.changed { background: #ffe08a; font-weight: bold; } h3 { font-size: 1em; margin: 1.2em 0 0.3em; }
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
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            heading = f"<h3>{html.escape(f.title)}</h3>" if f.title and len(s.figures) > 1 else ""
            alt = html.escape(f"{s.title}: {f.title}" if f.title else s.title)
            parts.append(
                f'{heading}<figure><img id="fig-{f.id}" alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
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
        for f in s.figures:
            name = f"{image_dir.name}/{f.id}.png"
            images[name] = f.png
            if f.title and len(s.figures) > 1:
                out.append(f"### {f.title}\n")
            out.append(f"![{s.title}]({name})\n\n*{f.caption}*\n")
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
