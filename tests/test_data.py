"""MNIST files: locating, verifying, subsets, sample ids and the download path."""

import contextlib
import functools
import gzip
import http.server
import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_curate.config import DataConfig
from mnist_curate.data import (MNIST_FILES, load_mnist, locate_files, make_sample_ids, parse_sample_id,
                               stratified_subset)
from mnist_curate.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture()
def gz_copy(tmp_path, mnist_dir) -> Path:
    """A writable flat folder with the four original .gz files."""
    folder = tmp_path / "flat"
    folder.mkdir()
    for f in MNIST_FILES:
        shutil.copy(mnist_dir / "MNIST" / "raw" / f"{f.name}.gz", folder)
    return folder


def test_full_mnist_loads_with_documented_counts(mnist_dir):
    data = load_mnist(DataConfig(dir=str(mnist_dir)), seed=0)
    assert data.train.images.shape == (60_000, 28, 28)
    assert data.test.images.shape == (10_000, 28, 28)
    assert data.train.images.dtype == np.uint8
    assert np.bincount(data.train.labels).tolist() == TRAIN_COUNTS
    assert np.bincount(data.test.labels).tolist() == TEST_COUNTS
    assert data.train.sample_ids[0] == "train-00000"
    assert data.test.sample_ids[-1] == "test-09999"


def test_unpacked_files_in_flat_folder_load(tmp_path, gz_copy):
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for f in MNIST_FILES:
        (unpacked / f.name).write_bytes(gzip.decompress((gz_copy / f"{f.name}.gz").read_bytes()))
    data = load_mnist(DataConfig(dir=str(unpacked), limit=100), seed=0)
    assert len(data.train) == 100


def test_read_only_data_folder_is_not_written(tmp_path, gz_copy):
    before = sorted(p.name for p in gz_copy.iterdir())
    gz_copy.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        data = load_mnist(DataConfig(dir=str(gz_copy), limit=50), seed=0)
    finally:
        gz_copy.chmod(0o755)
    assert len(data.test) == 50
    assert sorted(p.name for p in gz_copy.iterdir()) == before


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        locate_files(tmp_path / "nowhere")


def test_missing_file_is_named(gz_copy):
    (gz_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing in .*t10k-labels-idx1-ubyte\[.gz\]"):
        load_mnist(DataConfig(dir=str(gz_copy)), seed=0)


def test_truncated_archive_is_reported(gz_copy):
    path = gz_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is not a complete gzip archive"):
        load_mnist(DataConfig(dir=str(gz_copy)), seed=0)


def test_wrong_magic_number_is_reported(gz_copy):
    path = gz_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 0x03
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        load_mnist(DataConfig(dir=str(gz_copy)), seed=0)


def test_wrong_image_count_is_reported(gz_copy):
    path = gz_copy / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[4:8] = (9_000).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(raw[:16 + 9_000 * 784])))
    with pytest.raises(DataError, match="header says 9000 images, expected 10000"):
        load_mnist(DataConfig(dir=str(gz_copy)), seed=0)


def test_changed_content_is_reported(gz_copy):
    path = gz_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = 11  # a label out of range, same size and header
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="not the content of the MNIST release"):
        load_mnist(DataConfig(dir=str(gz_copy)), seed=0)


def test_subset_is_stratified_sorted_and_seeded():
    labels = np.repeat(np.arange(10), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    picked = stratified_subset(labels, 2000, seed=0)
    assert len(picked) == 2000
    assert np.all(np.diff(picked) > 0)
    shares = np.bincount(labels[picked], minlength=10) / 2000
    assert np.allclose(shares, np.bincount(labels) / len(labels), atol=0.001)
    assert np.array_equal(picked, stratified_subset(labels, 2000, seed=0))
    assert not np.array_equal(picked, stratified_subset(labels, 2000, seed=1))


def test_subset_keeps_full_set_sample_ids(mnist_dir):
    full = load_mnist(DataConfig(dir=str(mnist_dir)), seed=0)
    subset = load_mnist(DataConfig(dir=str(mnist_dir), limit=300), seed=0)
    for i in (0, 150, 299):
        sample_id = subset.train.sample_ids[i]
        _, index = parse_sample_id(sample_id)
        assert np.array_equal(full.train.images[index], subset.train.images[i])
        assert full.train.labels[index] == subset.train.labels[i]


@pytest.mark.parametrize("sample_id, expected", [
    ("train-00000", ("train", 0)), ("train-59999", ("train", 59_999)), ("test-09999", ("test", 9_999)),
    ("test-10000", None), ("train-60000", None), ("val-00001", None), ("train-1", None), ("train00001", None),
])
def test_parse_sample_id(sample_id, expected):
    assert parse_sample_id(sample_id) == expected


def test_make_sample_ids_pads_to_five_digits():
    assert make_sample_ids("test", np.array([0, 42, 9999])) == ["test-00000", "test-00042", "test-09999"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder: Path):
    """Serve a folder over HTTP on a free loopback port."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_path_fetches_and_verifies_from_mirror(tmp_path, gz_copy):
    cache = tmp_path / "cache"
    with serve_folder(gz_copy) as url:
        data = load_mnist(DataConfig(cache_dir=str(cache), mirrors=[url], limit=100), seed=0)
    assert len(data.train) == 100
    assert (cache / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


def test_download_failure_names_the_offline_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve_folder(empty) as url:
        with pytest.raises(DataError, match="could not download MNIST.*--data-dir"):
            load_mnist(DataConfig(cache_dir=str(tmp_path / "cache"), mirrors=[url]), seed=0)


def test_download_rejects_corrupt_archive_from_mirror(tmp_path, gz_copy):
    path = gz_copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with serve_folder(gz_copy) as url:
        with pytest.raises(DataError, match="could not download MNIST"):
            load_mnist(DataConfig(cache_dir=str(tmp_path / "cache"), mirrors=[url]), seed=0)
