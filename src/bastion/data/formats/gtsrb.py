"""GTSRB reader: the official PPM release and the common PNG re-packaging, with a decode cache.

Decoding and resizing ~39k small files costs seconds of CPU on every run (far more from a cold disk), so
the resized arrays are cached as one .npz whose validity key covers every source file (relative path,
size, mtime_ns) and the options; any change to the data or options, or a damaged cache file, means a
rebuild rather than stale pixels.

Each image's physical track (30 frames of one sign, `TTTTT_FFFFF.ppm`) is returned so callers can split
by track: a random image-level split leaks near-duplicates into validation.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import posixpath
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bastion.data.formats.image import decode_image, resize, to_rgb
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError
from bastion.io import make_temp_file

__all__ = ["GTSRB_CLASS_NAMES", "GTSRBData", "default_cache_dir", "load_gtsrb"]

logger = logging.getLogger(__name__)

GTSRB_CLASS_NAMES: tuple[str, ...] = (
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for vehicles over 3.5 tons",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 tons prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 tons",
)
N_CLASSES = len(GTSRB_CLASS_NAMES)
# Track ids are made unique across classes as class_id * _TRACK_STRIDE + track; official track numbers
# have five digits. Images whose name carries no track get ids from N_CLASSES * _TRACK_STRIDE upwards.
_TRACK_STRIDE = 100_000
_CACHE_VERSION = 2
_GEOMETRY_COLUMNS = ("Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
# TTTTT_FFFFF (official PPM) or CCCCC_TTTTT_FFFFF (PNG re-packaging): the track is the second-to-last field.
_TRACK_NAME = re.compile(r"(?:\d{5}_)?(\d{5})_\d{5}")
_OFFICIAL_TEST_CSV = "GT-final_test.csv"


@dataclass(frozen=True)
class GTSRBData:
    """Resized GTSRB images, uint8 in [0, 255], channels last.

    Attributes:
        train_x: (N, size, size, 3); N = 0 when the root holds no training set.
        train_y: (N,) int64 class ids in 0..42.
        train_tracks: (N,) int64 physical-sign ids, unique across classes; split on these.
        test_x: (M, size, size, 3), or None without a test set.
        test_y: (M,) int64, or None without a test set.
        n_size_mismatches: images whose pixel size differs from their CSV Width/Height. Mirrors that
            re-encode every image (e.g. at 32x32) do this; the ROI is then scaled proportionally. On the
            original release it is 0, so a non-zero count on it means files were replaced.
        class_names: the 43 official sign names, indexed by class id.
    """

    train_x: NDArray[np.uint8]
    train_y: NDArray[np.int64]
    train_tracks: NDArray[np.int64]
    test_x: NDArray[np.uint8] | None
    test_y: NDArray[np.int64] | None
    n_size_mismatches: int = 0
    class_names: tuple[str, ...] = GTSRB_CLASS_NAMES


@dataclass(frozen=True)
class _Record:
    """One annotated image; csv and line say where it was declared, for error messages."""

    path: str  # for os.stat and decoding; str, because pathlib costs seconds over 39k files
    relative: str  # posix path relative to the dataset folder: the cache key's name for the file
    name: str  # as written in the CSV
    class_id: int
    width: int
    height: int
    roi: tuple[int, int, int, int]  # x1, y1, x2, y2; x2/y2 inclusive, or exclusive when equal to width/height
    track: int | None
    csv: Path
    line: int


def default_cache_dir() -> Path:
    """`$BASTION_CACHE/gtsrb` when the variable is set, else `~/.cache/bastion/gtsrb`."""
    base = os.environ.get("BASTION_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "bastion") / "gtsrb"


def _resolve_root(root: Path) -> tuple[Path, str]:
    """The folder holding the data and its layout, "official" (PPM) or "png" (Train.csv/Test.csv)."""
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: GTSRB folder does not exist")
    for base in (root, root / "GTSRB"):
        if (base / "Final_Training").is_dir() or (base / "Final_Test").is_dir():
            return base, "official"
        if (base / "Train.csv").is_file() or (base / "Test.csv").is_file():
            return base, "png"
    raise DataNotFoundError(
        f"{root}: no GTSRB data: expected Final_Training/ or Final_Test/ (official release) or Train.csv / "
        "Test.csv (PNG layout), directly or under GTSRB/"
    )


def _int_fields(row: list[str], indices: tuple[int, ...], csv_path: Path, line: int) -> list[int]:
    values = []
    for column, i in zip(_GEOMETRY_COLUMNS, indices, strict=True):
        try:
            values.append(int(row[i]))
        except ValueError:
            raise DataFormatError(f"{csv_path}:{line}: {column} is not an integer: {row[i].strip()!r}") from None
    return values


def _read_csv(
    csv_path: Path, *, delimiter: str, name_column: str, base: Path, image_dir: Path, folder_class: int | None
) -> list[_Record]:
    """Parse one GTSRB annotation CSV; image names in it are relative to image_dir, itself inside base."""
    required = (name_column, *_GEOMETRY_COLUMNS)
    records: list[_Record] = []
    folder = str(image_dir)
    prefix = image_dir.relative_to(base).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = [cell.strip() for cell in next(reader, [])]
        missing = [column for column in required if column not in header]
        if missing:
            raise DataFormatError(
                f"{csv_path}:1: missing column(s) {', '.join(missing)}; header is {delimiter.join(header)!r} "
                f"(expected {delimiter!r}-separated columns {', '.join(required)})"
            )
        geometry = tuple(header.index(column) for column in _GEOMETRY_COLUMNS)
        name_index = header.index(name_column)
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataFormatError(f"{csv_path}:{line}: expected {len(header)} fields, found {len(row)}")
            width, height, x1, y1, x2, y2, class_id = _int_fields(row, geometry, csv_path, line)
            if not 0 <= class_id < N_CLASSES:
                raise DataFormatError(f"{csv_path}:{line}: ClassId {class_id} is outside 0..{N_CLASSES - 1}")
            if folder_class is not None and class_id != folder_class:
                raise DataFormatError(
                    f"{csv_path}:{line}: ClassId {class_id} in the annotation file of class {folder_class}"
                )
            if width < 1 or height < 1:
                raise DataFormatError(f"{csv_path}:{line}: image size {width}x{height} is not positive")
            if not (0 <= x1 < width and x1 <= x2 <= width and 0 <= y1 < height and y1 <= y2 <= height):
                raise DataFormatError(
                    f"{csv_path}:{line}: ROI ({x1}, {y1})-({x2}, {y2}) does not fit a {width}x{height} image"
                )
            name = row[name_index].strip()
            parts = name.replace("\\", "/").split("/")
            if not name or posixpath.isabs(name) or ".." in parts or (len(name) > 1 and name[1] == ":"):
                raise DataFormatError(f"{csv_path}:{line}: {name_column} {name!r} must be a path inside {image_dir}")
            match = _TRACK_NAME.fullmatch(parts[-1].rsplit(".", 1)[0])
            records.append(
                _Record(
                    path=os.path.join(folder, *parts),
                    relative=prefix + "/".join(parts),
                    name=name,
                    class_id=class_id,
                    width=width,
                    height=height,
                    roi=(x1, y1, x2, y2),
                    track=int(match.group(1)) if match else None,
                    csv=csv_path,
                    line=line,
                )
            )
    return records


def _official_records(base: Path) -> tuple[list[_Record], list[_Record] | None, list[Path]]:
    train: list[_Record] = []
    csvs: list[Path] = []
    images = base / "Final_Training" / "Images"
    if (base / "Final_Training").is_dir():
        if not images.is_dir():
            raise DataNotFoundError(f"{images}: the official training layout needs this folder")
        class_dirs = sorted(entry for entry in images.iterdir() if entry.is_dir())
        if not class_dirs:
            raise DataNotFoundError(f"{images}: no class folders (00000 ... 00042)")
        for class_dir in class_dirs:
            csv_path = class_dir / f"GT-{class_dir.name}.csv"
            if not csv_path.is_file():
                raise DataNotFoundError(f"{class_dir}: annotation file {csv_path.name} does not exist")
            folder_class = int(class_dir.name) if class_dir.name.isdigit() else None
            train += _read_csv(
                csv_path,
                delimiter=";",
                name_column="Filename",
                base=base,
                image_dir=class_dir,
                folder_class=folder_class,
            )
            csvs.append(csv_path)
    test: list[_Record] | None = None
    test_dir = base / "Final_Test"
    if test_dir.is_dir():
        test_images = test_dir / "Images"
        candidates = (test_images / _OFFICIAL_TEST_CSV, test_dir / _OFFICIAL_TEST_CSV)
        test_csv = next((path for path in candidates if path.is_file()), None)
        if test_csv is None:
            raise DataNotFoundError(
                f"{test_dir}: no test labels: {_OFFICIAL_TEST_CSV} not found in {test_images} or {test_dir} "
                "(it ships separately, as GTSRB_Final_Test_GT.zip; GT-final_test.test.csv has no ClassId)"
            )
        test = _read_csv(
            test_csv,
            delimiter=";",
            name_column="Filename",
            base=base,
            image_dir=test_images,
            folder_class=None,
        )
        csvs.append(test_csv)
    return train, test, csvs


def _png_records(base: Path) -> tuple[list[_Record], list[_Record] | None, list[Path]]:
    train: list[_Record] = []
    test: list[_Record] | None = None
    csvs: list[Path] = []
    if (base / "Train.csv").is_file():
        train = _read_csv(
            base / "Train.csv",
            delimiter=",",
            name_column="Path",
            base=base,
            image_dir=base,
            folder_class=None,
        )
        csvs.append(base / "Train.csv")
    if (base / "Test.csv").is_file():
        test = _read_csv(
            base / "Test.csv", delimiter=",", name_column="Path", base=base, image_dir=base, folder_class=None
        )
        csvs.append(base / "Test.csv")
    return train, test, csvs


def _source_key(base: Path, layout: str, csvs: list[Path], records: list[_Record], size: int, roi_crop: bool) -> str:
    """Hash of the options and (relative path, size, mtime_ns) of every source file.

    Raises:
        DataNotFoundError: an annotated image is missing; names the CSV, its line and the file.
    """
    digest = hashlib.sha256()
    options = {"version": _CACHE_VERSION, "layout": layout, "size": size, "roi_crop": roi_crop}
    digest.update(json.dumps(options, sort_keys=True).encode())
    for path in csvs:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(base).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    for record in records:
        try:
            stat = os.stat(record.path)
        except FileNotFoundError:
            raise DataNotFoundError(
                f"{record.csv}:{record.line}: image file {record.name} does not exist ({record.path})"
            ) from None
        digest.update(f"\n{record.relative}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _crop_box(record: _Record, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the ROI in an image of the given size.

    The CSV box is in the annotated image's pixels; when the file was re-encoded at another size (as
    mirrors that ship 32x32 copies do) it is scaled proportionally.
    """
    x1, y1, x2, y2 = record.roi
    scale_x, scale_y = width / record.width, height / record.height
    left = min(round(x1 * scale_x), width - 1)
    top = min(round(y1 * scale_y), height - 1)
    right = max(min(round(min(x2 + 1, record.width) * scale_x), width), left + 1)
    bottom = max(min(round(min(y2 + 1, record.height) * scale_y), height), top + 1)
    return top, bottom, left, right


