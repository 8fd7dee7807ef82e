"""Figures from results.json and comparison.json, as PNG bytes (matplotlib, Agg: no display needed).

Rendering only: every number drawn comes from the results. Each function returns None when its input
holds nothing to draw, so a report shows only figures with data behind them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

#: label -> rows of (eps, accuracy, low, high): one robust-accuracy curve with its interval band.
Curves = Mapping[str, Sequence[tuple[float, float, float, float]]]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def worst_attack(robust: Mapping[str, Any]) -> str | None:
    """The per-example worst case when the suite had several attacks, else its only attack."""
    return "ensemble" if "ensemble" in robust else next(iter(robust), None)


def curves_from_results(
    results: Mapping[str, Any], prefix: str = ""
) -> dict[str, list[tuple[float, float, float, float]]]:
    """Worst-case robust accuracy vs eps per model with its Wilson interval; eps 0 is clean accuracy."""
    curves = {}
    for name, m in results["models"].items():
        worst = worst_attack(m["robust_accuracy"])
        if worst is None:
            continue
        ci = m.get("robust_accuracy_ci", {}).get(worst, {})
        clean_ci = m.get("clean_accuracy_ci") or [m["clean_accuracy"]] * 2
        rows = [(0.0, m["clean_accuracy"], *clean_ci)]
        for e, acc in sorted(m["robust_accuracy"][worst].items(), key=lambda kv: float(kv[0])):
            lo, hi = ci.get(e, [acc, acc])
            rows.append((float(e), acc, lo, hi))
        curves[prefix + name] = rows
    return curves


def curves_from_comparison(comparison: Mapping[str, Any]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Mean robust accuracy over seeds vs eps per (dataset, method), with the t interval of the mean."""
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for dataset, block in comparison["datasets"].items():
        for metric, m in block["metrics"].items():
            eps = 0.0 if metric == "clean" else float(metric.split("@", 1)[1])
            for method, s in m["by_method"].items():
                iv = s["interval"]
                lo = iv["low"] if iv["low"] is not None and iv["low"] == iv["low"] else iv["mean"]
                hi = iv["high"] if iv["high"] is not None and iv["high"] == iv["high"] else iv["mean"]
                curves.setdefault(f"{method} ({dataset})", []).append((eps, iv["mean"], lo, hi))
    return {k: sorted(v) for k, v in curves.items()}


