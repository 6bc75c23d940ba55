"""Official downloads into ``cache_dir()/raw`` (only ever called with ``download=True``).

torchvision's dataset classes fetch CIFAR-10/100, SVHN, MNIST, Fashion-MNIST, DTD and CelebA; the ODIN tarballs
(LSUN, LSUN_resize, iSUN) and the Pokemon archive come from their documented URLs. Everything unpacks into the
same layouts the local data dir accepts, so one reader serves both.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from .registry import ODIN_URLS, POKEGAN_COMMIT, POKEMON_URL

TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN", "mnist": "MNIST",
                       "fashionmnist": "FashionMNIST", "texture": "DTD", "celeba": "CelebA"}
ODIN_ARCHIVES = {"lsun": "LSUN.tar.gz", "lsun_resize": "LSUN_resize.tar.gz", "isun": "iSUN.tar.gz"}


# Seconds a connection may stay silent before the download fails (urllib waits forever by default): a network that
# drops packets ends in the same one-line "FAILED" as one that refuses them.
DOWNLOAD_TIMEOUT_S = 60


@contextlib.contextmanager
def socket_timeout(seconds: float):
    """Every socket opened inside (urllib's, torchvision's) times out after ``seconds`` of silence."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def official_url(name: str) -> str:
    """What ``fetch`` downloads for ``name``, for messages."""
    if name in TORCHVISION_CLASSES:
        return f"torchvision.datasets.{TORCHVISION_CLASSES[name]}(download=True)"
    if name in ODIN_URLS:
        return ODIN_URLS[name]
    if name == "pokemon":
        return POKEMON_URL
    raise ValueError(f"{name!r} has no official download")


def fetch(name: str, split: str, raw: Path) -> None:
    """Download and unpack the official files of ``name`` (the ``split`` where they come per split) into ``raw``."""
    raw.mkdir(parents=True, exist_ok=True)
    with socket_timeout(DOWNLOAD_TIMEOUT_S):
        _fetch(name, split, raw)


def _fetch(name: str, split: str, raw: Path) -> None:
    if name in TORCHVISION_CLASSES:
        import torchvision.datasets as tv_datasets

        cls = getattr(tv_datasets, TORCHVISION_CLASSES[name])
        if name == "svhn":
            cls(root=str(raw / "svhn"), split=split, download=True)
        elif name == "texture":
            cls(root=str(raw), split="test", download=True)  # one archive holds every image
        elif name == "celeba":
            cls(root=str(raw), split="all", download=True)
        else:
            cls(root=str(raw), train=(split == "train"), download=True)
    elif name in ODIN_URLS:
        # ?dl=1 makes Dropbox send the file instead of its preview page.
        fetch_archive(ODIN_URLS[name] + "?dl=1", raw, ODIN_ARCHIVES[name])
    elif name == "pokemon":
        fetch_archive(POKEMON_URL, raw, f"pokeGAN-{POKEGAN_COMMIT}.zip")
    else:
        raise ValueError(f"{name!r} has no official download")


def fetch_archive(url: str, raw: Path, filename: str) -> None:
    """Download to ``<filename>.part``, rename when complete, then unpack into ``raw``."""
    from torchvision.datasets.utils import download_url, extract_archive

    target = raw / filename
    if not target.exists():
        partial = raw / f"{filename}.part"
        try:
            download_url(url, str(raw), partial.name)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    extract_archive(str(target), str(raw))