def _decode(records: list[_Record], size: int, roi_crop: bool, split: str) -> tuple[NDArray[np.uint8], int]:
    """Decoded, optionally cropped, resized images, and how many differ in size from their CSV row."""
    x = np.empty((len(records), size, size, 3), dtype=np.uint8)
    started = time.perf_counter()
    mismatched: list[str] = []
    for i, record in enumerate(records):
        image = decode_image(Path(record.path))
        height, width = image.shape[:2]
        if (width, height) != (record.width, record.height):
            mismatched.append(
                f"{record.path} is {width}x{height}, {record.csv.name} line {record.line} says "
                f"{record.width}x{record.height}"
            )
        if roi_crop:
            top, bottom, left, right = _crop_box(record, height, width)
            image = image[top:bottom, left:right]
        x[i] = resize(to_rgb(image), size, size)
        if (i + 1) % 5000 == 0:
            logger.info("GTSRB %s: decoded %d/%d images", split, i + 1, len(records))
    if mismatched:
        logger.warning(
            "GTSRB %s: %d of %d images differ in size from their CSV Width/Height (first: %s); treating them "
            "as re-encoded copies%s",
            split,
            len(mismatched),
            len(records),
            mismatched[0],
            " and scaling the ROI to match" if roi_crop else "",
        )
    logger.info("GTSRB %s: decoded %d images in %.1f s", split, len(records), time.perf_counter() - started)
    return x, len(mismatched)


