"""Hostile data files, checkpoints and configs: each is a BastionError naming the problem (so the CLI exits 2
with a message), and every declared size is checked before anything is allocated."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bastion.app.config import EvalConfig, TrainConfig
from bastion.attacks import PGD
from bastion.cli import app
from bastion.config import StrictConfig
from bastion.data import Dataset, load_dataset
from bastion.data.formats.idx import read_idx
from bastion.data.splits import stratified_split
from bastion.defenses.pipeline import Defense
from bastion.defenses.store import load_defense
from bastion.errors import BastionError, CheckpointError, ConfigError, DataFormatError, InputValidationError
from bastion.goals import Misclassify
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel

runner = CliRunner()


def _idx(shape: tuple[int, ...], payload: bytes = b"", type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def _mnist_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx((n, 28, 28), bytes(n * 784)))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx((n,), bytes(n)))
    return root


# -- data files -------------------------------------------------------------------------------------------


def test_idx_with_zero_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no examples"):
        load_dataset(f"mnist:{_mnist_folder(tmp_path / 'm', 0)}")


def test_single_class_and_too_small_classes_are_clear_errors() -> None:
    with pytest.raises(DataFormatError, match="at least 2 classes"):
        stratified_split(np.zeros(50, dtype=np.int64), (0.7, 0.1, 0.2), 0, "nsl-kdd:x.txt")
    with pytest.raises(DataFormatError, match=r"classes \[1\] have fewer than 3"):
        stratified_split(np.array([0] * 50 + [1]), (0.7, 0.1, 0.2), 0, "malware:clamp.csv")  # one malware row
    with pytest.raises(DataFormatError, match="no examples"):
        stratified_split(np.zeros(0, dtype=np.int64), (0.7, 0.1, 0.2), 0, "nsl-kdd:empty.txt")


def test_idx_dims_whose_product_overflows_int64(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(_idx((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), bytes(10)))
    with pytest.raises(DataFormatError, match="truncated IDX data"):
        read_idx(path)


def test_gzip_idx_bomb_is_refused_before_decompressing(tmp_path: Path) -> None:
    """A header declaring more data than deflate can produce from the file is refused from the header alone;
    a header that under-declares is read only that far (never the whole stream)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = c.compress(_idx((10**6, 28, 28))) + c.compress(bytes(8 << 20)) + c.flush()  # 8 MB of zeros
    path = tmp_path / "bomb.gz"
    path.write_bytes(blob)
    with pytest.raises(DataFormatError, match="more than this .*-byte gzip file can hold"):
        read_idx(path)
    small = tmp_path / "under.gz"
    small.write_bytes(gzip.compress(_idx((2, 2), bytes(4)) + bytes(64 << 20)))  # 64 MB of trailing zeros
    with pytest.raises(DataFormatError, match="trailing bytes"):
        read_idx(small)


def test_npz_labels_cannot_declare_millions_of_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 8, 8), dtype=np.uint8), y=np.array([0, 1_000_000, 2_000_000]))
    with pytest.raises(DataFormatError, match="more than the limit"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("name", ["gtsrb", "imagefolder"])
def test_image_size_options_are_bounded(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be <= 1024"):
        load_dataset(f"{name}:{tmp_path}?size=100000")


def test_duplicate_spec_options_are_errors() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        load_dataset("gtsrb:/x?size=32&size=64")


# -- checkpoints ------------------------------------------------------------------------------------------


def _edit_model_json(run: Path, edit) -> None:
    path = run / "models" / "mlp" / "model.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("architecture"), "'architecture' is missing"),
        (lambda d: d["architecture"].update(mean=[0.0, 0.0]), "architecture.mean has 2 values"),
        (lambda d: d["architecture"]["options"].update(hidden=[10_000_000]), "does not fit the architecture"),
        (lambda d: d["architecture"]["options"].update(hidden=[-5]), "bad options"),
    ],
)
def test_model_json_is_checked_against_the_weights_before_allocating(tiny_run: Path, edit, message: str) -> None:
    _edit_model_json(tiny_run, edit)
    with pytest.raises(CheckpointError if "options" not in message else BastionError, match=message):
        checkpoint.load_model(tiny_run)


def test_model_json_without_dataset_is_a_clear_error(tiny_run: Path) -> None:
    _edit_model_json(tiny_run, lambda d: d.pop("dataset"))
    with pytest.raises(CheckpointError, match="'dataset' is missing"):
        checkpoint.load_spec(tiny_run)


def _defense_json(run: Path) -> Path:
    return run / "defenses" / "mlp" / "defense.json"


def test_defense_json_without_transforms_not_utf8_or_nan(tiny_run: Path) -> None:
    model = checkpoint.load_model(tiny_run)
    path = _defense_json(tiny_run)
    original = path.read_bytes()
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        load_defense(path.parent, model)
    path.write_bytes(original.replace(b'"policy": {', b'"policy": {"reject_threshold": NaN, "x": ', 1))
    with pytest.raises(CheckpointError, match="NaN is not allowed"):
        load_defense(path.parent, model)
    doc = json.loads(original)
    doc["format"] = 2  # a legacy file (no checksums): still structurally checked
    del doc["transforms"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="'transforms' is missing"):
        load_defense(path.parent, model)


