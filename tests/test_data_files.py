"""Where the FashionMNIST files come from (src/data.py's preparation), on tiny stand-in files:
RAW_FILES is patched to four small IDX files with their own sha256 and size, so every path
(already there, Debian's .gz, corrupt, truncated, download, nothing) runs in milliseconds and
each message is checked word for word. test_data.py runs the same paths on the real files."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import src.data as data
from src.data import HOW_TO_GET_DATA, prepare_fashion_mnist, raw_dir, read_idx
from src.errors import DataError


def idx(array: np.ndarray) -> bytes:
    """An IDX file: zero, zero, type 0x08 (uint8), the number of dims, each dim big-endian."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


CONTENT = {
    "train-images-idx3-ubyte": idx(np.arange(2 * 3 * 4).reshape(2, 3, 4)),
    "train-labels-idx1-ubyte": idx(np.array([3, 7])),
    "t10k-images-idx3-ubyte": idx(np.full((1, 3, 4), 200)),
    "t10k-labels-idx1-ubyte": idx(np.array([9])),
}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """RAW_FILES for the stand-ins; a Debian-like dir of their .gz files; an empty data dir."""
    monkeypatch.setattr(data, "RAW_FILES", {n: (hashlib.sha256(c).hexdigest(), len(c)) for n, c in CONTENT.items()})
    system = tmp_path / "system"
    system.mkdir()
    for name, content in CONTENT.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    return system, tmp_path / "data"


def put(data_dir, name, content):
    path = raw_dir(data_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_read_idx_decodes_the_header_and_the_shape(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(CONTENT["train-images-idx3-ubyte"])
    images = read_idx(path)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 4)
    assert images.flatten().tolist() == list(range(24))
    path.write_bytes(CONTENT["train-labels-idx1-ubyte"])
    assert read_idx(path).tolist() == [3, 7]
    images.add_(1)  # a copy: writable, and not the file's buffer
    assert read_idx(tmp_path / "x").tolist() == [3, 7]


def test_already_there_is_checked_not_trusted(tiny):
    system, data_dir = tiny
    for name, content in CONTENT.items():
        put(data_dir, name, content)
    assert prepare_fashion_mnist(data_dir, system_dir=None, allow_download=False) == "prepared"
    assert data._check_raw_file(raw_dir(data_dir) / "train-labels-idx1-ubyte") is None
    put(data_dir, "train-labels-idx1-ubyte", CONTENT["train-labels-idx1-ubyte"][:-1])
    assert data._check_raw_file(raw_dir(data_dir) / "train-labels-idx1-ubyte") == \
        f"size {len(CONTENT['train-labels-idx1-ubyte']) - 1} bytes, expected {len(CONTENT['train-labels-idx1-ubyte'])} " \
        "(truncated or corrupt)"
    flipped = bytearray(CONTENT["train-labels-idx1-ubyte"])
    flipped[-1] ^= 1
    put(data_dir, "train-labels-idx1-ubyte", bytes(flipped))
    assert data._check_raw_file(raw_dir(data_dir) / "train-labels-idx1-ubyte") == "sha256 mismatch (corrupt)"
    assert data._check_raw_file(raw_dir(data_dir) / "nope") == "missing"
    assert not data._prepared(data_dir)
    assert data._corrupt_files(data_dir) == [f"{raw_dir(data_dir) / 'train-labels-idx1-ubyte'}: sha256 mismatch (corrupt)"]
    with pytest.raises(DataError) as e:
        prepare_fashion_mnist(data_dir, system_dir=None, allow_download=False)
    assert str(e.value) == (f"corrupt data file {raw_dir(data_dir) / 'train-labels-idx1-ubyte'}: sha256 mismatch "
                            f"(corrupt); delete it and {HOW_TO_GET_DATA}")


def test_sha256_in_chunks(tmp_path):
    path = tmp_path / "big"
    content = os.urandom((1 << 20) + 7)  # more than one read
    path.write_bytes(content)
    assert data._sha256(path) == hashlib.sha256(content).hexdigest()


def test_debian_files_are_decompressed_verified_and_replace_corrupt_ones(tiny, monkeypatch):
    system, data_dir = tiny
    put(data_dir, "t10k-labels-idx1-ubyte", b"garbage")  # corrupt: replaced, not an error
    kept = put(data_dir, "train-labels-idx1-ubyte", CONTENT["train-labels-idx1-ubyte"])
    before = kept.stat().st_mtime_ns
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renamed.append((src, dst)) or real_replace(src, dst))
    assert prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False) == "debian"
    # each through a temp name of its own beside the target: a kill leaves no half file under the real name
    assert len(renamed) == 3
    for src, dst in renamed:
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent == raw_dir(data_dir)
        assert src.name.startswith(f".{dst.name}.") and src.name.endswith(".part")
    for name, content in CONTENT.items():
        assert (raw_dir(data_dir) / name).read_bytes() == content
    assert kept.stat().st_mtime_ns == before  # a good file is left alone
    assert sorted(p.name for p in raw_dir(data_dir).iterdir()) == sorted(CONTENT)  # no .part left
    assert prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False) == "prepared"