def _labels(records: list[_Record]) -> NDArray[np.int64]:
    return np.fromiter((record.class_id for record in records), dtype=np.int64, count=len(records))


def _tracks(records: list[_Record]) -> NDArray[np.int64]:
    untracked = N_CLASSES * _TRACK_STRIDE
    return np.fromiter(
        (
            record.class_id * _TRACK_STRIDE + record.track if record.track is not None else untracked + i
            for i, record in enumerate(records)
        ),
        dtype=np.int64,
        count=len(records),
    )


def _cache_path(cache_dir: Path, base: Path, size: int, roi_crop: bool) -> Path:
    """One file per (dataset folder, options): a rebuild replaces the stale file instead of adding one."""
    where = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"gtsrb-{size}px{'-roi' if roi_crop else ''}-{where}.npz"


def _load_cache(path: Path, key: str, size: int) -> GTSRBData | None:
    """The cached arrays if the file exists, is intact and was built from exactly these sources."""
    if not path.is_file():
        return None
    try:
        # Our own handle: numpy leaks its file when the archive is damaged enough to fail while opening.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                logger.info("GTSRB cache %s is stale; rebuilding", path)
                return None
            arrays = {name: npz[name] for name in ("train_x", "train_y", "train_tracks", "test_x", "test_y")}
            has_test = bool(npz["has_test"])
            n_size_mismatches = int(npz["n_size_mismatches"])
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("GTSRB cache %s is unreadable (%s); rebuilding", path, exc)
        return None
    image_shape = (size, size, 3)
    n_train, n_test = len(arrays["train_x"]), len(arrays["test_x"])
    consistent = (
        all(arrays[name].dtype == np.uint8 and arrays[name].shape[1:] == image_shape for name in ("train_x", "test_x"))
        and all(arrays[name].dtype == np.int64 for name in ("train_y", "train_tracks", "test_y"))
        and arrays["train_y"].shape == arrays["train_tracks"].shape == (n_train,)
        and arrays["test_y"].shape == (n_test,)
    )
    if not consistent:
        logger.warning("GTSRB cache %s has inconsistent arrays; rebuilding", path)
        return None
    return GTSRBData(
        train_x=arrays["train_x"],
        train_y=arrays["train_y"],
        train_tracks=arrays["train_tracks"],
        test_x=arrays["test_x"] if has_test else None,
        test_y=arrays["test_y"] if has_test else None,
        n_size_mismatches=n_size_mismatches,
    )