# -- configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"lr": 1e30}, "lr"),
        ({"beta": float("inf")}, "beta"),
        ({"eps": float("nan")}, "eps"),
        ({"epochs": 3, "stages": [{"epochs": 2, "eps": 0.1}]}, "stages add up to 2"),
    ],
)
def test_train_config_values_are_refused_naming_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        TrainConfig.parse(options)


def test_stages_set_the_recorded_epochs() -> None:
    assert TrainConfig.parse({"stages": [{"epochs": 2, "eps": 0.1}, {"epochs": 3, "eps": 0.2}]}).epochs == 5


def test_budgets_agreeing_to_six_digits_are_refused() -> None:
    with pytest.raises(ConfigError, match="agree to 6 significant digits"):
        EvalConfig.parse({"eps": [0.1, 0.10000001]})
    assert EvalConfig.parse({"eps": [0.1, 0.1001]}).eps == [0.1, 0.1001]


def test_duplicate_yaml_keys_and_non_utf8_configs(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("epochs: 1\nmodel: mlp\nepochs: 5\n")
    with pytest.raises(ConfigError, match="duplicate key 'epochs' at line 3"):
        TrainConfig.from_yaml(dup)
    nested = tmp_path / "nested.yaml"
    nested.write_text("model_options:\n  hidden: [4]\n  hidden: [8]\n")
    with pytest.raises(ConfigError, match="duplicate key 'hidden'"):
        TrainConfig.from_yaml(nested)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"model: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        StrictConfig.from_yaml(latin)


def test_huge_or_negative_model_options_are_config_errors(digits: Dataset) -> None:
    for hidden in ([-5], [10_000_000]):
        arch = Architecture(
            name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.0,), std=(1.0,), options={"hidden": hidden}
        )
        with pytest.raises(ConfigError, match="bad options|parameters, more than the limit"):
            build_model(arch)


# -- CLI: exit 2 with a message, nothing written ----------------------------------------------------------


def test_cli_out_naming_a_file_exits_2(tiny_run: Path, tmp_path: Path) -> None:
    afile = tmp_path / "results"
    afile.write_text("mine")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "report.md").write_text("mine")  # a folder whose report.md is not from bastion
    for args in (
        ["train", "--out", str(afile), "--epochs", "1"],
        ["evaluate", str(tiny_run), "--out", str(afile)],
        ["report", str(tiny_run), "--out", str(afile)],  # an existing file not ending in .html
        ["report", str(tiny_run), "--out", str(foreign)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
        assert args[0] != "report" or "--out" in result.output
    assert afile.read_text() == "mine"
    assert [p.name for p in foreign.iterdir()] == ["report.md"] and (foreign / "report.md").read_text() == "mine"


def test_cli_bad_seed_exits_2_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for seed in ("-1", str(2**70)):
        result = runner.invoke(app, ["train", "--seed", seed, "--out", str(out)])
        assert result.exit_code == 2 and "seed" in result.output
    assert not out.exists()


def test_cli_beta_inf_leaves_no_half_written_run(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("beta: .inf\nepochs: 1\nmodel: mlp\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "beta" in result.output
    assert not out.exists()


# -- Python API -------------------------------------------------------------------------------------------


def test_attacks_and_decide_refuse_wrong_dtype_shape_and_empty_batches(tiny_model, digits: Dataset) -> None:
    x, y = digits.test.x[:4], digits.test.y[:4]
    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    with pytest.raises(InputValidationError, match="float64 but the model computes in torch.float32"):
        PGD(n_steps=2)(tiny_model, x.double(), Misclassify(y), threat)
    with pytest.raises(InputValidationError, match="does not fit the"):
        PGD(n_steps=2)(tiny_model, x[:, :, :4], Misclassify(y), threat)
    defense = Defense(tiny_model)
    with pytest.raises(InputValidationError, match="float64"):
        defense.decide(x.double())
    with pytest.raises(InputValidationError, match="does not fit the model"):
        defense.decide(torch.zeros(2, 3, 5, 5))
    with pytest.raises(InputValidationError, match="non-empty batch"):
        defense.decide(torch.zeros(0, 1, 8, 8))
    with pytest.raises(InputValidationError, match="empty batch"):
        PGD(n_steps=2)(tiny_model, x[:0], Misclassify(y[:0]), threat)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_float16_attacks_stay_inside_the_budget(tiny_arch, digits: Dataset, norm: str) -> None:
    model = build_model(tiny_arch, seed=0).half().eval()
    x, y = digits.test.x[:32].half(), digits.test.y[:32]
    threat = ThreatModel(norm=norm, eps=0.1 if norm == "linf" else 0.5, domain=digits.spec.domain)
    result = PGD(n_steps=3)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert float(threat.distance(result.x_adv.float(), x.float()).max()) <= threat.eps


def test_save_adversarial_on_image_models_is_an_error_not_ignored(tiny_run: Path, tmp_path: Path) -> None:
    from bastion.app.evaluate import run_evaluate

    cfg = EvalConfig.parse({"save_adversarial": str(tmp_path / "adv.csv"), "suite": "quick", "eps": [0.1]})
    with pytest.raises(ConfigError, match="--save-adversarial .* not supported"):
        run_evaluate(tiny_run, cfg, tmp_path / "ev")
    assert not (tmp_path / "ev").exists()
