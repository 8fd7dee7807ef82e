"""A RobustBench-style model card (``model_info/DATASET/THREAT/NAME.json``) from a run's results.json.

RobustBench lists a model by its clean accuracy and its AutoAttack accuracy at one eps, as percentage
strings, with the architecture, the dataset and whether extra training data was used (Croce et al. 2021,
arXiv:2010.09670). The card is written only from an AA-grade worst case (``headline.aa_grade``): a weaker
suite's figure is an upper bound and would rank the model above where it belongs. bastion's AA-grade suite
is not the AutoAttack package itself, and a run's test set is usually smaller than RobustBench's 10,000
images: the card says both (``attacks``, ``n_examples``, ``footnote``). Fields bastion cannot know
(``link``, ``authors``, ``venue``, ``reported``) are left for the author to add.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bastion.artifacts.bundle import DEFENSE_SUFFIX
from bastion.artifacts.results import environment, read_results
from bastion.errors import CheckpointError, ConfigError
from bastion.io import atomic_write_json
from bastion.models import checkpoint

#: bastion norm -> RobustBench threat model name.
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}


def percent(rate: float) -> str:
    """RobustBench's accuracy format: a percentage string with two decimals (``"53.42"``)."""
    return f"{100 * rate:.2f}"


def eps_text(eps: float, norm: str) -> str:
    """``8/255`` when an L-inf budget is a whole number of 8-bit pixel levels (RobustBench's form), else ``0.5``."""
    levels = eps * 255
    if norm == "linf" and eps > 0 and abs(levels - round(levels)) < 1e-4:
        return f"{round(levels)}/255"
    return f"{eps:g}"


def _choose(results: dict[str, Any], run: Path, name: str | None) -> str:
    """The named model, else the only model that is not a runtime defense."""
    models = results["models"]
    if name is not None:
        if name not in models:
            raise ConfigError(f"{run} has no model {name!r} in its results.json; available: {', '.join(models)}")
        if name.endswith(DEFENSE_SUFFIX):
            raise ConfigError(
                f"{name} is a detector-gated runtime defense, whose figure is a failure rate; RobustBench ranks "
                f"classifiers: export the bare model with --model {name.removesuffix(DEFENSE_SUFFIX)}"
            )
        return name
    bare = [n for n in models if not n.endswith(DEFENSE_SUFFIX)]
    if len(bare) == 1:
        return bare[0]
    raise ConfigError(f"{run} holds several models ({', '.join(bare)}); choose one with --model NAME")


def _architecture(entry: dict[str, Any], run: Path) -> tuple[str, str | None]:
    """(architecture, dataset name) from the model's folder (model.json) or a user model's record."""
    if isinstance(entry.get("model"), dict):  # evaluate module:PACKAGE.MODULE:FACTORY
        return str(entry["model"]["class"]), None
    path = Path(entry["path"])
    for folder in (path, run / path):
        try:
            description = checkpoint.read_description(folder)
        except CheckpointError:
            continue
        arch = description["architecture"]
        options = ", ".join(f"{k}={v}" for k, v in sorted(arch.get("options", {}).items()))
        return (f"{arch['name']} ({options})" if options else str(arch["name"])), description["dataset"].get("name")
    raise CheckpointError(
        f"{run}: the model folder {entry['path']} recorded in results.json is gone, so its architecture is unknown; "
        "export from where the run's models are"
    )


def model_card(run: str | Path, *, model: str | None = None, eps: float | None = None) -> dict[str, Any]:
    """The RobustBench-style card of one model of a run (or evaluation) folder.

    Args:
        run: a folder holding results.json (``train``/``demo`` runs, ``evaluate --out`` folders).
        model: which model; default the only one that is not a runtime defense.
        eps: which budget; default the only one evaluated.
    Raises:
        ConfigError: no AA-grade worst case (the suite was weaker, or nothing was attacked), an unknown
            model or eps, a runtime defense, or a norm RobustBench has no leaderboard for.
        CheckpointError: no readable results.json, or the model's folder is gone.
    """
    run = Path(run)
    results = read_results(run / "results.json")
    name = _choose(results, run, model)
    entry = results["models"][name]
    headline = entry.get("headline")
    if not headline or not headline.get("robust_accuracy"):
        raise ConfigError(
            f"{run}: {name} has no robustness evaluation in results.json; run `bastion evaluate {run} --suite "
            "standard --out EVAL` and export EVAL"
        )
    if not headline.get("aa_grade"):
        raise ConfigError(
            f"{run}: {name}'s worst case is not AA-grade ({headline.get('label')}); a RobustBench card needs the "
            f"AA-grade suite: run `bastion evaluate {run} --suite standard --out EVAL` and export EVAL"
        )
    threat = results.get("threat", {})
    norm = str(threat.get("norm", "linf"))
    if norm not in THREAT_MODELS:
        raise ConfigError(f"{run}: norm {norm!r} has no RobustBench leaderboard (only {', '.join(THREAT_MODELS)})")
    by_eps = headline["robust_accuracy"]
    key = _eps_key(by_eps, eps, run)
    architecture, dataset = _architecture(entry, run)
    training = entry.get("training")
    card: dict[str, Any] = {
        "name": name,
        "dataset": dataset or str(results["data"]).split(":", 1)[0],
        "threat_model": THREAT_MODELS[norm],
        "eps": eps_text(float(key), norm),
        "clean_acc": percent(entry["clean_accuracy"]),
        "autoattack_acc": percent(by_eps[key]),
        "architecture": architecture,
        "number_forward_passes": 1,
        "n_examples": entry["n_examples"],
        "attacks": list(threat.get("attacks", {})),
        "footnote": (
            f"Evaluated by bastion {environment()['bastion']}: per-example worst case of the AA-grade suite "
            f"'{headline.get('suite')}' ({', '.join(threat.get('attacks', {}))}) on {entry['n_examples']} test "
            "examples, not the AutoAttack package on the full test set."
        ),
        "bastion": {
            "results": str((run / "results.json").resolve()),
            "created": results.get("created"),
            "seed": results.get("seed"),
            "eps": key,
            "autoattack_acc_ci": headline.get("robust_accuracy_ci", {}).get(key),
            "suspect_checks": headline.get("suspect_checks", []),
        },
    }
    if training:  # a bastion-trained model saw only its dataset's training split
        card["additional_data"] = False
    return card


def _eps_key(by_eps: dict[str, float], eps: float | None, run: Path) -> str:
    keys = sorted(by_eps, key=float)
    if eps is None:
        if len(keys) == 1:
            return keys[0]
        raise ConfigError(f"{run} was evaluated at eps {', '.join(keys)}; a card states one: choose it with --eps")
    for key in keys:
        if math.isclose(float(key), eps, rel_tol=1e-5, abs_tol=1e-9):
            return key
    raise ConfigError(f"{run} was not evaluated at eps {eps:g}; it was at {', '.join(keys)}")


def export_model_card(
    run: str | Path, out: str | Path, *, model: str | None = None, eps: float | None = None, overwrite: bool = False
) -> Path:
    """Write :func:`model_card` atomically to ``out`` (a ``.json`` file) or ``out/NAME.json`` (a folder).

    Raises:
        ConfigError: as :func:`model_card`, or the file exists and ``overwrite`` is not set.
    """
    card = model_card(run, model=model, eps=eps)
    out = Path(out)
    path = out if out.suffix == ".json" else out / f"{card['name']}.json"
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a file; choose another --out")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--out {out}: {parent} is an existing file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, card)
