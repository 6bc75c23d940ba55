"""Image codecs as experimental controls.

- ``jpeg_roundtrip``: the offline CIFAR-10 copy is JPEG q75 with 4:2:0 chroma subsampling while the OOD sets are
  not; passing the OOD images through the same encoding shows whether a detector keys on JPEG artefacts.
- ``png_bits_per_dim``: PNG-compressed length per sub-pixel, the input-complexity term of Serrà et al. used by
  "Glow (diff to PNG)".
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def jpeg_roundtrip(images: np.ndarray, quality: int = 75, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode each image as JPEG (``quality``, chroma ``subsampling``) with PIL and decode it again."""
    images = _check(images)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def png_bits_per_dim(images: np.ndarray, compress_level: int = 9) -> np.ndarray:
    """PNG-compressed size of each image in bits per sub-pixel (bits / (H * W * 3))."""
    images = _check(images)
    dims = images.shape[1] * images.shape[2] * 3
    sizes = np.empty(len(images), np.float64)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=compress_level)
        sizes[i] = 8 * buf.tell() / dims
    return sizes
