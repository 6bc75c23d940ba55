"""Readers for the official array formats: CIFAR pickles, SVHN .mat, MNIST-style idx (optionally .gz).

Each returns native-size uint8 images ((N, H, W, 3), or (N, H, W) for grey), int64 labels, class names if the
format carries them, and the files it read. Anything unreadable raises CorruptDataError naming the file.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..safe_pickle import load_numpy_pickle
from .errors import CorruptDataError

CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
                "labels": b"labels", "names": b"label_names"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta",
                 "labels": b"fine_labels", "names": b"fine_label_names"},
}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _unpickle(path: Path) -> dict:
    # The official CIFAR batches are Python pickles of dicts, lists and numpy arrays: anything else is refused, so a
    # tampered copy cannot run code here.
    try:
        with open(path, "rb") as f:
            record = load_numpy_pickle(f, encoding="bytes")
    except Exception as exc:  # UnpicklingError (tampered or not CIFAR's), EOFError (truncated), ValueError, ...
        raise CorruptDataError(f"cannot unpickle {path}: {exc!r}. Re-download or re-copy it.", str(path)) from exc
    if not isinstance(record, dict):
        raise CorruptDataError(f"{path} holds a {type(record).__name__}, not a CIFAR batch dict", str(path))
    return record


def _field(record: dict, key: bytes, path: Path):
    for candidate in (key, key.decode()):
        if candidate in record:
            return record[candidate]
    raise CorruptDataError(f"{path} has no {key.decode()!r} entry (keys: {sorted(map(str, record))})", str(path))


def cifar_file_paths(folder: Path, variant: str, split: str) -> list[Path]:
    """The batch files of one split inside ``cifar-10-batches-py/`` or ``cifar-100-python/``."""
    return [folder / name for name in CIFAR_FILES[variant][split]]


def read_cifar(folder: Path, variant: str, split: str):
    """(images (N,32,32,3), labels, class names or None, files read) from an official CIFAR python folder."""
    spec = CIFAR_FILES[variant]
    images, labels, files = [], [], []
    for path in cifar_file_paths(folder, variant, split):
        record = _unpickle(path)
        data = np.asarray(_field(record, b"data", path))
        batch_labels = np.asarray(_field(record, spec["labels"], path), dtype=np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
            raise CorruptDataError(f"{path}: expected uint8 data (N, 3072) and N labels; got {data.dtype} "
                                   f"{data.shape} and {batch_labels.shape[0]} labels", str(path))
        # Rows hold the red plane, then green, then blue, each 32x32 row-major.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
        files.append(path)
    names = None
    meta_path = folder / spec["meta"]
    if meta_path.exists():
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in _field(_unpickle(meta_path), spec["names"], meta_path)]
    return np.concatenate(images), np.concatenate(labels), names, files


def read_svhn(path: Path):
    """(images (N,32,32,3), labels with 10 mapped to 0, files read) from an official SVHN ``*_32x32.mat``."""
    import scipy.io

    try:
        record = scipy.io.loadmat(str(path))
        x = np.asarray(record["X"])
        y = np.asarray(record["y"]).astype(np.int64).reshape(-1)
    except Exception as exc:  # MatReadError, ValueError, OSError, KeyError on a wrong file
        raise CorruptDataError(f"cannot read SVHN file {path}: {exc!r}. Re-download or re-copy it.", str(path)) from exc
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y) or x.dtype != np.uint8:
        raise CorruptDataError(f"{path}: expected X uint8 (32, 32, 3, N) and y (N, 1); got X {x.dtype} {x.shape}, "
                               f"y {y.shape}", str(path))
    y[y == 10] = 0  # SVHN stores the digit 0 as class 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y, [path]


def idx_path(folder: Path, base: str) -> Path | None:
    """``base`` or ``base.gz`` inside ``folder``, whichever exists (the unpacked file first)."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise CorruptDataError(f"cannot read idx file {path}: {exc!r}", str(path)) from exc
    if len(data) < 4 + 4 * expected_dims:
        raise CorruptDataError(f"{path}: too short for an idx header ({len(data)} bytes)", str(path))
    magic = int.from_bytes(data[0:4], "big")
    if magic != 0x0800 + expected_dims:  # type 0x08 = unsigned byte
        raise CorruptDataError(f"{path}: idx magic {magic:#x}, expected {0x0800 + expected_dims:#x}", str(path))
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_dims)]
    offset = 4 + 4 * expected_dims
    if len(data) != offset + int(np.prod(dims)):
        raise CorruptDataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but the file holds "
                               f"{len(data) - offset}; it is truncated or corrupt", str(path))
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def read_idx(folder: Path, split: str):
    """(grey images (N,28,28), labels, files read) from MNIST-style idx files in ``<X>/raw/``."""
    image_base, label_base = IDX_FILES[split]
    image_path, label_path = idx_path(folder, image_base), idx_path(folder, label_base)
    if image_path is None or label_path is None:
        raise CorruptDataError(f"{folder}: {image_base}[.gz] and {label_base}[.gz] must both exist", str(folder))
    images = _read_idx(image_path, 3)
    labels = _read_idx(label_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise CorruptDataError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels",
                               str(image_path))
    return images, labels, [image_path, label_path]
