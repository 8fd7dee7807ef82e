"""Configs: unknown keys and bad values fail with a message naming them; options override the file."""

from __future__ import annotations

import pytest

from bastion.app.config import DemoConfig, EvalConfig, TrainConfig
from bastion.errors import ConfigError


def test_unknown_key_is_named(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        TrainConfig.from_yaml(path)


def test_nested_unknown_key_is_named(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("defense:\n  bits: 3\n")
    with pytest.raises(ConfigError, match="'defense.bits'"):
        DemoConfig.from_yaml(path)


def test_options_override_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\neps: 0.05\n")
    cfg = TrainConfig.from_yaml(path, eps=0.2, epochs=None)
    assert cfg.epochs == 3 and cfg.eps == 0.2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("eps: -0.1\n", "'eps'"),
        ("epochs: 0\n", "'epochs'"),
        ("norm: l3\n", "'norm'"),
        ("- 1\n- 2\n", "mapping"),
        ("eps: [0.1\n", "not valid YAML"),
    ],
)
def test_bad_values_are_named(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_yaml(path)


def test_negative_eval_eps_rejected() -> None:
    with pytest.raises(ConfigError, match="eps must be >= 0"):
        EvalConfig.from_yaml(None, eps=[0.1, -0.2])


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_dataclass_settings_take_their_fields_from_a_flat_config() -> None:
    from bastion.training import MethodConfig, TrainSettings

    cfg = TrainConfig.parse({"epochs": 4, "stages": [{"epochs": 4, "eps": 0.1}], "static_models": ["a", "b"]})
    method = MethodConfig.from_config(cfg.model_dump())
    assert method.epochs == 4 and method.stages == ({"epochs": 4, "eps": 0.1},) and method.static_models == ("a", "b")
    settings = TrainSettings.from_config(cfg.model_dump())
    assert settings.batch_size == cfg.batch_size and settings.momentum == TrainSettings().momentum


def test_a_field_missing_from_the_config_is_an_error() -> None:
    from bastion.training import MethodConfig, TrainSettings

    flat = TrainConfig().model_dump()
    del flat["beta"], flat["lr"]
    with pytest.raises(ConfigError, match="lacks beta, needed by MethodConfig"):
        MethodConfig.from_config(flat)
    with pytest.raises(ConfigError, match="lacks lr, needed by TrainSettings"):
        TrainSettings.from_config(flat)
