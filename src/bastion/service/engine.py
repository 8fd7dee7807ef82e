"""The service's model call: a batch of model-space inputs -> one JSON-ready result per input."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bastion.artifacts.bundle import Bundle
from bastion.data.spec import DatasetSpec
from bastion.defenses.ensemble import AdaptiveEnsemble
from bastion.defenses.pipeline import ACTIONS, REJECT, Defense


class Predictor:
    """``decide`` of a runtime defense, rendered per input.

    Args:
        defense: the runtime defense; a Defense without detectors serves the bare model (every input
            accepted, no anomaly score).
        spec: the dataset spec (class names).
    """

    def __init__(self, defense: Defense, spec: DatasetSpec) -> None:
        self.defense = defense
        self.spec = spec

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, defend: bool = True) -> Predictor:
        """The bundle's defense, or (``defend=False`` or none saved) the bare model behind its domain check."""
        if defend and bundle.defense is not None:
            return cls(bundle.defense, bundle.spec)
        return cls(Defense(bundle.model, domain=bundle.spec.domain), bundle.spec)

    @property
    def defended(self) -> bool:
        return self.defense.detector is not None or bool(self.defense.transforms)

    def _votes(self, x: Tensor) -> list[list[int]] | None:
        model = self.defense.model
        if not isinstance(model, AdaptiveEnsemble):
            return None
        for t in self.defense.transforms:
            x = t(x)
        member_probs = model.explain(x).member_probs  # (M, N, C)
        return member_probs.argmax(dim=2).T.tolist()

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> list[dict[str, Any]]:
        decision = self.defense.decide(x)
        assert decision.probabilities is not None and decision.actions is not None
        votes = self._votes(x)
        out = []
        for i, (label, action) in enumerate(zip(decision.labels.tolist(), decision.actions.tolist(), strict=True)):
            score = float(decision.scores[i])
            rejected = action == REJECT
            out.append(
                {
                    "label": None if rejected else label,
                    "class_name": None if rejected else self.spec.classes[label],
                    "probabilities": decision.probabilities[i].tolist(),
                    "anomaly_score": score if math.isfinite(score) else None,
                    "decision": ACTIONS[action],
                    "votes": None if votes is None else votes[i],
                }
            )
        return out
