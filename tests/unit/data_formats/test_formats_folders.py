"""load_image_folder on class-per-folder trees written here, and load_npz on archives written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bastion.data.formats.folders import load_image_folder, load_npz
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError


def solid(height: int, width: int, color: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (height, width, len(color))).copy()


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)
    return path


def netpbm(path: Path, pixels: np.ndarray) -> Path:
    height, width, channels = pixels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P%d %d %d 255\n" % (6 if channels == 3 else 5, width, height) + pixels.tobytes())
    return path


def test_class_per_folder(tmp_path: Path) -> None:
    save(tmp_path / "cat" / "b.png", solid(4, 5, (10, 20, 30)))
    save(tmp_path / "cat" / "a.bmp", solid(4, 5, (40, 50, 60)))
    netpbm(tmp_path / "ant" / "x.ppm", solid(4, 5, (1, 2, 3)))
    save(tmp_path / "dog" / "z.JPG", solid(4, 5, (128, 128, 128)))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    save(tmp_path / "dog" / ".hidden.png", solid(9, 9, (0, 0, 0)))
    save(tmp_path / ".git" / "y.png", solid(4, 5, (0, 0, 0)))
    save(tmp_path / "loose.png", solid(4, 5, (0, 0, 0)))
    data = load_image_folder(tmp_path)
    assert data.class_names == ("ant", "cat", "dog")
    assert data.files == ("ant/x.ppm", "cat/a.bmp", "cat/b.png", "dog/z.JPG")
    np.testing.assert_array_equal(data.y, [0, 1, 1, 2])
    assert data.x.shape == (4, 4, 5, 3) and data.x.dtype == np.uint8 and data.y.dtype == np.int64
    assert (data.x[0] == (1, 2, 3)).all() and (data.x[1] == (40, 50, 60)).all() and (data.x[2] == (10, 20, 30)).all()
    assert np.abs(data.x[3].astype(int) - 128).max() <= 2  # JPEG is lossy


def test_grey_folder_keeps_one_channel(tmp_path: Path) -> None:
    save(tmp_path / "a" / "1.png", solid(3, 3, (7,)))
    netpbm(tmp_path / "b" / "2.pgm", solid(3, 3, (9,)))
    data = load_image_folder(tmp_path)
    assert data.x.shape == (2, 3, 3, 1)
    assert data.x[:, 0, 0, 0].tolist() == [7, 9]


def test_mixed_shapes_need_size(tmp_path: Path) -> None:
    save(tmp_path / "a" / "small.png", solid(4, 4, (200, 0, 0)))
    save(tmp_path / "a" / "wide.png", solid(4, 8, (200, 0, 0)))
    with pytest.raises(DataFormatError, match=r"wide\.png: shape \(4, 8, 3\) differs .* pass size="):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, size=6)
    assert data.x.shape == (2, 6, 6, 3)
    assert (data.x == (200, 0, 0)).all()


def test_mixed_grey_and_colour(tmp_path: Path) -> None:
    save(tmp_path / "a" / "grey.png", solid(4, 4, (50,)))
    save(tmp_path / "a" / "rgb.png", solid(4, 4, (1, 2, 3)))
    with pytest.raises(DataFormatError, match="differs"):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, size=4)
    assert data.x.shape == (2, 4, 4, 3)
    assert (data.x[0] == 50).all()


def test_alpha_channel(tmp_path: Path) -> None:
    opaque = solid(3, 3, (5, 6, 7, 255))
    save(tmp_path / "a" / "opaque.png", opaque)
    assert (load_image_folder(tmp_path).x[0] == (5, 6, 7)).all()
    see_through = opaque.copy()
    see_through[1, 1, 3] = 0
    save(tmp_path / "a" / "z.png", see_through)
    with pytest.raises(DataFormatError, match=r"z\.png: image has transparent pixels"):
        load_image_folder(tmp_path)


def test_palette_image_becomes_rgb(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    Image.fromarray(solid(3, 3, (0, 0, 255))).convert("P").save(tmp_path / "c" / "p.png")
    data = load_image_folder(tmp_path)
    assert data.x.shape == (1, 3, 3, 3) and (data.x == (0, 0, 255)).all()


def test_sixteen_bit_grey_is_scaled(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    Image.fromarray(np.array([[0, 65535], [32768, 257]], dtype=np.uint16)).save(tmp_path / "c" / "d.png")
    data = load_image_folder(tmp_path)
    assert data.x.shape == (1, 2, 2, 1)
    assert data.x[0, :, :, 0].tolist() == [[0, 255], [128, 1]]


def test_undecodable_image(tmp_path: Path) -> None:
    save(tmp_path / "a" / "fine.png", solid(2, 2, (0, 0, 0)))
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataFormatError, match=r"broken\.png: cannot decode image"):
        load_image_folder(tmp_path)


def test_truncated_ppm_in_folder(tmp_path: Path) -> None:
    path = netpbm(tmp_path / "a" / "cut.ppm", solid(4, 4, (1, 1, 1)))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DataFormatError, match=r"cut\.ppm: truncated pixel data"):
        load_image_folder(tmp_path)


def test_empty_class_is_kept_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save(tmp_path / "b" / "1.png", solid(2, 2, (0, 0, 0)))
    (tmp_path / "a").mkdir()
    with caplog.at_level("WARNING"):
        data = load_image_folder(tmp_path)
    assert data.class_names == ("a", "b") and data.y.tolist() == [1]
    assert "holds no images" in caplog.text


def test_missing_or_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="image folder does not exist"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(DataNotFoundError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataNotFoundError, match="no images with suffix"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_bad_size(tmp_path: Path, size: object) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        load_image_folder(tmp_path, size=size)  # type: ignore[arg-type]


# --- load_npz -----------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 0], dtype=np.uint8), class_names=np.array(["no", "yes"]))
    data = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(data.x, x)
    assert data.y.dtype == np.int64 and data.y.tolist() == [1, 0]
    assert data.class_names == ("no", "yes")


def test_npz_float_images_without_names(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((3, 4, 4), dtype=np.float32), y=np.array([0, 5, 2]))
    data = load_npz(tmp_path / "d.npz")
    assert data.x.dtype == np.float32 and data.x.shape == (3, 4, 4) and data.class_names is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 3, 3))}, r"needs x and y, missing \['y'\]"),
        ({"x": np.zeros((1, 3, 3)), "y": np.zeros(1, int), "extra": np.zeros(1)}, r"unknown \['extra'\]"),
        (
            {"x": np.zeros((2, 3)), "y": np.zeros(2, int)},
            r"x must be \(N, H, W\) or \(N, H, W, C\), found shape \(2, 3\)",
        ),
        ({"x": np.zeros((2, 3, 3, 0)), "y": np.zeros(2, int)}, "x must be"),
        (
            {"x": np.zeros((2, 3, 3), np.int16), "y": np.zeros(2, int)},
            "x must be uint8 or floating, found int16",
        ),
        ({"x": np.full((1, 2, 2), np.nan), "y": np.zeros(1, int)}, "NaN or infinite"),
        ({"x": np.zeros((2, 3, 3)), "y": np.zeros(2)}, "y must be a 1-D integer array, found float64"),
        ({"x": np.zeros((2, 3, 3)), "y": np.zeros(3, int)}, "x has 2 samples but y has 3"),
        ({"x": np.zeros((2, 3, 3)), "y": np.array([0, -1])}, "label -1 is negative"),
        (
            {"x": np.zeros((2, 3, 3)), "y": np.array([0, 2]), "class_names": np.array(["a", "b"])},
            "label 2 has no entry in the 2 class_names",
        ),
        (
            {"x": np.zeros((1, 3, 3)), "y": np.zeros(1, int), "class_names": np.zeros(2)},
            "class_names must be",
        ),
    ],
)
def test_npz_validation(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=rf"bad\.npz: .*{message}"):
        load_npz(tmp_path / "bad.npz")


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.zeros((1, 2, 2)), y=np.array([0, None], dtype=object))
    with pytest.raises(DataFormatError, match=r"obj\.npz: cannot read arrays without pickle"):
        load_npz(tmp_path / "obj.npz")


def test_npz_wrong_container(tmp_path: Path) -> None:
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"found a single \.npy array"):
        load_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataFormatError, match=r"junk\.npz: cannot read as \.npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataNotFoundError, match=r"\.npz file does not exist"):
        load_npz(tmp_path / "absent.npz")