def test_debian_files_that_are_wrong_say_so_and_leave_nothing(tiny):
    system, data_dir = tiny
    (system / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"other content"))
    with pytest.raises(DataError) as e:
        prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    assert str(e.value) == (f"{system / 'train-images-idx3-ubyte.gz'} decompresses to unexpected content (sha256 "
                            f"mismatch); reinstall dataset-fashion-mnist or {HOW_TO_GET_DATA}")
    assert not (raw_dir(data_dir) / "train-images-idx3-ubyte").exists()
    assert [p.name for p in raw_dir(data_dir).iterdir() if p.name.startswith(".")] == []
    same_size = bytearray(CONTENT["train-images-idx3-ubyte"])
    same_size[-1] ^= 1  # the right size, one bit off: the hash alone catches it
    (system / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(same_size)))
    with pytest.raises(DataError, match="decompresses to unexpected content"):
        prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    (system / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(CONTENT["train-images-idx3-ubyte"])[:-9])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is truncated or corrupt \(.*\); reinstall "
                                        r"dataset-fashion-mnist or get FashionMNIST"):
        prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    (system / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="is truncated or corrupt"):
        prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    assert [p.name for p in raw_dir(data_dir).iterdir() if p.name.startswith(".")] == []


def test_an_incomplete_debian_dir_is_not_used(tiny):
    system, data_dir = tiny
    (system / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    assert str(e.value) == f"FashionMNIST not found in {raw_dir(data_dir)}; {HOW_TO_GET_DATA}"
    assert HOW_TO_GET_DATA.startswith("get FashionMNIST one of three ways: (1) put the four *-ubyte files in")


def test_download_as_the_last_way(tiny, monkeypatch):
    system, data_dir = tiny
    calls = []

    def download(d):
        calls.append(d)
        assert raw_dir(d).is_dir()  # made (and writable) before the download
        for name, content in CONTENT.items():
            put(d, name, content)

    monkeypatch.setattr(data, "_download", download)
    assert prepare_fashion_mnist(data_dir, system_dir=None) == "download" and calls == [data_dir]

    def offline(d):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(data, "_download", offline)
    other = data_dir.parent / "other"
    with pytest.raises(DataError) as e:
        prepare_fashion_mnist(other, system_dir=str(system / "none"))
    assert str(e.value) == (f"FashionMNIST not found in {raw_dir(other)} and the download failed (OSError); "
                            f"{HOW_TO_GET_DATA}")
    monkeypatch.setattr(data, "_download", lambda d: None)  # "succeeds" but brings nothing
    with pytest.raises(DataError, match=r"^FashionMNIST not found in .*other/FashionMNIST/raw; get FashionMNIST"):
        prepare_fashion_mnist(other, system_dir=None)


def test_a_data_dir_that_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError) as e:
        data._writable_dir(raw_dir(blocker))
    assert str(e.value).startswith(f"data.data_dir={blocker} is not writable (") and str(e.value).endswith(
        "); pass a writable directory, e.g. data.data_dir=/tmp/fashion-mnist")
    target = raw_dir(tmp_path / "ro")
    target.mkdir(parents=True)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(DataError) as e:
        data._writable_dir(target)
    assert str(e.value) == (f"data.data_dir={tmp_path / 'ro'} is not writable; pass a writable directory, e.g. "
                            "data.data_dir=/tmp/fashion-mnist")


def test_load_raw_and_the_normalised_split_tensors(tiny):
    system, data_dir = tiny
    prepare_fashion_mnist(data_dir, system_dir=str(system), allow_download=False)
    images, labels = data.load_raw(data_dir, train=False)
    assert images.shape == (1, 3, 4) and labels.dtype == torch.int64 and labels.tolist() == [9]
    x, y = data.load_split_tensors(data_dir, train=True)
    assert x.shape == (2, 1, 3, 4) and x.dtype == torch.float32 and y.tolist() == [3, 7]
    assert float(x[0, 0, 0, 1]) == pytest.approx((1 / 255 - data.MEAN) / data.STD)
