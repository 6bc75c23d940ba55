"""The dataset cache: ``cache_dir()/datasets/<name>/<split>_<R>px.npz`` plus a JSON manifest beside it.

Writes are atomic (a temp file in the same folder, then ``os.replace``), so a failure never leaves a
half-written file; the manifest is written last, and a cache entry only counts when both files exist.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
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


def atomic_write(path: Path, write: Callable) -> None:
    """Call ``write(file_object)`` on a temp file in ``path``'s folder, fsync, then rename it onto ``path``.

    The temp file's name carries the writer's host and pid; temp files for ``path`` left by writers on this host
    that are gone (a SIGKILLed build) are removed first, so a killed write leaves nothing behind once it is redone.
    Another host's temp files (a shared cache) are left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


_HOST = socket.gethostname().replace(".", "_").replace("-", "_")


def remove_orphan_temps(path: Path) -> None:
    """Delete ``atomic_write`` temp files of ``path`` written on this host by processes that no longer run."""
    for tmp in path.parent.glob(f".{path.name}.{_HOST}-*.tmp"):
        pid = tmp.name[len(path.name) + len(_HOST) + 3:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
