"""One detector table: the config validates against it, build_defense builds from it, the loader restores from it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.app.config import DemoConfig
from bastion.data.spec import Split
from bastion.defenses.config import DefenseConfig
from bastion.defenses.detectors import DETECTORS, build_detector, detector_from_state
from bastion.defenses.store import build_defense
from bastion.errors import ConfigError, InputValidationError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
        self.head = nn.Linear(6, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_the_registry_holds_the_detectors_a_config_may_name() -> None:
    assert DETECTORS.names() == ["kde", "lid", "mahalanobis", "squeeze"]
    for name in DETECTORS.names():
        assert DefenseConfig(detectors=[name]).detectors == [name]
        detector = build_detector(name, Tiny(), 0.2)
        assert detector.target_fpr == 0.2 and detector.state_dict is not None


def test_an_unknown_detector_is_refused_with_the_registered_names(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown detector 'lof'; available: kde, lid, mahalanobis, squeeze"):
        DefenseConfig.parse({"detectors": ["mahalanobis", "lof"]})
    path = tmp_path / "demo.yaml"
    path.write_text("defense:\n  detectors: [disagreement]\n")
    with pytest.raises(ConfigError, match=r"'defense.detectors'.*unknown detector 'disagreement'"):
        DemoConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="unknown detector 'lof'; available: kde"):
        build_detector("lof", Tiny(), 0.1)


def test_a_saved_state_of_unknown_kind_names_every_known_kind() -> None:
    with pytest.raises(InputValidationError, match=r"known: disagreement, kde, lid, mahalanobis, squeeze, combined"):
        detector_from_state({"kind": "lof"}, Tiny())


def test_build_defense_takes_transforms_and_detectors_from_the_registries() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 1, 4, 4, generator=g), torch.arange(60) % 3
    cfg = DefenseConfig(bit_depth=4, median=2, jpeg_quality=80, detectors=["mahalanobis", "squeeze"], target_fpr=0.1)
    assert cfg.transform_specs() == [
        {"name": "bit-depth", "bits": 4},
        {"name": "median", "size": 2},
        {"name": "jpeg", "quality": 80},
    ]
    defense = build_defense(Tiny().eval(), cfg, Split(x[:40], y[:40]), Split(x[40:], y[40:]))
    assert [t.to_dict() for t in defense.transforms] == cfg.transform_specs()
    assert [type(m).__name__ for m in defense.detector.members] == ["MahalanobisDetector", "SqueezeDetector"]
    assert DefenseConfig(bit_depth=None).transform_specs() == []