def robust_vs_eps(curves: Curves, title: str, interval: str) -> bytes | None:
    """Accuracy vs eps, one line per model, shaded by ``interval`` (named in the y label)."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in curves.items():
        eps, acc, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
        (line,) = ax.plot(eps, 100 * acc, marker="o", label=label)
        ax.fill_between(eps, 100 * lo, 100 * hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("eps (model-space units; 0 = clean)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{title}\n(bands: {interval})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def per_class(results: Mapping[str, Any]) -> bytes | None:
    """Clean and worst-case robust accuracy per class at the largest eps, one panel per model."""
    models = {n: m for n, m in results["models"].items() if m.get("robust_accuracy_per_class", {}).get("by_eps")}
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(7.5, 2.6 * len(models)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], models.items(), strict=True):
        block = m["robust_accuracy_per_class"]
        eps = max(block["by_eps"], key=float)
        clean = np.array([np.nan if v is None else v for v in m["clean_accuracy_per_class"]], dtype=float)
        robust = np.array([np.nan if v is None else v for v in block["by_eps"][eps]], dtype=float)
        idx = np.arange(len(clean))
        ax.bar(idx - 0.2, 100 * clean, width=0.4, label="clean")
        ax.bar(idx + 0.2, 100 * robust, width=0.4, label=f"{block['attack']} eps {eps}")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 125)
        ax.set_yticks(range(0, 101, 20))
        ax.set_xticks(idx)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    axes[-1, 0].set_xlabel("class")
    fig.tight_layout()
    return _png(fig)


def detector_roc(results: Mapping[str, Any]) -> bytes | None:
    """ROC of each defended model's detector: clean (negative) vs successful adversarial inputs."""
    rocs = {n: m["defense"]["roc"] for n, m in results["models"].items() if m.get("defense", {}).get("roc")}
    if not rocs:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, by_attack in rocs.items():
        for attack, by_eps in by_attack.items():
            for eps, pts in by_eps.items():
                if pts:
                    auc = results["models"][name]["defense"].get("auroc", {}).get(attack, {}).get(eps)
                    label = f"{attack} eps {eps}" + ("" if auc is None else f" (AUROC {auc:.2f})")
                    ax.plot(pts["fpr"], pts["tpr"], label=label if len(rocs) == 1 else f"{name}: {label}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false-positive rate (clean test inputs)")
    ax.set_ylabel("true-positive rate (successful adversarial inputs)")
    ax.set_title("Detector ROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def transfer_heatmap(transfer: Mapping[str, Any] | None) -> bytes | None:
    """Accuracy of each target (columns) on examples crafted on each source (rows)."""
    if not transfer or not transfer.get("accuracy"):
        return None
    matrix = transfer["accuracy"]
    sources = list(matrix)
    targets = list(next(iter(matrix.values())))
    values = np.array([[matrix[s][t] for t in targets] for s in sources], dtype=float) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(targets), 1.4 + 0.9 * len(sources)))
    im = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for i in range(len(sources)):
        for j in range(len(targets)):
            ax.text(
                j, i, f"{values[i, j]:.0f}%", ha="center", va="center", color="white" if values[i, j] < 60 else "black"
            )
    ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target model (accuracy)")
    ax.set_ylabel("source model (crafted on)")
    ax.set_title(f"Transfer: {transfer.get('attack', '?')} eps {transfer.get('eps', '?')}", fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    return _png(fig)


def training_curves(results: Mapping[str, Any]) -> bytes | None:
    """Per trained model: loss and accuracies per epoch, each stage of the schedule shaded."""
    models = {
        n: m["training"]["history"]
        for n, m in results["models"].items()
        if m.get("training", {}).get("history") and not n.endswith("+defense")
    }
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 2, figsize=(9, 2.8 * len(models)), squeeze=False)
    for (ax_loss, ax_acc), (name, history) in zip(axes, models.items(), strict=True):
        epochs = [h["epoch"] + 1 for h in history]
        for ax in (ax_loss, ax_acc):
            for stage in sorted({h.get("stage", 0) for h in history}):
                in_stage = [h["epoch"] + 1 for h in history if h.get("stage", 0) == stage]
                ax.axvspan(min(in_stage) - 0.5, max(in_stage) + 0.5, color=f"C{stage % 10}", alpha=0.08)
                ax.text(
                    min(in_stage) - 0.4,
                    0.98,
                    f"stage {stage + 1}",
                    transform=ax.get_xaxis_transform(),
                    fontsize=6,
                    va="top",
                )
        ax_loss.plot(epochs, [h["loss"] for h in history], marker=".", color="black")
        ax_loss.set_ylabel("training loss")
        ax_loss.set_title(name, fontsize=9)
        for key, label in (
            ("acc", "train acc."),
            ("adv_acc", "train adversarial acc."),
            ("val_clean_acc", "val clean"),
            ("val_robust_acc", "val robust"),
        ):
            pts = [(h["epoch"] + 1, h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax_acc.plot(*zip(*pts, strict=True), marker=".", label=label)
        ax_acc.set_ylabel("accuracy")
        if ax_acc.lines:
            ax_acc.legend(fontsize=7)
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (cost no higher and accuracy no lower, one strictly)."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a and (c2 < c or a2 > a)) for j, (c2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def cost_pareto(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Robust accuracy vs training cost (gradient evaluations, wall time, peak memory when measured).

    ``rows``: dicts with label, robust (share), eps, gradient_evaluations, wall_time_s, optional peak_rss_mb.
    """
    rows = [r for r in rows if r.get("robust") is not None]
    if not rows:
        return None
    costs = [("gradient_evaluations", "training gradient evaluations"), ("wall_time_s", "training wall time (s)")]
    if all(r.get("peak_rss_mb") for r in rows):
        costs.append(("peak_rss_mb", "peak resident memory (MB)"))
    fig, axes = plt.subplots(1, len(costs), figsize=(4.4 * len(costs), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], costs, strict=True):
        pts = [(float(r[key]), float(r["robust"])) for r in rows]
        for (c, a), r in zip(pts, rows, strict=True):
            ax.scatter(c, 100 * a, s=25)
            ax.annotate(r["label"], (c, 100 * a), fontsize=6, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(pts)
        ax.plot(
            [pts[i][0] for i in front],
            [100 * pts[i][1] for i in front],
            color="black",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
        )
        ax.set_xlabel(label)
        ax.set_ylabel(f"robust accuracy (%) at eps {rows[0].get('eps', '?')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def cost_rows(results: Mapping[str, Any], prefix: str = "", peak_rss_mb: float | None = None) -> list[dict[str, Any]]:
    """Cost-vs-robustness points of a run: trained models with their worst-case accuracy at the largest eps."""
    rows = []
    for name, m in results["models"].items():
        t = m.get("training")
        worst = worst_attack(m["robust_accuracy"])
        if not t or worst is None or not m["robust_accuracy"][worst]:
            continue
        eps = max(m["robust_accuracy"][worst], key=float)
        rows.append(
            {
                "label": prefix + name,
                "robust": m["robust_accuracy"][worst][eps],
                "eps": eps,
                "gradient_evaluations": t["gradient_evaluations"],
                "wall_time_s": t["wall_time_s"],
                "peak_rss_mb": peak_rss_mb,
            }
        )
    return rows
