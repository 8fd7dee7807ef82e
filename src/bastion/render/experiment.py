"""Experiment comparisons for people: a mean [95% t interval] table per metric and one sentence per test.

The numbers come from ``comparison.json`` (written by ``bastion experiment``); this module only formats them.
"""

from __future__ import annotations

from typing import Any

from bastion.render.summary import markdown_table

EXPLANATION = (
    "Means over seeds with 95% Student-t intervals. Comparisons are paired by seed (paired t-test, Wilcoxon "
    "signed-rank) or by test example within a seed (McNemar); p-values are Holm-corrected within each family "
    "(one family per test and dataset); intervals are not adjusted."
)


def method_table(by_method: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): mean, 95% t interval, n and the values per method, in percent."""
    rows = []
    for method, s in by_method.items():
        iv = s["interval"]
        ci = "n/a" if iv["low"] is None else f"[{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"
        rows.append(
            [method, f"{100 * iv['mean']:.1f}%", ci, str(iv["n"]), ", ".join(f"{100 * v:.1f}" for v in s["values"])]
        )
    return ["method", "mean", "95% CI (t)", "n seeds", "values"], rows


def comparison_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """One sentence per test of each method pair: paired t, Wilcoxon, and McNemar per seed."""
    lines = []
    for row in comparisons:
        if "sentence" in row:
            w = row["wilcoxon"]
            lines += [
                row["sentence"],
                f"{row['a']} vs {row['b']}: Wilcoxon signed-rank p = {w['p_adjusted']:.3f} ({w['correction']}), "
                f"n = {w['n']} seeds, rank-biserial r = {w['effect_size']:.2f}",
            ]
        else:
            lines.append(f"{row['a']} vs {row['b']}: fewer than 2 paired seeds, no test across seeds")
        for mc in row["mcnemar"]:
            odds = "n/a" if mc["effect_size"] is None else f"{mc['effect_size']:.2f}"
            lines.append(
                f"{row['a']} vs {row['b']}, seed {mc['seed']}: {mc['test']}, n = {mc['n']} examples, difference "
                f"{100 * mc['difference']:+.1f} points, p = {mc['p_adjusted']:.3g} ({mc['correction']}), "
                f"odds ratio {odds}"
            )
    return lines


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as Markdown: a mean [95% t interval] table per metric and one sentence per test."""
    lines = [f"# Experiment `{comparison['experiment']}`", "", EXPLANATION]
    for dataset, block in comparison["datasets"].items():
        lines += ["", f"## {dataset}"]
        for metric, m in block["metrics"].items():
            lines += ["", f"### {metric}", "", markdown_table(*method_table(m["by_method"])), ""]
            lines += [f"- {line}" for line in comparison_lines(m["comparisons"])]
        t = block.get("transfer")
        if t:
            targets = list(next(iter(t["accuracy"].values())))
            rows = [[source, *(f"{100 * row[x]:.1f}%" for x in targets)] for source, row in t["accuracy"].items()]
            lines += [
                "",
                f"### Transfer ({t['attack']} at eps {t['eps']}, {t['n_examples']} examples; rows = source, "
                "accuracy of the column model)",
                "",
                markdown_table(["source", *targets], rows),
            ]
    return "\n".join(lines) + "\n"
