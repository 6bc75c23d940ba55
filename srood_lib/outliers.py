"""Synthetic outliers made from held-out ID images, for choosing T* without any test OOD set or external data.

Each kind keeps an image's colours and low-level statistics but breaks what the ID images share:
- ``patch_shuffle``: the image cut into a grid of patches, permuted (local texture kept, layout destroyed);
- ``vflip``: upside down (every pixel kept; only the semantics of orientation change, as in Table II's VFlip);
- ``noise``: per-pixel Gaussian noise added (high-frequency corruption);
- ``invert``: the photographic negative (every edge and layout kept; colours and shading no image of the ID set
  has);
- ``rot90``: a quarter turn (objects on their side: layout statistics of the ID set broken, content kept);
- ``patch_shuffle_2``: a 2 x 2 jigsaw (large pieces: each piece looks like ID, the whole does not).

The last three were added when the first three gave AUROC ~45 for every setting of a collapsed detector (issue
"The repair network must repair"): each is an image that no repair trained on the ID set should reproduce.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

OUTLIER_KINDS = ("patch_shuffle", "vflip", "noise", "invert", "rot90", "patch_shuffle_2")


def patch_shuffle(images: np.ndarray, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Cut each image into ``grid × grid`` patches and permute them (one permutation per image)."""
    n, h, w, c = images.shape
    if h % grid or w % grid:
        raise ValueError(f"patch_shuffle: grid {grid} must divide the image size {h}x{w}")
    ph, pw = h // grid, w // grid
    patches = images.reshape(n, grid, ph, grid, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * grid, ph, pw, c)
    order = np.argsort(rng.random((n, grid * grid)), axis=1)
    shuffled = np.take_along_axis(patches, order[:, :, None, None, None], axis=1)
    return shuffled.reshape(n, grid, grid, ph, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def vflip(images: np.ndarray) -> np.ndarray:
    """Flip upside down."""
    return np.ascontiguousarray(images[:, ::-1])


def add_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` (in 0–255 units) and clip back to uint8."""
    noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def synthetic_outliers(images: np.ndarray, kinds: Iterable[str], seed: int, grid: int = 4,
                       noise_sigma: float = 25.0) -> dict[str, np.ndarray]:
    """One outlier set per kind, each made from all of ``images`` (uint8 ``(N, H, W, 3)``), deterministic in seed."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"synthetic_outliers wants uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    out = {}
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, i])
        if kind == "patch_shuffle":
            out[kind] = patch_shuffle(images, grid, rng)
        elif kind == "vflip":
            out[kind] = vflip(images)
        elif kind == "noise":
            out[kind] = add_noise(images, noise_sigma, rng)
        elif kind == "invert":
            out[kind] = 255 - images
        elif kind == "rot90":
            out[kind] = np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2)))
        elif kind == "patch_shuffle_2":
            out[kind] = patch_shuffle(images, 2, rng)
        else:
            raise ValueError(f"unknown synthetic outlier {kind!r}; choose from {', '.join(OUTLIER_KINDS)}")
    return out
