"""CIFAR-10 reader: Python-2-style pickles written opcode by opcode, Python 3 pickles, and hostile ones.

The original batches were written by Python 2's cPickle at protocol 2, so `py2_batch` reproduces that
byte stream by hand (strings as BINSTRING, the array as numpy 1.x reduced it under Python 2).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.data.formats.cifar import CIFAR10_CLASS_NAMES, CIFAR10Data, load_cifar10, read_cifar_batch
from bastion.errors import DataFormatError, DataNotFoundError

# --- Python 2 cPickle protocol 2, written opcode by opcode -------------------------------------------


def py2_str(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
    return b"T" + struct.pack("<I", len(value)) + value  # BINSTRING


def py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def py2_global(module: bytes, name: bytes) -> bytes:
    return b"c" + module + b"\n" + name + b"\n"


def py2_ndarray(values: np.ndarray, *, code: bytes = b"u1", raw: bytes | None = None) -> bytes:
    """numpy.ndarray.__reduce__ under Python 2: _reconstruct(ndarray, (0,), 'b') then BUILD with state."""
    dtype = (
        py2_global(b"numpy", b"dtype")
        + py2_str(code)
        + py2_int(0)
        + py2_int(1)
        + b"\x87R"  # TUPLE3, REDUCE
        + b"("
        + py2_int(3)
        + py2_str(b"|")
        + b"NNN"
        + py2_int(-1)
        + py2_int(-1)
        + py2_int(0)
        + b"tb"  # TUPLE, BUILD
    )
    shape = b"(" + b"".join(py2_int(dim) for dim in values.shape) + b"t"
    state = b"(" + py2_int(1) + shape + dtype + b"\x89" + py2_str(values.tobytes() if raw is None else raw) + b"t"
    head = py2_global(b"numpy.core.multiarray", b"_reconstruct")
    args = py2_global(b"numpy", b"ndarray") + py2_int(0) + b"\x85" + py2_str(b"b") + b"\x87R"
    return head + args + state + b"b"


def py2_list(items: list[bytes]) -> bytes:
    return b"](" + b"".join(items) + b"e"  # EMPTY_LIST, MARK, ..., APPENDS


def py2_dict(entries: dict[bytes, bytes]) -> bytes:
    body = b"".join(py2_str(key) + value for key, value in entries.items())
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK, ..., SETITEMS, STOP


def py2_batch(data: np.ndarray, labels: list[int], *, labels_blob: bytes | None = None) -> bytes:
    return py2_dict(
        {
            b"batch_label": py2_str(b"training batch 1 of 5"),
            b"labels": labels_blob if labels_blob is not None else py2_list([py2_int(v) for v in labels]),
            b"data": py2_ndarray(data),
            b"filenames": py2_list([py2_str(b"img_%d.png" % i) for i in range(len(labels))]),
        }
    )


def py2_meta(names: tuple[str, ...] = CIFAR10_CLASS_NAMES) -> bytes:
    return py2_dict(
        {
            b"num_cases_per_batch": py2_int(10000),
            b"label_names": py2_list([py2_str(name.encode()) for name in names]),
            b"num_vis": py2_int(3072),
        }
    )


def py3_batch(data: np.ndarray, labels: list[int], protocol: int = 2) -> bytes:
    """A batch re-pickled under Python 3 with bytes keys (protocol 2 spells bytes via _codecs.encode)."""
    return pickle.dumps({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data}, protocol)


def random_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def globals_used(data: bytes) -> set[str]:
    return {str(arg).replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


# --- the whitelist is exactly what real batches need -------------------------------------------------


def test_handwritten_py2_pickle_is_what_numpy_itself_accepts() -> None:
    data, labels = random_batch(3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns about numpy.core
        unrestricted = pickle.loads(py2_batch(data, labels), encoding="bytes")  # trusted: written above
    np.testing.assert_array_equal(unrestricted[b"data"], data)
    assert unrestricted[b"labels"] == labels


def test_globals_needed_by_real_batches() -> None:
    data, labels = random_batch(2, 1)
    assert globals_used(py2_batch(data, labels)) == {
        "numpy.core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
    }
    assert globals_used(py3_batch(data, labels)) == {
        "_codecs.encode",
        f"{np.zeros(1).__reduce__()[0].__module__}._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
    }


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), style=st.sampled_from(["py2", "py3-2", "py3-4"]))
def test_batch_round_trip(n: int, seed: int, style: str) -> None:
    data, labels = random_batch(n, seed)
    blob = py2_batch(data, labels) if style == "py2" else py3_batch(data, labels, protocol=int(style[-1]))
    images, y = read_cifar_batch(blob)
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert y.dtype == np.int64 and y.tolist() == labels
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(n, 3072), data)


def test_rows_are_red_then_green_then_blue_planes() -> None:
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 0] = 10  # red, pixel (0, 0)
    row[0, 1024 + 33] = 20  # green, pixel (1, 1)
    row[0, 2048 + 1023] = 30  # blue, pixel (31, 31)
    images, _ = read_cifar_batch(py2_batch(row, [0]))
    assert images[0, 0, 0].tolist() == [10, 0, 0]
    assert images[0, 1, 1].tolist() == [0, 20, 0]
    assert images[0, 31, 31].tolist() == [0, 0, 30]


# --- hostile and corrupt pickles ---------------------------------------------------------------------


class ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_os_system_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": ShellPayload(marker), b"labels": []}, protocol=2)
    with pytest.raises(DataFormatError, match=rf"evil: refusing to load global {os.system.__module__}\.system"):
        read_cifar_batch(payload, name="evil")
    assert not marker.exists()
    pickle.loads(payload)  # control: the same bytes do run under an unrestricted unpickler
    assert marker.exists()


def test_handwritten_os_system_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = b"\x80\x02" + py2_global(b"os", b"system") + py2_str(f"touch {marker}".encode()) + b"\x85R."
    with pytest.raises(DataFormatError, match=r"refusing to load global os\.system"):
        read_cifar_batch(payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (b"builtins", b"eval"),
        (b"__builtin__", b"eval"),
        (b"builtins", b"getattr"),
        (b"subprocess", b"Popen"),
        (b"numpy", b"load"),
        (b"numpy", b"frombuffer"),
        (b"numpy.core.multiarray", b"scalar"),
        (b"_codecs", b"decode"),
    ],
)
def test_payload_inside_an_otherwise_valid_batch_is_refused(tmp_path: Path, module: bytes, name: bytes) -> None:
    marker = tmp_path / "pwned"
    call = py2_global(module, name) + py2_str(f"__import__('os').system('touch {marker}')".encode()) + b"\x85R"
    data, labels = random_batch(1, 2)
    with pytest.raises(DataFormatError, match=f"refusing to load global {module.decode()}.{name.decode()}"):
        read_cifar_batch(py2_batch(data, labels, labels_blob=call))
    assert not marker.exists()


def test_codecs_encode_only_as_latin1() -> None:
    call = py2_global(b"_codecs", b"encode") + py2_str(b"x\x9c") + py2_str(b"zlib_codec") + b"\x86R"
    with pytest.raises(DataFormatError, match=r"_codecs\.encode is allowed only as encode\(str, 'latin1'\)"):
        read_cifar_batch(b"\x80\x02}(" + py2_str(b"data") + call + b"u.")


def test_object_arrays_are_refused() -> None:
    payload = pickle.dumps({b"data": np.array([1, None], dtype=object), b"labels": [0, 0]}, protocol=2)
    with pytest.raises(DataFormatError, match="refusing dtype 'O8'; only plain numeric dtypes"):
        read_cifar_batch(payload)


def test_reconstruct_only_builds_ndarrays() -> None:
    head = py2_global(b"numpy.core.multiarray", b"_reconstruct")
    call = head + py2_global(b"numpy", b"dtype") + py2_int(0) + b"\x85" + py2_str(b"b") + b"\x87R"
    with pytest.raises(DataFormatError, match=r"may only build numpy\.ndarray"):
        read_cifar_batch(b"\x80\x02}(" + py2_str(b"data") + call + b"u.")


def test_array_state_with_wrong_byte_count() -> None:
    blob = py2_dict({b"data": py2_ndarray(np.zeros((2, 3072), dtype=np.uint8), raw=bytes(3072)), b"labels": b"]"})
    with pytest.raises(DataFormatError, match="needs 6144 bytes, found 3072"):
        read_cifar_batch(blob)


@pytest.mark.parametrize("cut", [1, 100, 3000])
def test_truncated_pickle(cut: int) -> None:
    blob = py2_batch(*random_batch(1, 3))
    with pytest.raises(DataFormatError, match="t: not a valid pickle"):
        read_cifar_batch(blob[:cut], name="t")


@pytest.mark.parametrize("blob", [b"", b"garbage bytes", b"\x80\x05\x95"])
def test_garbage(blob: bytes) -> None:
    with pytest.raises(DataFormatError, match="not a valid pickle"):
        read_cifar_batch(blob)


def test_not_a_dict() -> None:
    with pytest.raises(DataFormatError, match="expected a pickled dict, found list"):
        read_cifar_batch(pickle.dumps([1, 2], protocol=2))


# --- content validation ------------------------------------------------------------------------------


def test_data_shape_and_dtype_are_checked() -> None:
    with pytest.raises(DataFormatError, match=r"'data' must be a \(N, 3072\) uint8 array, found uint8 \(2, 3071\)"):
        read_cifar_batch(py3_batch(np.zeros((2, 3071), dtype=np.uint8), [0, 0]))
    with pytest.raises(DataFormatError, match="found int16"):
        read_cifar_batch(py3_batch(np.zeros((1, 3072), dtype=np.int16), [0]))


def test_labels_are_checked() -> None:
    data, _ = random_batch(3, 4)
    with pytest.raises(DataFormatError, match=r"label 10 at index 2 is outside 0\.\.9"):
        read_cifar_batch(py2_batch(data, [0, 1, 10]))
    with pytest.raises(DataFormatError, match="3 images but 2 labels"):
        read_cifar_batch(py2_batch(data, [0, 1]))
    with pytest.raises(DataFormatError, match="labels must be a list of ints"):
        read_cifar_batch(py3_batch(data, [0, 1, "2"]))  # type: ignore[list-item]
    with pytest.raises(DataFormatError, match="needs 'data' and 'labels'"):
        read_cifar_batch(pickle.dumps({b"data": data}, protocol=2))


# --- whole data set from a folder or the archive -----------------------------------------------------


def cifar_files(n: int = 3) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """Seven members: train batches in Python 2 format, the test batch as Python 3 re-pickled it."""
    files: dict[str, bytes] = {}
    train = []
    for i in range(1, 6):
        data, labels = random_batch(n, i)
        files[f"data_batch_{i}"] = py2_batch(data, labels)
        train.append(data)
    test, test_labels = random_batch(n, 99)
    files["test_batch"] = py3_batch(test, test_labels)
    files["batches.meta"] = py2_meta()
    return files, np.concatenate(train), test


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def check(data_set: CIFAR10Data, train: np.ndarray, test: np.ndarray) -> None:
    assert data_set.train_x.shape == (15, 32, 32, 3) and data_set.test_x.shape == (3, 32, 32, 3)
    assert data_set.train_y.shape == (15,) and data_set.test_y.shape == (3,)
    np.testing.assert_array_equal(data_set.train_x.transpose(0, 3, 1, 2).reshape(15, 3072), train)
    np.testing.assert_array_equal(data_set.test_x.transpose(0, 3, 1, 2).reshape(3, 3072), test)
    assert data_set.class_names == CIFAR10_CLASS_NAMES


def test_load_from_folder_and_parent(tmp_path: Path) -> None:
    files, train, test = cifar_files()
    folder = write_folder(tmp_path / "cifar-10-batches-py", files)
    check(load_cifar10(folder), train, test)
    check(load_cifar10(tmp_path), train, test)


def test_load_from_archive_without_extracting(tmp_path: Path) -> None:
    files, train, test = cifar_files()
    archive = write_archive(tmp_path / "cifar-10-python.tar.gz", files)
    check(load_cifar10(archive), train, test)
    check(load_cifar10(tmp_path), train, test)
    assert [path.name for path in tmp_path.iterdir()] == ["cifar-10-python.tar.gz"]


def test_missing_member_in_folder(tmp_path: Path) -> None:
    files, _, _ = cifar_files()
    del files["data_batch_3"]
    write_folder(tmp_path, files)
    with pytest.raises(DataNotFoundError, match=r"missing CIFAR-10 file.* data_batch_3"):
        load_cifar10(tmp_path)


def test_missing_member_in_archive(tmp_path: Path) -> None:
    files, _, _ = cifar_files()
    del files["batches.meta"]
    with pytest.raises(DataNotFoundError, match=r"archive has no batches\.meta member"):
        load_cifar10(write_archive(tmp_path / "c.tar.gz", files))


def test_truncated_archive(tmp_path: Path) -> None:
    files, _, _ = cifar_files()
    archive = write_archive(tmp_path / "c.tar.gz", files)
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataFormatError, match=r"c\.tar\.gz: corrupt or truncated archive"):
        load_cifar10(archive)


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "c.tar.gz"
    path.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataFormatError, match=r"c\.tar\.gz: "):
        load_cifar10(path)


def test_malicious_member_in_archive_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files, _, _ = cifar_files()
    files["test_batch"] = pickle.dumps(ShellPayload(marker), protocol=2)
    archive = write_archive(tmp_path / "c.tar.gz", files)
    with pytest.raises(DataFormatError, match=r"c\.tar\.gz:cifar-10-batches-py/test_batch: refusing to load global"):
        load_cifar10(archive)
    assert not marker.exists()


def test_meta_must_name_ten_classes(tmp_path: Path) -> None:
    files, _, _ = cifar_files()
    files["batches.meta"] = py2_meta(CIFAR10_CLASS_NAMES[:9])
    with pytest.raises(DataFormatError, match=r"batches\.meta: 'label_names' must list 10 class names"):
        load_cifar10(write_folder(tmp_path, files))


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="CIFAR-10 source does not exist"):
        load_cifar10(tmp_path / "absent")
    with pytest.raises(DataNotFoundError, match="CIFAR batch file does not exist"):
        read_cifar_batch(tmp_path / "absent")
