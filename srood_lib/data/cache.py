"""The dataset cache: ``cache_dir()/datasets/<name>/<split>_<R>px.npz`` plus a JSON manifest beside it.

Writes are atomic (a temp file in the same folder, then ``os.replace``), so a failure never leaves a
half-written file; the manifest is written last, and a cache entry only counts when both files exist.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write
from ..config import cache_dir


def entry_paths(name: str, split: str, resolution: int) -> tuple[Path, Path]:
    """(arrays .npz, manifest .json) of one cache entry."""
    folder = cache_dir() / "datasets" / name
    stem = f"{split}_{resolution}px"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def raw_dir() -> Path:
    """Where official downloads are put and unpacked."""
    return cache_dir() / "raw"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over shapes, dtypes and bytes of images then labels (C order)."""
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_entry(npz_path: Path, json_path: Path, images: np.ndarray, labels: np.ndarray, manifest: dict) -> dict:
    """Write arrays then manifest (atomically each); fills in count, shape, sha256 and version. Returns it."""
    head = {key: manifest[key] for key in ("name", "split", "resolution") if key in manifest}
    head.update(count=int(len(images)), shape=list(images.shape), sha256=sha256_arrays(images, labels))
    manifest = {**head, **manifest, "srood_version": __version__}
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    atomic_write(npz_path, lambda f: np.savez(f, images=images, labels=labels))
    try:
        atomic_write(json_path, lambda f: f.write(text.encode()))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            npz_path.unlink()  # arrays without a manifest are not an entry; don't leave them behind
        raise
    return manifest


def load_entry(npz_path: Path, json_path: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Arrays and manifest of a cache entry, or None when absent or unreadable (then it gets rebuilt)."""
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        manifest = json.loads(json_path.read_text())
        with np.load(npz_path, allow_pickle=False) as arrays:
            images, labels = arrays["images"], arrays["labels"]
        if len(images) != manifest["count"] or len(labels) != len(images) or images.dtype != np.uint8:
            raise ValueError(f"holds {len(images)} images / {len(labels)} labels, manifest says {manifest['count']}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring unreadable cache entry {npz_path} ({exc}); rebuilding it from the source")
        return None
    return images, labels, manifest
