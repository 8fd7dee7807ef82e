"""Image dataset SPECs (gtsrb, cifar10, fashion-mnist, imagefolder, npz) on fixture files written here."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bastion.data import DATASETS, Dataset, load_dataset
from bastion.data.formats import load_gtsrb
from bastion.data.source import DataSource, yes_no
from bastion.data.spec import DatasetSpec
from bastion.data.splits import grouped_split
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GTSRB decodes are cached under $BASTION_CACHE; keep the tests' caches out of the user's."""
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path / "cache"))


def check_image_dataset(data: Dataset, shape: tuple[int, ...], n_classes: int) -> None:
    """The contract every image SPEC shares with digits."""
    assert isinstance(data.spec, DatasetSpec) and data.spec.modality == "image"
    assert data.spec.input_shape == shape and data.spec.num_classes == n_classes
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32 and tuple(split.x.shape[1:]) == shape
        assert split.y.dtype == torch.int64
        if len(split):
            assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
            assert int(split.y.max()) < n_classes
            data.spec.check_inputs(split.x)


# --- GTSRB -------------------------------------------------------------------------------------------


def track_colour(class_id: int, track: int) -> tuple[int, int, int]:
    """A colour unique to (class, track), so a split's pixels say which tracks it holds."""
    return (5 * class_id + 5, 20 * track + 5, 200)