def _write_cache(path: Path, key: str, data: GTSRBData, size: int) -> None:
    """Write atomically (temp file in the same folder, then os.replace); failure only costs speed."""
    empty_x = np.empty((0, size, size, 3), dtype=np.uint8)
    empty_y = np.empty((0,), dtype=np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = make_temp_file(path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        logger.warning("cannot write GTSRB cache in %s (%s); the next load decodes again", path.parent, exc)
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                key=np.array(key),
                has_test=np.array(data.test_x is not None),
                n_size_mismatches=np.array(data.n_size_mismatches),
                train_x=data.train_x,
                train_y=data.train_y,
                train_tracks=data.train_tracks,
                test_x=data.test_x if data.test_x is not None else empty_x,
                test_y=data.test_y if data.test_y is not None else empty_y,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as exc:
        logger.warning("cannot write GTSRB cache %s (%s); the next load decodes again", path, exc)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def load_gtsrb(
    root: str | os.PathLike[str],
    *,
    size: int = 32,
    roi_crop: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> GTSRBData:
    """Load GTSRB, resized to size x size RGB, from the official PPM release or the PNG re-packaging.

    Layouts (root may also be the folder that contains `GTSRB/`):
        official: `Final_Training/Images/000NN/GT-000NN.csv` + PPMs, and/or `Final_Test/Images/*.ppm` with
            `GT-final_test.csv` in `Final_Test/Images` or `Final_Test` (semicolon-separated).
        png: `Train.csv` and/or `Test.csv` (comma-separated, `Path` relative to root).

    Args:
        size: output side in pixels; images are resized bilinearly (antialiased when shrinking).
        roi_crop: crop to the annotated sign box (Roi.X2/Y2 inclusive) before resizing.
        cache_dir: where the decoded arrays are cached; default `default_cache_dir()`.
        use_cache: False neither reads nor writes the cache.
    Raises:
        ConfigError: size < 1.
        DataNotFoundError: no GTSRB layout under root, a class folder without its CSV, missing test labels,
            or a CSV row naming a missing image (message: CSV path, line, file).
        DataFormatError: missing CSV columns, non-integer fields, ClassId outside 0..42 (or not matching
            its class folder), ROI outside the annotated size, or an undecodable image. An image whose
            size differs from its CSV row is accepted as a re-encoded copy, logged, and counted in
            `n_size_mismatches`.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"GTSRB size must be a positive integer, got {size!r}")
    base, layout = _resolve_root(Path(root))
    train, test, csvs = _official_records(base) if layout == "official" else _png_records(base)
    key = _source_key(base, layout, csvs, train + (test or []), size, roi_crop)
    cache_path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), base, size, roi_crop)
    if use_cache:
        cached = _load_cache(cache_path, key, size)
        if cached is not None:
            logger.info("GTSRB loaded from cache %s", cache_path)
            return cached
    train_x, train_mismatches = _decode(train, size, roi_crop, "train")
    test_x, test_mismatches = _decode(test, size, roi_crop, "test") if test is not None else (None, 0)
    data = GTSRBData(
        train_x=train_x,
        train_y=_labels(train),
        train_tracks=_tracks(train),
        test_x=test_x,
        test_y=_labels(test) if test is not None else None,
        n_size_mismatches=train_mismatches + test_mismatches,
    )
    if use_cache:
        _write_cache(cache_path, key, data, size)
    return data
