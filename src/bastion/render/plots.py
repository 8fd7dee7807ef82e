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

from bastion.evaluation.stats import wilson

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


def curves_from_comparison(
    comparison: Mapping[str, Any], dataset: str | None = None
) -> dict[str, list[tuple[float, float, float, float]]]:
    """Mean robust accuracy over seeds vs eps per (dataset, method), with the t interval of the mean;
    only ``dataset``'s methods when given."""
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, block in comparison["datasets"].items():
        if dataset is not None and name != dataset:
            continue
        for metric, m in block["metrics"].items():
            eps = 0.0 if metric == "clean" else float(metric.split("@", 1)[1])
            for method, s in m["by_method"].items():
                iv = s["interval"]
                lo = iv["low"] if iv["low"] is not None and iv["low"] == iv["low"] else iv["mean"]
                hi = iv["high"] if iv["high"] is not None and iv["high"] == iv["high"] else iv["mean"]
                label = method if dataset is not None else f"{method} ({name})"
                curves.setdefault(label, []).append((eps, iv["mean"], lo, hi))
    return {k: sorted(v) for k, v in curves.items()}


def robust_vs_eps(
    curves: Curves,
    title: str,
    interval: str,
    *,
    xlabel: str = "eps (model-space units; 0 = clean)",
    ylabel: str = "accuracy (%)",
) -> bytes | None:
    """Accuracy vs eps, one line per model, shaded by ``interval`` (named in the title). The curves must
    share one dataset and threat model: eps of different input spaces are not comparable on one axis."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in curves.items():
        eps, acc, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
        (line,) = ax.plot(eps, 100 * acc, marker="o", label=label)
        ax.fill_between(eps, 100 * lo, 100 * hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.set_title(f"{title}\n(bands: {interval})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _rate_bars(
    ax: Any, x: np.ndarray, rates: Sequence[float | None], counts: Sequence[int] | None, **style: Any
) -> None:
    """Bars of rates (%) with 95% Wilson error bars and "k/n" above each when the counts are known."""
    values = np.array([np.nan if r is None else r for r in rates], dtype=float)
    bars = ax.bar(x, 100 * values, **style)
    if counts is None:
        return
    ns = np.array([counts[i] if i < len(counts) else 0 for i in range(len(values))])
    ks = np.where(np.isnan(values), 0, np.round(np.nan_to_num(values) * ns)).astype(int)
    lo, hi = np.full(len(values), np.nan), np.full(len(values), np.nan)
    for i, (k, n) in enumerate(zip(ks, ns, strict=True)):
        if n > 0 and not np.isnan(values[i]):
            lo[i], hi[i] = wilson(int(k), int(n))
    err = np.vstack([100 * (values - lo), 100 * (hi - values)])
    ax.errorbar(
        x, 100 * values, yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="black", lw=0.7, capsize=1.5
    )
    for bar, k, n, top in zip(bars, ks, ns, 100 * np.nan_to_num(hi), strict=True):
        if n > 0:
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                top + 1.5,
                f"{k}/{n}",
                ha="center",
                va="bottom",
                fontsize=4.5,
                rotation=90,
            )


def per_class(
    results: Mapping[str, Any],
    counts: Mapping[str, Sequence[int] | None] | None = None,
    classes: Sequence[str] | None = None,
) -> bytes | None:
    """Clean and worst-case robust accuracy per class at the largest eps, one panel per model.

    ``counts``: model -> test examples per class; each bar then carries its 95% Wilson interval and
    "correct/n" (the rates alone hide that a class of 30 examples is uncertain by +-15 points).
    """
    models = {n: m for n, m in results["models"].items() if m.get("robust_accuracy_per_class", {}).get("by_eps")}
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(7.5, 2.9 * len(models)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], models.items(), strict=True):
        block = m["robust_accuracy_per_class"]
        eps = max(block["by_eps"], key=float)
        n_classes = len(m["clean_accuracy_per_class"])
        idx = np.arange(n_classes)
        known = (counts or {}).get(name)
        _rate_bars(ax, idx - 0.2, m["clean_accuracy_per_class"], known, width=0.4, label="clean")
        _rate_bars(ax, idx + 0.2, block["by_eps"][eps], known, width=0.4, label=f"{block['attack']} eps {eps}")
        intervals = "; bars: 95% Wilson intervals" if known is not None else "; counts unknown, no intervals"
        ax.set_title(name + intervals, fontsize=9)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 135)
        ax.set_yticks(range(0, 101, 20))
        names = [str(classes[i]) if classes is not None and i < len(classes) else str(i) for i in range(n_classes)]
        if known is not None:
            names = [f"{c}\nn={known[i] if i < len(known) else 0}" for i, c in enumerate(names)]
        ax.set_xticks(idx, names)
        ax.tick_params(axis="x", labelsize=6)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    axes[-1, 0].set_xlabel("class")
    fig.tight_layout()
    return _png(fig)


def adversarial_images(examples: Sequence[Any]) -> bytes | None:
    """Rows of (clean, adversarial, perturbation) triplets, one row per model (render.examples.ImageExamples).

    The perturbation is x_adv - x averaged over channels, on a diverging scale from -eps to +eps (L-inf)
    or its largest magnitude (other norms), so its size reads against the budget.
    """
    examples = [e for e in examples if len(e.x)]
    if not examples:
        return None
    k = max(len(e.x) for e in examples)
    fig, axes = plt.subplots(len(examples), 3 * k, figsize=(1.15 * 3 * k, 1.55 * len(examples)), squeeze=False)
    for row, e in zip(axes, examples, strict=True):
        for ax in row:
            ax.axis("off")
        for j in range(len(e.x)):
            clean, adv = e.x[j], e.x_adv[j]
            delta = (adv - clean).mean(axis=0)
            scale = e.eps if e.norm == "linf" else float(np.abs(delta).max()) or 1.0
            for col, (image, title) in enumerate(
                (
                    (clean, f"clean: {e.classes[e.pred_clean[j]]}"),
                    (adv, f"adv.: {e.classes[e.pred_adv[j]]}"),
                    (None, f"x_adv - x (±{scale:.3g})"),
                )
            ):
                ax = row[3 * j + col]
                if image is None:
                    ax.imshow(delta, cmap="RdBu_r", vmin=-scale, vmax=scale)
                elif image.shape[0] == 1:
                    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
                wrong = col == 1 and e.pred_adv[j] != e.y[j]
                ax.set_title(title, fontsize=6, color="firebrick" if wrong else "black")
        row[0].text(-0.15, 0.5, e.model, transform=row[0].transAxes, rotation=90, ha="right", va="center", fontsize=7)
    fig.suptitle(
        f"{examples[0].attack} at {examples[0].norm} eps {examples[0].eps:g}: clean, adversarial, perturbation",
        fontsize=8,
    )
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
