"""Human-readable Markdown from results.json. Rendering only: every number comes from the results."""

from __future__ import annotations

from typing import Any


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def headline_title(results: dict[str, Any]) -> str:
    """The headline column's title: what the run's worst case (robust accuracy) is worth, short enough for an
    80-column table; :func:`headline_sentence` spells it out (see bastion.evaluation.headline)."""
    threat = results.get("threat", {})
    if "aa_grade" not in threat:
        return "ensemble"
    return "AA-grade" if threat["aa_grade"] else "upper bound"


def _headline_cell(m: dict[str, Any], e: str, with_ci: bool, aa_run: bool) -> str:
    h = m.get("headline")
    if h is None:
        return _pct(m["robust_accuracy"].get("ensemble", {}).get(e))
    cell = _pct(h["robust_accuracy"].get(e)) + (_ci(h.get("robust_accuracy_ci", {}).get(e)) if with_ci else "")
    return cell + (" (upper bound)" if aa_run and not h["aa_grade"] else "")


def accuracy_rows(results: dict[str, Any], *, with_ci: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per model and eps; the headline (the worst case) first, then one column per
    attack, labelled as the weaker figures they are."""
    models = results["models"]
    aa_run = bool(results.get("threat", {}).get("aa_grade"))
    attacks = sorted({a for m in models.values() for a in m["robust_accuracy"] if a != "ensemble"})
    denominator = _denominator(results)
    clean = "clean" if denominator is None else f"clean ({denominator})"
    header = ["model", clean, "eps", headline_title(results), *attacks]
    rows = []
    for name, m in models.items():
        eps_keys = sorted({e for by in m["robust_accuracy"].values() for e in by}, key=float)
        if not eps_keys:
            rows.append([name, _pct(m["clean_accuracy"]), "-", "-", *["-" for _ in attacks]])
        cis = m.get("robust_accuracy_ci", {}) if with_ci else {}
        for e in eps_keys:
            rows.append(
                [
                    name,
                    _pct(m["clean_accuracy"]),
                    e,
                    _headline_cell(m, e, with_ci, aa_run),
                    *[_pct(m["robust_accuracy"].get(a, {}).get(e)) + _ci(cis.get(a, {}).get(e)) for a in attacks],
                ]
            )
    return header, rows


def model_tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per model for a terminal: one row per attack (the headline first), one column per
    eps, so the table stays narrow (80 columns) however many attacks the suite has; attacks the model was
    not run with are left out. The same cells as :func:`accuracy_rows`."""
    header, rows = accuracy_rows(results)
    tables = []
    for name in results["models"]:
        own = [r for r in rows if r[0] == name]
        if not own:
            continue
        cols = ["attack", *(f"eps {r[2]}" if r[2] != "-" else "eps" for r in own)]
        body = [[header[j], *(r[j] for r in own)] for j in range(3, len(header))]
        body = [body[0], *(b for b in body[1:] if any(c != "n/a" for c in b[1:]))]
        tables.append((f"{name} (clean {own[0][1]})", cols, body))
    return tables


def headline_sentence(results: dict[str, Any]) -> str:
    """How to read the headline column, in one sentence a reader cannot miss."""
    threat = results.get("threat", {})
    grade = threat.get("grade")
    if grade is None:
        return "`ensemble` = per-example worst case over the suite's attacks."
    if threat.get("aa_grade"):
        return (
            f"Robust accuracy is the {grade}: an example counts as robust only if it survives every attack. "
            "The single attacks beside it are weaker figures."
        )
    attacks = grade.split(": ", 1)[1] if ": " in grade else grade
    return (
        f"The headline robust accuracy is an upper bound ({attacks}): it overstates robustness and is not a "
        "robustness claim; rerun with `--suite standard` (AA-grade) for one."
    )


def _describe(transform: dict[str, Any]) -> str:
    options = ", ".join(f"{k}={v}" for k, v in transform.items() if k != "name")
    return f"{transform.get('name', '?')}({options})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; cells are already formatted strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _n_examples(results: dict[str, Any]) -> int:
    models = list(results["models"].values())
    return int(models[0].get("n_examples", 0)) if models else 0


def _denominator(results: dict[str, Any]) -> str | None:
    """The one denominator every model of the run states (tabular evasion), or None for plain accuracy."""
    found = {m.get("denominator") for m in results.get("models", {}).values()}
    return found.pop() if len(found) == 1 else None


def _intro(results: dict[str, Any]) -> list[str]:
    """Title, threat model and how to read the tables."""
    threat = results.get("threat", {})
    denominator = _denominator(results)
    meaning = (
        "Robust accuracy = share of test examples still classified correctly after the attack. "
        if denominator is None
        else f"Every figure of the accuracy table is the {denominator}, clean and under attack (test examples = "
        "the malicious rows); the false-positive rate on benign rows and the accuracy over all rows are in the "
        "Evasion section, labelled as such. "
    )
    return [
        f"# bastion {results.get('command', 'run')}: {results['data']}",
        "",
        f"Seed {results['seed']}; threat model {threat.get('norm', '?')} with eps in "
        f"{', '.join(threat.get('eps', [])) or 'n/a'} (inputs in [0, 1]); suite `{threat.get('suite', 'n/a')}`.",
        f"Test examples: {_n_examples(results)}. "
        f"{meaning}"
        f"{headline_sentence(results)} Brackets are 95% Wilson intervals.",
        *(
            [
                "The suite runs as a sequence: each attack only sees the examples every earlier attack failed "
                "on, so an attack's column is the accuracy after it and all earlier ones; "
                "records.json says which attack broke each example."
            ]
            if threat.get("sequential")
            else []
        ),
        "",
        "## Accuracy",
        "",
    ]


def training_section(results: dict[str, Any]) -> list[str]:
    """Training cost per trained model, and the stages of progressive schedules."""
    out: list[str] = []
    trained = {
        n: m["training"] for n, m in results["models"].items() if m.get("training") and not n.endswith("+defense")
    }
    if trained:
        out += [
            "",
            "## Training cost",
            "",
            markdown_table(
                ["model", "method", "gradient evaluations", "forward passes", "wall time (s)", "stages"],
                [
                    [
                        n,
                        t["method"],
                        f"{t['gradient_evaluations']:,}",
                        f"{t.get('forward_passes', 0):,}",
                        f"{t['wall_time_s']:.1f}",
                        str(len(t.get("schedule", []))),
                    ]
                    for n, t in trained.items()
                ],
            ),
        ]
        out.append("")
        out.append("Gradient evaluations count per-example backward passes (attack steps and weight updates).")
        for n, t in trained.items():
            if len(t.get("stages", [])) > 1:
                out += ["", f"Stages of `{n}`:", ""]
                out.append(
                    markdown_table(
                        ["stage", "epochs", "eps", "attack steps", "beta", "gradient evaluations"],
                        [
                            [
                                str(s["stage"] + 1),
                                str(s["epochs"]),
                                f"{s['eps']:.4g}",
                                str(s["n_steps"]),
                                f"{s['beta']:.3g}",
                                f"{s['gradient_evaluations']:,}",
                            ]
                            for s in t["stages"]
                        ],
                    )
                )
    return out


def defense_section(results: dict[str, Any]) -> list[str]:
    """One block per defended model: its transforms, detector calibration and failure rates."""
    out: list[str] = []
    for n, m in results["models"].items():
        d = m.get("defense")
        if not d:
            continue
        desc = d.get("description", {})
        det = desc.get("detector") or {}
        out += [
            "",
            f"## Runtime defense: `{n}`",
            "",
            f"Transforms: {', '.join(_describe(t) for t in desc.get('transforms', [])) or 'none'}; "
            f"detector: {det.get('kind', 'none')} calibrated to a target false-positive rate of "
            f"{_pct(det.get('target_fpr'))} on clean validation data.",
            f"Measured false-positive rate on clean test data: {_pct(d['false_positive_rate'])}. "
            f"Latency of the defended decision vs the bare model: {d.get('latency_ratio', 'n/a')}x.",
            "",
            "Suite attacks go through the transforms (BPDA) but ignore the detector (not detector-aware)."
            + (
                f" Adaptive attacks that target the defense: {', '.join(d.get('adaptive_attacks', []))}"
                " (BPDA/EOT through the transforms, a detector-aware objective, transfer from the undefended model)."
                if d.get("adaptive")
                else ""
            ),
            "",
        ]
        rows = []
        for attack, by_eps in d["failure_rate"].items():
            for e, fail in by_eps.items():
                auc = d["auroc"].get(attack, {}).get(e)
                rows.append(
                    [
                        attack,
                        e,
                        _pct(m["robust_accuracy"].get(attack, {}).get(e)),
                        _pct(d["detection_rate"].get(attack, {}).get(e)),
                        _pct(fail) + _ci(d.get("failure_rate_ci", {}).get(attack, {}).get(e)),
                        "n/a" if auc is None else f"{auc:.3f}",
                    ]
                )
        out.append(
            markdown_table(["attack", "eps", "robust acc.", "detected (of fooled)", "failure rate", "AUROC"], rows)
        )
        out.append("")
        out.append(
            "Failure rate = share of all test inputs that end misclassified and unflagged"
            + ("; `ensemble` = per-input worst case over all attacks." if "ensemble" in d["failure_rate"] else ".")
        )
    return out


def to_markdown(results: dict[str, Any]) -> str:
    """summary.md of a run: accuracy, training cost, runtime defense, tabular figures, checks, notes."""
    out = _intro(results)
    header, rows = accuracy_rows(results, with_ci=True)
    out.append(markdown_table(header, rows))
    out += training_section(results)
    out += defense_section(results)
    out += tabular_section(results)
    out += checks_section(results)
    notes = results.get("notes")
    if notes:
        out += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(out) + "\n"


def tabular_section(results: dict[str, Any]) -> list[str]:
    """Evasion on tabular security data: constrained vs unconstrained claims, validity, detection metrics."""
    models = {n: m["tabular"] for n, m in results["models"].items() if m.get("tabular")}
    if not models:
        return []
    out = [
        "",
        "## Evasion (malicious rows attacked toward the benign class)",
        "",
        "Robust = malicious rows still detected after the attack; an evasion counts only if the adversarial "
        "record passes the independent raw validator. `unconstrained` = the same attack in a plain [0, 1] box "
        "(what an attack ignoring the domain would claim). Precision / recall / MCC: malicious = positive, "
        "with the malicious rows replaced by their adversarial versions.",
        "",
    ]
    rows = []
    for name, t in models.items():
        clean = t.get("clean", {})
        rows.append(
            [name, "clean", "-", _pct(clean.get("detection_rate")), "-", "-", "-"]
            + [f"{clean.get(k, 0):.3f}" for k in ("precision", "recall", "mcc")]
        )
        for attack, by_eps in t["evasion_rate"].items():
            for e, rate in by_eps.items():
                free = t.get("unconstrained_robust_accuracy", {}).get(attack, {}).get(e)
                free_valid = t.get("unconstrained_valid_share", {}).get(attack, {}).get(e)
                rows.append(
                    [
                        name,
                        attack,
                        e,
                        _pct(None if rate is None else 1 - rate),
                        _pct(t.get("valid_share", {}).get(attack, {}).get(e)),
                        _pct(free),
                        _pct(free_valid),
                    ]
                    + [f"{t[k][attack][e]:.3f}" for k in ("precision", "recall", "mcc")]
                )
    header = ["model", "attack", "eps", "robust (detected)", "valid", "unconstrained claim", "unconstr. valid"]
    out.append(markdown_table([*header, "precision", "recall", "MCC"], rows))
    benign_rows = [
        [name, str(t.get("n_benign", "-")), _pct(t.get("false_positive_rate_benign")), _pct(t.get("accuracy_all_rows"))]
        for name, t in models.items()
        if "false_positive_rate_benign" in t
    ]
    if benign_rows:
        head = ["model", "benign rows", "false-positive rate (benign rows)", "accuracy (all rows, clean)"]
        out += ["", markdown_table(head, benign_rows)]
    return out


def checks_section(results: dict[str, Any]) -> list[str]:
    """The sanity checks (bastion.evaluation.checks): counts per model, and every SUSPECT one spelled out."""
    models = {n: m["checks"] for n, m in results["models"].items() if m.get("checks")}
    if not models:
        return []
    out = [
        "",
        "## Sanity checks",
        "",
        "SUSPECT = the numbers above show a classic sign of gradient masking or a weak attack (docs/checks.md).",
        "",
    ]
    rows = []
    for name, checks in models.items():
        counts = {s: sum(c["status"] == s for c in checks.values()) for s in ("pass", "SUSPECT", "skipped")}
        rows.append([name, *(str(counts[s]) for s in ("pass", "SUSPECT", "skipped"))])
    out.append(markdown_table(["model", "pass", "SUSPECT", "skipped"], rows))
    for name, checks in models.items():
        for code, c in checks.items():
            if c["status"] == "SUSPECT":
                out.append(f"- **SUSPECT** `{name}` {code}: {c['detail']}")
    return out