def ppm(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    return b"P6\n%d %d\n255\n" % (width, height) + pixels.astype(np.uint8).tobytes()


def write_gtsrb_train(root: Path, classes: dict[int, int], frames: int = 3) -> None:
    """``classes[c]`` tracks of ``frames`` frames each, at varying original sizes, as the official release."""
    for class_id, n_tracks in classes.items():
        folder = root / "Final_Training" / "Images" / f"{class_id:05d}"
        folder.mkdir(parents=True)
        rows = []
        for track in range(n_tracks):
            for frame in range(frames):
                side = 12 + 3 * frame
                name = f"{track:05d}_{frame:05d}.ppm"
                pixels = np.broadcast_to(np.array(track_colour(class_id, track), np.uint8), (side, side, 3))
                (folder / name).write_bytes(ppm(pixels))
                rows.append(f"{name};{side};{side};1;1;{side - 2};{side - 2};{class_id}")
        (folder / f"GT-{class_id:05d}.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def write_gtsrb_test(root: Path, labels: list[int]) -> None:
    folder = root / "Final_Test" / "Images"
    folder.mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        name = f"{i:05d}.ppm"
        (folder / name).write_bytes(ppm(np.full((14, 14, 3), 3 * label, np.uint8)))
        rows.append(f"{name};14;14;1;1;12;12;{label}")
    (folder / "GT-final_test.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def tracks_in(x: torch.Tensor) -> set[tuple[int, int]]:
    """(class, track) of every image, read back from its colour."""
    centre = (x[:, :, x.shape[2] // 2, x.shape[3] // 2] * 255).round().long()
    return {((int(r) - 5) // 5, (int(g) - 5) // 20) for r, g, _ in centre.tolist()}


def test_gtsrb_without_test_set_splits_by_track(tmp_path: Path) -> None:
    write_gtsrb_train(tmp_path, {0: 10, 3: 10, 42: 7})
    data = load_dataset(f"gtsrb:{tmp_path}", seed=1)
    check_image_dataset(data, (3, 32, 32), 43)
    assert data.spec.flip_preserves_label is False
    assert len(data.train) + len(data.val) + len(data.test) == 27 * 3
    train, val, test = tracks_in(data.train.x), tracks_in(data.val.x), tracks_in(data.test.x)
    assert not (train & val or train & test or val & test), "a physical track appears in two splits"
    assert len(train | val | test) == 27
    for class_id in (0, 3, 42):  # every class is represented in every split
        assert all(any(c == class_id for c, _ in part) for part in (train, val, test))
    # labels still match the pixels after the split and shuffle
    for split in (data.train, data.val, data.test):
        labels = (split.x[:, 0, 16, 16] * 255).round().long().sub(5).div(5, rounding_mode="floor")
        assert torch.equal(labels, split.y)
    assert data.split_info["n_tracks"] == 27
    again = load_dataset(f"gtsrb:{tmp_path}", seed=1)
    assert again.split_info["index_digest"] == data.split_info["index_digest"]
    assert torch.equal(again.test.x, data.test.x)
    other = load_dataset(f"gtsrb:{tmp_path}", seed=2)
    assert other.split_info["index_digest"] != data.split_info["index_digest"]


def test_gtsrb_official_test_set_is_the_test_split(tmp_path: Path) -> None:
    write_gtsrb_train(tmp_path / "GTSRB", {0: 10, 1: 10})
    write_gtsrb_test(tmp_path / "GTSRB", [0, 1, 1, 0, 1])
    data = load_dataset(f"gtsrb:{tmp_path}?size=16", seed=0)
    check_image_dataset(data, (3, 16, 16), 43)
    assert len(data.test) == 5 and sorted(data.test.y.tolist()) == [0, 0, 1, 1, 1]
    assert len(data.train) + len(data.val) == 60
    assert not tracks_in(data.train.x) & tracks_in(data.val.x)
    assert len(tracks_in(data.val.x)) == 2  # 10% of each class's 10 tracks


def test_gtsrb_test_only_folder_loads_for_evaluation(tmp_path: Path) -> None:
    write_gtsrb_test(tmp_path, [4, 2, 4])
    data = load_dataset(f"gtsrb:{tmp_path}", seed=0)
    assert len(data.train) == 0 and len(data.val) == 0 and len(data.test) == 3
    check_image_dataset(data, (3, 32, 32), 43)


def test_gtsrb_options(tmp_path: Path) -> None:
    write_gtsrb_train(tmp_path, {0: 4})
    plain = load_dataset(f"gtsrb:{tmp_path}", seed=0).spec
    cropped = load_dataset(f"gtsrb:{tmp_path}?roi=1&size=8", seed=0).spec
    assert cropped.input_shape == (3, 8, 8) and cropped.preprocessing == {"roi_crop": True}
    assert plain.preprocessing == {"roi_crop": False}
    # a model trained on ROI crops is never silently evaluated on uncropped images
    assert plain.fingerprint() != load_dataset(f"gtsrb:{tmp_path}?roi=1", seed=0).spec.fingerprint()
    assert DatasetSpec.from_dict(cropped.to_dict()) == cropped
    with pytest.raises(ConfigError, match="unknown option 'colour'.*roi, size"):
        load_dataset(f"gtsrb:{tmp_path}?colour=1", seed=0)
    with pytest.raises(ConfigError, match="'size'"):
        load_dataset(f"gtsrb:{tmp_path}?size=0", seed=0)
    with pytest.raises(ConfigError, match="'roi'"):
        load_dataset(f"gtsrb:{tmp_path}?roi=maybe", seed=0)
    with pytest.raises(DataNotFoundError, match="nowhere"):
        load_dataset(f"gtsrb:{tmp_path / 'nowhere'}?size=8", seed=0)


def test_gtsrb_csv_row_naming_a_missing_file(tmp_path: Path) -> None:
    write_gtsrb_train(tmp_path, {0: 2})
    (tmp_path / "Final_Training" / "Images" / "00000" / "00001_00002.ppm").unlink()
    with pytest.raises(DataNotFoundError, match=r"GT-00000\.csv:7: image file 00001_00002\.ppm does not exist"):
        load_dataset(f"gtsrb:{tmp_path}", seed=0)


def test_gtsrb_truncated_ppm(tmp_path: Path) -> None:
    write_gtsrb_train(tmp_path, {0: 2})
    path = tmp_path / "Final_Training" / "Images" / "00000" / "00000_00001.ppm"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match="truncated pixel data"):
        load_dataset(f"gtsrb:{tmp_path}", seed=0)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=30),
    n_classes=st.integers(1, 5),
    held_out=st.sampled_from([(0.1,), (0.1, 0.2), (0.25, 0.25)]),
    seed=st.integers(0, 2**16),
)
def test_grouped_split_never_shares_a_group(
    sizes: list[int], n_classes: int, held_out: tuple[float, ...], seed: int
) -> None:
    groups = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # arbitrary ids, contiguous runs
    y = np.repeat(np.arange(len(sizes)) % n_classes, sizes)
    parts = grouped_split(y, groups, held_out, seed)
    assert len(parts) == len(held_out) + 1
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))  # a partition of the examples
    owners = [set(groups[p].tolist()) for p in parts]
    for i in range(len(owners)):
        for j in range(i + 1, len(owners)):
            assert not owners[i] & owners[j]
    for label in np.unique(y):  # training always sees every class; big classes reach every split
        n_groups = len(set(groups[y == label].tolist()))
        assert label in y[parts[0]]
        if n_groups > 2 * len(held_out) + 2:
            assert all(label in y[p] for p in parts)
    again = grouped_split(y, groups, held_out, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_grouped_split_rejects_groups_spanning_classes() -> None:
    with pytest.raises(ValueError, match="group 1 holds examples of more than one class"):
        grouped_split(np.array([0, 1]), np.array([1, 1]), (0.5,), 0)
    with pytest.raises(ValueError, match="sum to < 1"):
        grouped_split(np.array([0]), np.array([1]), (0.5, 0.5), 0)


@pytest.mark.data
def test_real_gtsrb_two_classes_split_by_track(shared_data_dir: Path, tmp_path: Path) -> None:
    source = shared_data_dir / "gtsrb" / "GTSRB" / "Final_Training" / "Images"
    images = tmp_path / "two" / "Final_Training" / "Images"
    images.mkdir(parents=True)
    for class_dir in ("00000", "00019"):  # the two smallest classes: 7 tracks of 30 frames each
        (images / class_dir).symlink_to(source / class_dir, target_is_directory=True)
    raw = load_gtsrb(tmp_path / "two", cache_dir=tmp_path / "cache")
    assert sorted(set(raw.train_y.tolist())) == [0, 19]
    for seed in range(5):
        parts = grouped_split(raw.train_y, raw.train_tracks, (0.1, 0.2), seed)
        owners = [set(raw.train_tracks[p].tolist()) for p in parts]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert all({0, 19} <= set(raw.train_y[p].tolist()) for p in parts)
    data = load_dataset(f"gtsrb:{tmp_path / 'two'}", seed=0)
    check_image_dataset(data, (3, 32, 32), 43)
    assert len(data.train) + len(data.val) + len(data.test) == len(raw.train_y)
    assert data.split_info["n_tracks"] == len(set(raw.train_tracks.tolist()))


# --- CIFAR-10 ----------------------------------------------------------------------------------------


def cifar_batch(n_per_class: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n_per_class)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    blob = pickle.dumps({b"batch_label": b"x", b"labels": labels.tolist(), b"data": data}, protocol=2)
    return blob, data, labels


def write_cifar(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        blob, data, _ = cifar_batch(2, i)
        (folder / f"data_batch_{i}").write_bytes(blob)
        train.append(data)
    blob, test_data, _ = cifar_batch(1, 9)
    (folder / "test_batch").write_bytes(blob)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return np.concatenate(train), test_data


def test_cifar10_folder_and_archive(tmp_path: Path) -> None:
    train_rows, test_rows = write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset(f"cifar10:{tmp_path}", seed=0)
    check_image_dataset(data, (3, 32, 32), 10)
    assert data.spec.flip_preserves_label is True and data.spec.classes[0] == "airplane"
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 10)
    # pixels: the row's red plane becomes channel 0, scaled to [0, 1]
    expected = torch.from_numpy(test_rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    assert {tuple(row.flatten()[:8].tolist()) for row in expected} == {
        tuple(row.flatten()[:8].tolist()) for row in data.test.x
    }
    seen = torch.cat([data.train.x, data.val.x]).flatten(1)[:, :16].mul(255).round().to(torch.uint8)
    assert {bytes(r) for r in seen.numpy()} == {bytes(r[:16]) for r in train_rows}
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_dataset(f"cifar10:{archive}", seed=0)
    assert torch.equal(from_tar.train.x, data.train.x) and torch.equal(from_tar.test.y, data.test.y)


def test_cifar10_corrupted_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    (tmp_path / "c" / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing to load global"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", seed=0)
    assert not marker.exists()
    (tmp_path / "c" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X\x04")  # truncated pickle
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", seed=0)


def test_cifar10_takes_no_options(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c")
    with pytest.raises(ConfigError, match="unknown option 'size' in cifar10 SPEC"):
        load_dataset(f"cifar10:{tmp_path / 'c'}?size=16", seed=0)


# --- Fashion-MNIST -----------------------------------------------------------------------------------


def idx(array: np.ndarray, magic: bytes = b"\x00\x00\x08") -> bytes:
    header = magic + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_is_the_idx_loader_with_clothing_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 20).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx(rng.integers(0, 256, (200, 28, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(labels))
    data = load_dataset(f"fashion-mnist:{tmp_path}", seed=0)
    check_image_dataset(data, (1, 28, 28), 10)
    assert data.spec.name == "fashion-mnist" and data.spec.classes[9] == "Ankle boot"
    assert data.spec.flip_preserves_label is False
    assert data.spec.fingerprint() != load_dataset(f"mnist:{tmp_path}", seed=0).spec.fingerprint()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(labels, magic=b"\x01\x00\x08"))
    with pytest.raises(DataFormatError, match="bad IDX magic number"):
        load_dataset(f"fashion-mnist:{tmp_path}", seed=0)
    bad = labels.copy()
    bad[5] = 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(bad))
    with pytest.raises(DataFormatError, match="label 10 at index 5 is outside 0..9"):
        load_dataset(f"fashion-mnist:{tmp_path}", seed=0)


# --- image folders and .npz --------------------------------------------------------------------------


def test_imagefolder(tmp_path: Path) -> None:
    for c, name in enumerate(("cat", "dog", "eel")):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(np.full((8, 10, 3), 40 * c + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", seed=0)
    check_image_dataset(data, (3, 8, 10), 3)
    assert data.spec.classes == ("cat", "dog", "eel") and not data.spec.flip_preserves_label
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert torch.equal((data.test.x[:, 0, 0, 0] * 255).round().long() // 40, data.test.y)
    resized = load_dataset(f"imagefolder:{tmp_path}?size=4&flip=1", seed=0)
    assert resized.spec.input_shape == (3, 4, 4) and resized.spec.flip_preserves_label


def test_imagefolder_with_too_few_images_per_class(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DataFormatError, match="fewer than 5 examples"):
        load_dataset(f"imagefolder:{tmp_path}", seed=0)


def test_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 10)
    np.savez(tmp_path / "grey.npz", x=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), y=y)
    data = load_dataset(f"npz:{tmp_path / 'grey.npz'}", seed=0)
    check_image_dataset(data, (1, 6, 6), 4)
    assert data.spec.classes == ("0", "1", "2", "3")
    x = rng.random((40, 5, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x=x, y=y, class_names=np.array(["a", "b", "c", "d"]))
    rgb = load_dataset(f"npz:{tmp_path / 'rgb.npz'}?flip=1", seed=0)
    check_image_dataset(rgb, (3, 5, 5), 4)
    assert rgb.spec.classes == ("a", "b", "c", "d") and rgb.spec.flip_preserves_label
    pool = torch.from_numpy(x).permute(0, 3, 1, 2)
    assert any(torch.equal(pool[i], rgb.test.x[0]) for i in range(40))  # channels-last became (C, H, W)


def test_npz_bad_content(tmp_path: Path) -> None:
    y = np.tile(np.arange(2), 5)
    np.savez(tmp_path / "range.npz", x=np.full((10, 4, 4), 2.0, np.float32), y=y)
    with pytest.raises(DataFormatError, match=r"float pixels must lie in \[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'range.npz'}", seed=0)
    np.savez(tmp_path / "labels.npz", x=np.zeros((10, 4, 4), np.uint8), y=y * 2, class_names=np.array(["a", "b"]))
    with pytest.raises(DataFormatError, match="label 2 has no entry"):
        load_dataset(f"npz:{tmp_path / 'labels.npz'}", seed=0)


def test_spec_options_parsing() -> None:
    source = DataSource.parse("x:/a:b/c?size=3&flip=yes")
    assert source.location() == Path("/a:b/c")
    assert source.typed_options({"size": int, "flip": yes_no}) == {"size": 3, "flip": True}
    with pytest.raises(ConfigError, match="needs a value"):
        DataSource.parse("x:/a?size")
    with pytest.raises(ConfigError, match="needs a path"):
        DataSource.parse("gtsrb").location()
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("gtsrb", seed=0)


def test_every_image_spec_is_registered() -> None:
    assert {"gtsrb", "cifar10", "fashion-mnist", "imagefolder", "npz", "mnist", "digits"} <= set(DATASETS.names())
