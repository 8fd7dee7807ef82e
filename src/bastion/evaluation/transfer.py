"""Transferability across model families and drift across attack families, for tabular security data.

``SklearnClassifier`` makes a fitted scikit-learn classifier (gradient boosting, random forest) look like
a bastion Classifier (model-space rows -> log-probabilities), so the gradient-free search attack can
craft examples on it as a black box and any crafted rows can be replayed against it.
``transfer_matrix`` replays each source's adversarial rows against every target model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.data.sources.nsl_kdd import NSL_KDD_FAMILIES, attack_drift
from bastion.data.tabular.table import TabularTable

Predictor = Callable[[Tensor], Tensor]


class SklearnClassifier:
    """Wrap ``estimator.predict_proba`` as x (N, D) -> log-probabilities (N, C); forward passes only.

    There is no gradient: a gradient attack on it fails loudly (the output does not require grad).
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def __call__(self, x: Tensor) -> Tensor:
        proba = self.estimator.predict_proba(x.detach().cpu().double().numpy())
        return torch.as_tensor(np.log(np.clip(proba, 1e-12, 1.0)), dtype=x.dtype, device=x.device)


def predicted(model: Predictor, x: Tensor, batch_size: int = 1024) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [model(x[i : i + batch_size]).argmax(1).cpu().numpy() for i in range(0, len(x), batch_size)]
        )


def transfer_matrix(
    crafted: Mapping[str, Tensor], targets: Mapping[str, Predictor], benign: int
) -> dict[str, dict[str, float]]:
    """source -> target -> evasion rate (share of the crafted malicious rows the target calls benign).

    The diagonal (a source replayed on its own model) is the white- or black-box evasion rate itself.
    """
    return {
        source: {name: round(float((predicted(model, x_adv) == benign).mean()), 6) for name, model in targets.items()}
        for source, x_adv in crafted.items()
    }


def drift_accuracy(
    models: Mapping[str, Predictor],
    x_test: Tensor,
    test: TabularTable,
    train: TabularTable,
    benign: int,
    families: Mapping[str, str] = NSL_KDD_FAMILIES,
) -> dict[str, Any]:
    """Detection rate on test attacks whose names occur in training versus names only in the test set,
    and accuracy on benign test rows, per model (binary labels: malicious = not benign)."""
    drift = attack_drift(train, test, families)
    names = test.raw_labels
    malicious = test.labels != benign
    unseen = np.isin(names, drift.unseen_names) & malicious
    seen = malicious & ~unseen
    out: dict[str, Any] = {
        "unseen_names": list(drift.unseen_names),
        "n_seen_attack_rows": int(seen.sum()),
        "n_unseen_attack_rows": int(unseen.sum()),
        "n_benign_rows": int((~malicious).sum()),
        "models": {},
    }
    for name, model in models.items():
        pred = predicted(model, x_test)
        detected = pred != benign
        out["models"][name] = {
            "seen_attack_detection": round(float(detected[seen].mean()), 6) if seen.any() else None,
            "unseen_attack_detection": round(float(detected[unseen].mean()), 6) if unseen.any() else None,
            "benign_accuracy": round(float((~detected[~malicious]).mean()), 6) if (~malicious).any() else None,
        }
    return out
