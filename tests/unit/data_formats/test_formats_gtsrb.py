"""load_gtsrb on miniature GTSRB trees written here in the official (PPM) and PNG layouts."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bastion.data.formats import gtsrb
from bastion.data.formats.gtsrb import GTSRB_CLASS_NAMES, default_cache_dir, load_gtsrb
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
Entry = tuple[str, np.ndarray]  # file name, (H, W, 3) pixels


def ppm(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    return b"P6\n# test\n%d %d\n255\n" % (width, height) + pixels.astype(np.uint8).tobytes()


def solid(height: int, width: int, color: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (height, width, 3)).copy()


def framed(height: int, width: int, margin: int, inner: tuple[int, int, int]) -> np.ndarray:
    """Black image with an `inner`-coloured box; ROI (margin, margin, width-1-margin, height-1-margin)."""
    pixels = solid(height, width, (0, 0, 0))
    pixels[margin : height - margin, margin : width - margin] = inner
    return pixels


def row(name: str, pixels: np.ndarray, class_id: int, roi: tuple[int, int, int, int] | None = None) -> str:
    height, width, _ = pixels.shape
    x1, y1, x2, y2 = roi or (0, 0, width - 1, height - 1)
    return f"{name};{width};{height};{x1};{y1};{x2};{y2};{class_id}"


def write_train_class(images_dir: Path, class_id: int, entries: list[Entry], rows: list[str] | None = None) -> Path:
    class_dir = images_dir / f"{class_id:05d}"
    class_dir.mkdir(parents=True)
    for name, pixels in entries:
        (class_dir / name).write_bytes(ppm(pixels))
    lines = rows if rows is not None else [row(name, pixels, class_id) for name, pixels in entries]
    csv_path = class_dir / f"GT-{class_id:05d}.csv"
    csv_path.write_text("\n".join([HEADER, *lines]) + "\n")
    return csv_path


def write_test(root: Path, entries: list[tuple[str, np.ndarray, int]], *, csv_in_images: bool = True) -> Path:
    images = root / "Final_Test" / "Images"
    images.mkdir(parents=True)
    for name, pixels, _ in entries:
        (images / name).write_bytes(ppm(pixels))
    csv_path = (images if csv_in_images else root / "Final_Test") / "GT-final_test.csv"
    csv_path.write_text("\n".join([HEADER, *(row(name, px, c) for name, px, c in entries)]) + "\n")
    return csv_path


COLORS = {0: (255, 0, 0), 1: (0, 255, 0), 42: (0, 0, 255)}


@pytest.fixture
def official(tmp_path: Path) -> Path:
    """Classes 0, 1 and 42 (two tracks in class 0), plus a three-image test set; solid colours per class."""
    root = tmp_path / "data"
    images = root / "Final_Training" / "Images"
    write_train_class(
        images,
        0,
        [
            ("00000_00000.ppm", solid(30, 29, COLORS[0])),
            ("00000_00001.ppm", solid(40, 41, COLORS[0])),
            ("00003_00000.ppm", solid(17, 15, COLORS[0])),
        ],
    )
    write_train_class(images, 1, [("00000_00000.ppm", solid(20, 20, COLORS[1]))])
    write_train_class(images, 42, [("00007_00029.ppm", solid(50, 60, COLORS[42]))])
    write_test(root, [("00000.ppm", solid(25, 25, COLORS[42]), 42), ("00001.ppm", solid(33, 30, COLORS[1]), 1)])
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> np.ndarray:
        raise AssertionError(f"decoded {path} although the cache should have been used")

    monkeypatch.setattr(gtsrb, "decode_image", refuse)


def count_decoding(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real: Callable[[Path], np.ndarray] = gtsrb.decode_image

    def counting(path: Path) -> np.ndarray:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(gtsrb, "decode_image", counting)
    return calls


def test_official_layout(official: Path, cache: Path) -> None:
    data = load_gtsrb(official, size=8, cache_dir=cache)
    assert data.train_x.shape == (5, 8, 8, 3) and data.train_x.dtype == np.uint8
    np.testing.assert_array_equal(data.train_y, [0, 0, 0, 1, 42])
    assert data.train_y.dtype == np.int64 and data.train_tracks.dtype == np.int64
    np.testing.assert_array_equal(data.train_tracks, [0, 0, 3, 100_000, 4_200_007])
    for image, label in zip(data.train_x, data.train_y, strict=True):
        assert (image == COLORS[int(label)]).all()  # a solid colour stays solid through the resize
    assert data.test_x is not None and data.test_y is not None
    assert data.test_x.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(data.test_y, [42, 1])
    assert (data.test_x[1] == COLORS[1]).all()


def test_class_names() -> None:
    assert len(GTSRB_CLASS_NAMES) == 43 and len(set(GTSRB_CLASS_NAMES)) == 43
    assert GTSRB_CLASS_NAMES[0] == "speed limit 20"
    assert GTSRB_CLASS_NAMES[14] == "stop"
    assert GTSRB_CLASS_NAMES[42] == "end of no passing by vehicles over 3.5 tons"


def test_root_may_contain_gtsrb_folder(official: Path, cache: Path, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "GTSRB").symlink_to(official, target_is_directory=True)
    data = load_gtsrb(outer, size=4, cache_dir=cache, use_cache=False)
    assert data.train_x.shape == (5, 4, 4, 3)


def test_training_only_has_no_test_set(tmp_path: Path, cache: Path) -> None:
    write_train_class(tmp_path / "Final_Training" / "Images", 5, [("00001_00002.ppm", solid(9, 9, (1, 2, 3)))])
    data = load_gtsrb(tmp_path, size=4, cache_dir=cache)
    assert data.test_x is None and data.test_y is None
    np.testing.assert_array_equal(data.train_tracks, [500_001])


def test_test_only_gives_empty_training_arrays(tmp_path: Path, cache: Path) -> None:
    write_test(tmp_path, [("00000.ppm", solid(9, 9, (1, 2, 3)), 7)], csv_in_images=False)
    data = load_gtsrb(tmp_path, size=4, cache_dir=cache)
    assert data.train_x.shape == (0, 4, 4, 3) and data.train_y.shape == (0,)
    assert data.test_y is not None and data.test_y.tolist() == [7]


def test_roi_crop(tmp_path: Path, cache: Path) -> None:
    pixels = framed(30, 26, 5, (200, 100, 50))
    rows = [row("00000_00000.ppm", pixels, 3, roi=(5, 5, 20, 24))]
    write_train_class(tmp_path / "Final_Training" / "Images", 3, [("00000_00000.ppm", pixels)], rows)
    cropped = load_gtsrb(tmp_path, size=8, roi_crop=True, cache_dir=cache).train_x[0]
    assert (cropped == (200, 100, 50)).all()
    whole = load_gtsrb(tmp_path, size=8, roi_crop=False, cache_dir=cache).train_x[0]
    assert (whole[0, 0] == 0).all()


def test_missing_test_labels(official: Path, cache: Path) -> None:
    (official / "Final_Test" / "Images" / "GT-final_test.csv").rename(
        official / "Final_Test" / "Images" / "GT-final_test.test.csv"
    )
    with pytest.raises(DataNotFoundError, match=r"no test labels: GT-final_test\.csv not found"):
        load_gtsrb(official, cache_dir=cache)


def test_csv_row_naming_missing_file(tmp_path: Path, cache: Path) -> None:
    pixels = solid(10, 10, (9, 9, 9))
    rows = [row("00000_00000.ppm", pixels, 2), row("00000_00001.ppm", pixels, 2)]
    csv_path = write_train_class(tmp_path / "Final_Training" / "Images", 2, [("00000_00000.ppm", pixels)], rows)
    with pytest.raises(DataNotFoundError, match=rf"{csv_path}:3: image file 00000_00001\.ppm does not exist"):
        load_gtsrb(tmp_path, cache_dir=cache)


@pytest.mark.parametrize("class_id", [43, -1])
def test_class_id_out_of_range(tmp_path: Path, cache: Path, class_id: int) -> None:
    pixels = solid(10, 10, (9, 9, 9))
    rows = [row("00000_00000.ppm", pixels, 2), row("00000_00000.ppm", pixels, class_id)]
    csv_path = write_train_class(tmp_path / "Final_Training" / "Images", 2, [("00000_00000.ppm", pixels)], rows)
    with pytest.raises(DataFormatError, match=rf"{csv_path}:3: ClassId {class_id} is outside 0\.\.42"):
        load_gtsrb(tmp_path, cache_dir=cache)


def test_class_id_must_match_its_folder(tmp_path: Path, cache: Path) -> None:
    pixels = solid(10, 10, (9, 9, 9))
    write_train_class(tmp_path / "Final_Training" / "Images", 2, [("a.ppm", pixels)], [row("a.ppm", pixels, 4)])
    with pytest.raises(DataFormatError, match=r":2: ClassId 4 in the annotation file of class 2"):
        load_gtsrb(tmp_path, cache_dir=cache)


def test_missing_columns(tmp_path: Path, cache: Path) -> None:
    csv_path = write_train_class(tmp_path / "Final_Training" / "Images", 0, [("a.ppm", solid(5, 5, (0, 0, 0)))])
    csv_path.write_text("Filename;Width;Height;ClassId\na.ppm;5;5;0\n")
    with pytest.raises(
        DataFormatError, match=r"GT-00000\.csv:1: missing column\(s\) Roi\.X1, Roi\.Y1, Roi\.X2, Roi\.Y2"
    ):
        load_gtsrb(tmp_path, cache_dir=cache)


def test_comma_separated_official_csv_is_a_missing_column_error(tmp_path: Path, cache: Path) -> None:
    csv_path = write_train_class(tmp_path / "Final_Training" / "Images", 0, [("a.ppm", solid(5, 5, (0, 0, 0)))])
    csv_path.write_text(HEADER.replace(";", ",") + "\na.ppm,5,5,0,0,4,4,0\n")
    with pytest.raises(DataFormatError, match="missing column"):
        load_gtsrb(tmp_path, cache_dir=cache)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("a.ppm;5;five;0;0;4;4;0", "Height is not an integer: 'five'"),
        ("a.ppm;5;5;0;0;4;4", "expected 8 fields, found 7"),
        ("a.ppm;5;5;0;0;5;6;0", r"ROI \(0, 0\)-\(5, 6\) does not fit a 5x5 image"),
        ("a.ppm;5;5;3;0;2;4;0", r"ROI \(3, 0\)-\(2, 4\) does not fit"),
        ("../a.ppm;5;5;0;0;4;4;0", "Filename '../a.ppm' must be a path inside"),
    ],
)
def test_bad_rows(tmp_path: Path, cache: Path, bad_row: str, message: str) -> None:
    csv_path = write_train_class(tmp_path / "Final_Training" / "Images", 0, [("a.ppm", solid(5, 5, (0, 0, 0)))])
    csv_path.write_text(f"{HEADER}\n\n{bad_row}\n")
    with pytest.raises(DataFormatError, match=rf"GT-00000\.csv:3: {message}"):
        load_gtsrb(tmp_path, cache_dir=cache)


def test_resized_copies_are_counted_and_their_roi_scaled(
    tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Annotated at 13x15 with a 3-pixel frame; the file on disk is the same picture at twice the size.
    original = framed(15, 13, 3, (90, 180, 30))
    stored = np.repeat(np.repeat(original, 2, axis=0), 2, axis=1)
    rows = [row("00000_00000.ppm", original, 0, roi=(3, 3, 9, 11))]
    write_train_class(tmp_path / "Final_Training" / "Images", 0, [("00000_00000.ppm", stored)], rows)
    with caplog.at_level("WARNING", logger="bastion.data.formats.gtsrb"):
        data = load_gtsrb(tmp_path, size=8, roi_crop=True, cache_dir=cache)
    assert data.n_size_mismatches == 1
    assert "1 of 1 images differ in size" in caplog.text and "26x30" in caplog.text
    assert (data.train_x[0] == (90, 180, 30)).all()
    assert load_gtsrb(tmp_path, size=8, roi_crop=True, cache_dir=cache).n_size_mismatches == 1  # cached


def test_matching_sizes_count_zero(official: Path, cache: Path) -> None:
    assert load_gtsrb(official, size=8, cache_dir=cache).n_size_mismatches == 0


def test_truncated_ppm_in_dataset(official: Path, cache: Path) -> None:
    path = official / "Final_Training" / "Images" / "00001" / "00000_00000.ppm"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match=r"00001/00000_00000\.ppm: truncated pixel data"):
        load_gtsrb(official, cache_dir=cache)


def test_class_folder_without_csv(official: Path, cache: Path) -> None:
    (official / "Final_Training" / "Images" / "00001" / "GT-00001.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"00001: annotation file GT-00001\.csv does not exist"):
        load_gtsrb(official, cache_dir=cache)


def test_no_gtsrb_layout(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no GTSRB data"):
        load_gtsrb(tmp_path)
    with pytest.raises(DataNotFoundError, match="GTSRB folder does not exist"):
        load_gtsrb(tmp_path / "absent")


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size(official: Path, size: object) -> None:
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        load_gtsrb(official, size=size)  # type: ignore[arg-type]


def test_png_layout(tmp_path: Path, cache: Path) -> None:
    entries = [
        ("Train/20/00020_00001_00002.png", solid(12, 14, (10, 20, 30)), 20),
        ("Train/20/00020_00004_00000.png", solid(30, 31, (10, 20, 30)), 20),
        ("Train/7/extra_image.png", solid(16, 16, (40, 50, 60)), 7),
        ("Train/7/other.png", solid(16, 16, (40, 50, 60)), 7),
    ]
    test_entries = [("Test/00000.png", solid(20, 18, (70, 80, 90)), 11)]
    header = "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"
    for csv_name, items in (("Train.csv", entries), ("Test.csv", test_entries)):
        lines = [header]
        for relative, pixels, class_id in items:
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / relative)
            height, width, _ = pixels.shape
            lines.append(f"{width},{height},1,1,{width - 2},{height - 2},{class_id},{relative}")
        (tmp_path / csv_name).write_text("\n".join(lines) + "\n")
    data = load_gtsrb(tmp_path, size=6, cache_dir=cache)
    assert data.train_x.shape == (4, 6, 6, 3)
    np.testing.assert_array_equal(data.train_y, [20, 20, 7, 7])
    untracked = 43 * 100_000
    np.testing.assert_array_equal(data.train_tracks, [2_000_001, 2_000_004, untracked + 2, untracked + 3])
    assert (data.train_x[2] == (40, 50, 60)).all()
    assert data.test_y is not None and data.test_y.tolist() == [11]
    assert data.test_x is not None and (data.test_x[0] == (70, 80, 90)).all()


def test_png_layout_missing_file(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "Train.csv").write_text(
        "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path\n5,5,0,0,4,4,1,Train/1/x.png\n"
    )
    with pytest.raises(DataNotFoundError, match=r"Train\.csv:2: image file Train/1/x\.png does not exist"):
        load_gtsrb(tmp_path, cache_dir=cache)


def test_second_load_comes_from_cache(official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_gtsrb(official, size=8, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    assert not [path for path in cache.iterdir() if path.suffix == ".tmp"]
    forbid_decoding(monkeypatch)
    second = load_gtsrb(official, size=8, cache_dir=cache)
    for name in ("train_x", "train_y", "train_tracks", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.class_names == GTSRB_CLASS_NAMES


def test_cache_without_test_set_round_trips_none(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_train_class(tmp_path / "Final_Training" / "Images", 5, [("00001_00002.ppm", solid(9, 9, (1, 2, 3)))])
    load_gtsrb(tmp_path, size=4, cache_dir=cache)
    forbid_decoding(monkeypatch)
    data = load_gtsrb(tmp_path, size=4, cache_dir=cache)
    assert data.test_x is None and data.test_y is None


def test_cache_invalidated_when_a_source_mtime_changes(
    official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_gtsrb(official, size=8, cache_dir=cache)
    path = official / "Final_Training" / "Images" / "00001" / "00000_00000.ppm"
    path.write_bytes(ppm(solid(20, 20, (1, 1, 1))))  # same size on disk, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = count_decoding(monkeypatch)
    data = load_gtsrb(official, size=8, cache_dir=cache)
    assert len(calls) == 7  # everything decoded again
    assert (data.train_x[3] == 1).all()
    assert len(list(cache.glob("*.npz"))) == 1  # the stale file was replaced, not joined
    calls.clear()
    load_gtsrb(official, size=8, cache_dir=cache)
    assert calls == []


def test_touching_a_source_alone_invalidates_the_cache(
    official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_gtsrb(official, size=8, cache_dir=cache)
    path = official / "Final_Test" / "Images" / "00001.ppm"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    calls = count_decoding(monkeypatch)
    load_gtsrb(official, size=8, cache_dir=cache)
    assert len(calls) == 7


def test_cache_invalidated_when_a_csv_changes(official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_gtsrb(official, size=8, cache_dir=cache)
    csv_path = official / "Final_Training" / "Images" / "00042" / "GT-00042.csv"
    csv_path.write_text(csv_path.read_text() + "\n")
    calls = count_decoding(monkeypatch)
    load_gtsrb(official, size=8, cache_dir=cache)
    assert calls


def test_options_are_part_of_the_key(official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_gtsrb(official, size=8, cache_dir=cache)
    calls = count_decoding(monkeypatch)
    assert load_gtsrb(official, size=4, cache_dir=cache).train_x.shape == (5, 4, 4, 3)
    load_gtsrb(official, size=8, roi_crop=True, cache_dir=cache)
    assert len(calls) == 14
    assert len(list(cache.glob("*.npz"))) == 3


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


@pytest.mark.parametrize("damage", [b"", b"not a zip file", b"PK\x03\x04truncated", npy_bytes()])
def test_corrupt_cache_is_rebuilt(official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, damage: bytes) -> None:
    expected = load_gtsrb(official, size=8, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(damage)
    calls = count_decoding(monkeypatch)
    data = load_gtsrb(official, size=8, cache_dir=cache)
    assert calls
    np.testing.assert_array_equal(data.train_x, expected.train_x)
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(load_gtsrb(official, size=8, cache_dir=cache).train_x, expected.train_x)


def test_cache_with_wrong_arrays_is_rebuilt(official: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_gtsrb(official, size=8, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    with np.load(cache_file) as npz:
        arrays = dict(npz)
    arrays["train_y"] = arrays["train_y"][:-1]
    with cache_file.open("wb") as handle:
        np.savez(handle, **arrays)
    calls = count_decoding(monkeypatch)
    assert load_gtsrb(official, size=8, cache_dir=cache).train_y.shape == (5,)
    assert calls


def test_use_cache_false_writes_nothing(official: Path, cache: Path) -> None:
    load_gtsrb(official, size=8, cache_dir=cache, use_cache=False)
    assert not cache.exists()


def test_unwritable_cache_dir_still_returns_data(official: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    assert load_gtsrb(official, size=8, cache_dir=blocker / "cache").train_x.shape == (5, 8, 8, 3)


def test_default_cache_dir_honours_bastion_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "gtsrb"
    monkeypatch.delenv("BASTION_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "bastion" / "gtsrb"


def test_real_gtsrb_two_classes(shared_data_dir: Path, tmp_path: Path) -> None:
    images = shared_data_dir / "gtsrb" / "GTSRB" / "Final_Training" / "Images"
    if not (images / "00000").is_dir() or not (images / "00019").is_dir():
        pytest.skip(f"GTSRB training classes 0 and 19 not in {images}")
    subset = tmp_path / "subset" / "Final_Training" / "Images"
    subset.mkdir(parents=True)
    for name in ("00000", "00019"):
        (subset / name).symlink_to(images / name, target_is_directory=True)
    data = load_gtsrb(tmp_path / "subset", size=32, use_cache=False)
    n = data.train_x.shape[0]
    assert data.train_x.shape == (n, 32, 32, 3) and n > 0
    assert set(np.unique(data.train_y)) == {0, 19}
    tracks_per_class = {c: np.unique(data.train_tracks[data.train_y == c]) for c in (0, 19)}
    assert all(len(tracks) * 30 == (data.train_y == c).sum() for c, tracks in tracks_per_class.items())
    assert data.test_x is None
    assert 20 < float(data.train_x.mean()) < 235
