"""MNIST loading, verification, sample ids and stratified subsets.

Two ways to get the four standard files:

* ``data.dir`` (``--data-dir``, ``MNIST_CURATE_DATA_DIR``): a folder that
  already holds them, gzipped or unpacked, flat or in torchvision's
  ``MNIST/raw/`` layout. The folder may be read-only; nothing is written there.
* otherwise ``torchvision.datasets.MNIST(download=True)`` into ``data.cache_dir``,
  which checks each archive's MD5 after downloading.

Either way every file is checked against the MD5 of the canonical release
before use, so the cache keys of later stages can rely on the content.

Sample ids are ``train-00000`` ... ``train-59999`` and ``test-00000`` ...
``test-09999``: the 0-based position in torchvision's order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_curate.config import DataConfig
from mnist_curate.errors import ConfigError, DataError

SPLITS = ("train", "test")
N_CLASSES = 10
IMAGE_SIDE = 28


@dataclass(frozen=True)
class MnistFile:
    name: str
    split: str
    kind: str  # "images" or "labels"
    count: int
    gz_md5: str
    raw_md5: str

    @property
    def magic(self) -> int:
        return 2051 if self.kind == "images" else 2049

    @property
    def raw_size(self) -> int:
        header = 16 if self.kind == "images" else 8
        per_item = IMAGE_SIDE * IMAGE_SIDE if self.kind == "images" else 1
        return header + self.count * per_item


# The canonical release: the gz MD5s are the ones torchvision checks; the raw
# MD5s are those of the same archives unpacked.
MNIST_FILES = (
    MnistFile("train-images-idx3-ubyte", "train", "images", 60_000,
              "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    MnistFile("train-labels-idx1-ubyte", "train", "labels", 60_000,
              "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    MnistFile("t10k-images-idx3-ubyte", "test", "images", 10_000,
              "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    MnistFile("t10k-labels-idx1-ubyte", "test", "labels", 10_000,
              "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
)
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

# What later stages' cache keys record about the data: valid data is always
# exactly this content, because load_mnist rejects anything else.
DATA_FINGERPRINT = {f.name: f.raw_md5 for f in MNIST_FILES}


@dataclass
class Split:
    """One split of MNIST (or its stratified subset).

    ``index`` holds each sample's 0-based position in the full split, so
    ``sample_ids[i] == f"{name}-{index[i]:05d}"``.
    """

    name: str
    images: np.ndarray  # (n_samples, 28, 28) uint8
    labels: np.ndarray  # (n_samples,) int64
    index: np.ndarray  # (n_samples,) int64

    @property
    def sample_ids(self) -> np.ndarray:
        return np.array(make_sample_ids(self.name, self.index))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class MnistData:
    train: Split
    test: Split
    source: str  # where the files were read from, for messages

    def split(self, name: str) -> Split:
        return self.train if name == "train" else self.test


def make_sample_ids(split: str, index: np.ndarray) -> list[str]:
    return [f"{split}-{int(i):05d}" for i in index]


def parse_sample_id(sample_id: str) -> tuple[str, int] | None:
    """Return (split, index) for a valid MNIST sample id, else None."""
    split, sep, number = sample_id.partition("-")
    if not sep or split not in SPLIT_SIZES or len(number) != 5 or not (number.isascii() and number.isdigit()):
        return None
    index = int(number)
    return (split, index) if index < SPLIT_SIZES[split] else None


# Locating files --------------------------------------------------------------

def _candidates(folder: Path, f: MnistFile) -> list[tuple[Path, bool]]:
    paths = []
    for base in (folder, folder / "MNIST" / "raw", folder / "raw"):
        paths.append((base / f"{f.name}.gz", True))
        paths.append((base / f.name, False))
    return paths


def locate_files(folder: Path) -> dict[str, tuple[Path, bool]]:
    """Find the four files in a data folder; return {file name: (path, is_gzip)}."""
    if not folder.exists():
        raise DataError(f"data folder {folder} does not exist. Pass the folder that holds the four MNIST "
                        "files with --data-dir or MNIST_CURATE_DATA_DIR, or leave data.dir unset to download.")
    if not folder.is_dir():
        raise DataError(f"data folder {folder} is not a folder; pass the folder that holds the MNIST files")
    found, missing = {}, []
    for f in MNIST_FILES:
        for path, is_gzip in _candidates(folder, f):
            if path.is_file():
                found[f.name] = (path, is_gzip)
                break
        else:
            missing.append(f.name)
    if missing:
        raise DataError(
            f"MNIST file(s) missing in {folder}: {', '.join(m + '[.gz]' for m in missing)}. "
            "Expected the four files flat in the folder or under MNIST/raw/; copy the missing ones there.")
    return found


# Reading and verifying -------------------------------------------------------

def _read_verified(f: MnistFile, path: Path, is_gzip: bool) -> bytes:
    try:
        packed = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None

    if is_gzip:
        try:
            raw = gzip.decompress(packed)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path} is not a complete gzip archive ({error}); it is truncated or corrupt. "
                            "Replace it with the original file.") from None
    else:
        raw = packed

    _check_header(f, path, raw)
    if hashlib.md5(raw).hexdigest() != f.raw_md5:
        raise DataError(f"{path} has the right size but not the content of the MNIST release "
                        f"(MD5 of the unpacked data differs from {f.raw_md5}). Replace it with the original file.")
    return raw


def _check_header(f: MnistFile, path: Path, raw: bytes) -> None:
    if len(raw) < 8:
        raise DataError(f"{path} holds {len(raw)} bytes, too short for an IDX header; replace it with the original file")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != f.magic:
        raise DataError(f"{path}: magic number {magic}, expected {f.magic} for an IDX {f.kind} file; "
                        "is it the right file?")
    count = int.from_bytes(raw[4:8], "big")
    if count != f.count:
        raise DataError(f"{path}: header says {count} {f.kind}, expected {f.count} for MNIST's {f.split} split; "
                        "it is not the MNIST release file. Replace it with the original file.")
    if len(raw) != f.raw_size:
        raise DataError(f"{path}: {len(raw)} bytes of {f.kind} data, expected {f.raw_size}; "
                        "the file is truncated or has extra bytes. Replace it with the original file.")


def _parse(f: MnistFile, raw: bytes) -> np.ndarray:
    if f.kind == "images":
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(f.count, IMAGE_SIDE, IMAGE_SIDE)
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.max() >= N_CLASSES:
        raise DataError(f"{f.name}: labels up to {labels.max()}, expected 0-9")
    return labels


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnist-curate"


def download_mnist(data_config: DataConfig) -> Path:
    """Download MNIST with torchvision into the cache folder; return the folder to read from.

    torchvision checks every archive's MD5 after downloading and skips files
    that are already present and valid.
    """
    from torchvision.datasets import MNIST

    cache_dir = Path(data_config.cache_dir).expanduser() if data_config.cache_dir else default_cache_dir()
    mirrors = [m.rstrip("/") + "/" for m in data_config.mirrors] or None
    original_mirrors = MNIST.mirrors
    try:
        if mirrors:
            # torchvision reads mirrors from the class attribute; restore it afterwards.
            MNIST.mirrors = mirrors
        cache_dir.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            MNIST(root=str(cache_dir), train=train, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(
            f"could not download MNIST into {cache_dir}: {' '.join(str(error).split())}. Offline? Point --data-dir "
            "(or MNIST_CURATE_DATA_DIR) at a folder that holds the four MNIST files.") from None
    finally:
        MNIST.mirrors = original_mirrors
    return cache_dir


def load_mnist(data_config: DataConfig, *, seed: int) -> MnistData:
    """Load, verify and (with ``limit``) subset both splits."""
    if data_config.dir:
        folder = Path(data_config.dir).expanduser()
    else:
        folder = download_mnist(data_config)
    located = locate_files(folder)

    arrays = {}
    for f in MNIST_FILES:
        path, is_gzip = located[f.name]
        arrays[f.name] = _parse(f, _read_verified(f, path, is_gzip))

    splits = {}
    for split in SPLITS:
        images_file, labels_file = (f for f in MNIST_FILES if f.split == split)
        images, labels = arrays[images_file.name], arrays[labels_file.name]
        index = np.arange(len(labels), dtype=np.int64)
        if data_config.limit is not None:
            index = stratified_subset(labels, data_config.limit, seed=seed)
        splits[split] = Split(split, images[index], labels[index], index)
    return MnistData(splits["train"], splits["test"], source=str(folder))


def stratified_subset(labels: np.ndarray, n_samples: int, *, seed: int) -> np.ndarray:
    """Pick n_samples indices with each class in proportion to its share, sorted ascending.

    Per-class quotas use the largest-remainder method, so they add up to
    n_samples exactly; which samples of a class are taken depends on the seed.
    """
    if n_samples > len(labels):
        raise DataError(f"data.limit = {n_samples} is larger than the split ({len(labels)} samples); "
                        f"use at most {len(labels)} or leave it unset for all samples")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_samples / len(labels)
    quotas = np.floor(exact).astype(int)
    shortfall = n_samples - quotas.sum()
    quotas[np.argsort(-(exact - quotas), kind="stable")[:shortfall]] += 1

    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(picked))


def resolve_device(requested: str) -> str:
    """Turn the device setting into a torch device string, or raise if it is not available."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} is not available here (torch sees no CUDA GPU); "
                                     "use --device cpu or --device auto")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {requested!r} is not available: torch sees "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' is not available here; use --device cpu or --device auto")
    return requested

