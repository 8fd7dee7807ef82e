"""Local intrinsic dimensionality (LID) detector (Ma et al. 2018, arXiv:1801.02613).

Adversarial regions have a higher local dimensionality than the clean data manifold. For each chosen
layer, LID is estimated from the distances to the k nearest neighbours in a clean reference batch with
the maximum-likelihood estimator ``LID = -(1/k * sum_i log(r_i / r_k))^-1``. Ma et al. combine the
per-layer LIDs with a logistic regression trained on adversarial examples; fitting here uses clean data
only, so the layers are combined by a single score instead: the mean of per-layer LIDs standardized by
their clean mean and standard deviation. The threshold on that score is calibrated to the target FPR.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import check_fpr, chunked, model_device, require_fitted, threshold_for_fpr
from bastion.errors import ConfigError, InputValidationError, NotFittedError


def lid_mle(distances: Tensor, k: int) -> Tensor:
    """(N,) MLE of LID from distances (N, R) to reference points; uses the k smallest of each row."""
    r = distances.topk(k, dim=1, largest=False).values.clamp_min(1e-12)  # ascending
    log_ratio = (r / r[:, -1:]).log().mean(dim=1)  # <= 0; 0 only when all k distances are equal
    return -1.0 / log_ratio.clamp_max(-1e-12)


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """(N, R) Euclidean distances with a finite gradient everywhere (unlike cdist at zero distance)."""
    d2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return d2.clamp_min(1e-12).sqrt()


def default_layers(model: nn.Module) -> list[str]:
    """Names of the pooling layers inside ``model.body`` (compact activations), if any.

    The penultimate features and the logits are always used in addition.
    """
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        return []
    return [f"body.{name}" for name, m in body.named_modules() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]


class LIDDetector:
    """LID over activations of ``layers`` + penultimate features + logits, against a clean reference batch.

    Args:
        model: a classifier with ``features(x)`` and ``head`` (every bastion model).
        target_fpr: share of clean inputs flagged after ``calibrate``.
        k: neighbours per estimate (Ma et al. use 10-20 with minibatches of 100).
        n_reference: clean training inputs kept as the reference batch.
        layers: module names (``model.named_modules``) whose outputs are also used; None = the pooling
            layers of ``model.body``.
        seed: picks the reference batch from the training inputs.
    """

    kind = "lid"
    randomized = False

    def __init__(
        self,
        model: Any,
        *,
        target_fpr: float = 0.05,
        k: int = 20,
        n_reference: int = 400,
        layers: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.target_fpr = check_fpr(target_fpr)
        self.k = k
        self.n_reference = n_reference
        self.layers = layers
        self.seed = seed
        self.reference_: list[Tensor] | None = None
        self.mean_: Tensor | None = None
        self.std_: Tensor | None = None
        self.threshold_: float | None = None

    def _layer_names(self) -> list[str]:
        return list(self.layers) if self.layers is not None else default_layers(self.model)

    def _activations(self, x: Tensor) -> list[Tensor]:
        """Flattened activations per layer: the hooked layers, then features, then logits."""
        modules = dict(self.model.named_modules())
        captured: list[Tensor] = []
        handles = []
        for name in self._layer_names():
            if name not in modules:
                raise ConfigError(f"LID layer {name!r} is not a module of the model")
            handles.append(modules[name].register_forward_hook(lambda _m, _i, out: captured.append(out)))
        try:
            feats = self.model.features(x)
        finally:
            for h in handles:
                h.remove()
        logits = self.model.head(feats)
        return [a.flatten(1) for a in (*captured, feats, logits)]

    def _lids(self, x: Tensor) -> Tensor:
        """(N, L) LID per layer, differentiable wrt x."""
        if self.reference_ is None:
            raise NotFittedError("LIDDetector used before fit")
        acts = self._activations(x)
        return torch.stack(
            [lid_mle(pairwise_distance(a, ref), self.k) for a, ref in zip(acts, self.reference_, strict=True)], dim=1
        )

    def fit(self, x: Tensor, y: Tensor | None = None) -> LIDDetector:
        """Keep ``n_reference`` clean inputs' activations; standardize on the other clean inputs."""
        if len(x) < self.n_reference + 2 * self.k:
            raise InputValidationError(
                f"LID needs more than n_reference + 2k = {self.n_reference + 2 * self.k} clean inputs, got {len(x)}"
            )
        if self.k < 2 or self.k > self.n_reference:
            raise ConfigError(f"k must be in 2..n_reference ({self.n_reference}), got {self.k}")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed)).to(x.device)
        ref_x, rest = x[order[: self.n_reference]], x[order[self.n_reference :]]
        with torch.no_grad(), evaluating(self.model):
            per_chunk = [self._activations(ref_x[i : i + 256]) for i in range(0, len(ref_x), 256)]
            self.reference_ = [torch.cat(layer) for layer in zip(*per_chunk, strict=True)]
            lids = chunked(self._lids, rest[: 4 * self.n_reference])
        self.mean_ = lids.mean(dim=0)
        self.std_ = lids.std(dim=0).clamp_min(1e-6)
        return self

    def soft_score(self, x: Tensor) -> Tensor:
        """(N,) mean standardized LID over layers, with its autograd graph wrt x."""
        if self.mean_ is None or self.std_ is None:
            raise NotFittedError("LIDDetector used before fit")
        mean, std = self.mean_, self.std_
        return chunked(lambda xs: ((self._lids(xs) - mean) / std).mean(dim=1), x)

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        with evaluating(self.model):
            return self.soft_score(x).float()

    def calibrate(self, x_clean: Tensor) -> LIDDetector:
        self.threshold_ = threshold_for_fpr(self.score(x_clean), self.target_fpr)
        return self

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > require_fitted(self.threshold_, "LIDDetector")

    def state_dict(self) -> dict[str, Any]:
        if self.reference_ is None or self.mean_ is None or self.std_ is None:
            raise NotFittedError("cannot save an unfitted LIDDetector")
        return {
            "kind": self.kind,
            "target_fpr": self.target_fpr,
            "k": self.k,
            "n_reference": self.n_reference,
            "layers": self._layer_names(),
            "seed": self.seed,
            "threshold": self.threshold_,
            "reference": [r.cpu() for r in self.reference_],
            "mean": self.mean_.cpu(),
            "std": self.std_.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> LIDDetector:
        if state.get("kind") != self.kind:
            raise InputValidationError(f"not a LID detector state: kind={state.get('kind')!r}")
        device = model_device(self.model)
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.k, self.n_reference, self.seed = int(state["k"]), int(state["n_reference"]), int(state["seed"])
        self.layers = list(state["layers"])
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        self.reference_ = [torch.as_tensor(r).to(device) for r in state["reference"]]
        self.mean_ = torch.as_tensor(state["mean"]).to(device)
        self.std_ = torch.as_tensor(state["std"]).to(device)
        return self
