"""Single-image conversions (any PIL mode -> RGB uint8, crops, bicubic resize) and uint8 <-> tensor.

Every resize is PIL bicubic, which antialiases when shrinking (its filter support scales with the factor).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CorruptDataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# The usual CelebA face box on the aligned 178x218 image, as fractions so it applies to any scaled copy
# (on the half-resolution 89x109 copy it is (9.5, 19.5, 79.5, 89.5)).
CELEBA_FULL_SIZE = (178, 218)
CELEBA_FACE_BOX = (19, 39, 159, 179)


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes fully (so truncation is caught here); ``where`` names the file in errors."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"), which tells the user nothing.
        reason = ("not in any image format PIL reads" if isinstance(exc, UnidentifiedImageError)
                  else str(exc) or type(exc).__name__)
        raise CorruptDataError(
            f"cannot decode image {where}: {reason}. The file is corrupt or truncated; replace or delete it.", where
        ) from exc
    return image


def to_rgb(image: Image.Image, where: str = "<image>") -> Image.Image:
    """Convert any mode to 8-bit RGB explicitly.

    Grey and palette images are replicated/looked up; transparent images (RGBA, LA, palette with a
    transparent colour) are composited on white; 16-bit grey is scaled 0..65535 -> 0..255 (PIL's own
    convert would clip it instead).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float64)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if mode == "F":
        raise CorruptDataError(f"{where}: floating-point images (mode F) have no defined 8-bit range; "
                               "save it as an 8- or 16-bit image", where)
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return composite_on_white(image)
    return image.convert("RGB")  # 1, L, P (opaque), CMYK, YCbCr, LAB, HSV


def composite_on_white(image: Image.Image) -> Image.Image:
    """Alpha-composite onto a white background: rgb * a + 255 * (1 - a), rounded."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")


def center_square_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square, on whole pixels (so an already-square image is untouched)."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def celeba_face_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The 140x140 face box of the full-size aligned image, scaled to this copy's size (sub-pixel allowed)."""
    sx = width / CELEBA_FULL_SIZE[0]
    sy = height / CELEBA_FULL_SIZE[1]
    x0, y0, x1, y1 = CELEBA_FACE_BOX
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def crop_and_resize(image: Image.Image, resolution: int, crop: str) -> np.ndarray:
    """Crop (``center_square`` or ``celeba_box``) then bicubic-resize an RGB image to (R, R, 3) uint8."""
    width, height = image.size
    if crop == "center_square":
        box = center_square_box(width, height)
    elif crop == "celeba_box":
        box = celeba_face_box(width, height)
    else:
        raise ValueError(f"unknown crop {crop!r}; expected 'center_square' or 'celeba_box'")
    # PIL returns an exact copy when the box is the whole image and the size is unchanged.
    out = image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box)
    return np.asarray(out, dtype=np.uint8)


def resize_array(array: np.ndarray, resolution: int) -> np.ndarray:
    """Bicubic-resize one square uint8 image, (H, W) grey or (H, W, 3), to (R, R[, 3]); identity if same size."""
    if array.shape[0] == resolution and array.shape[1] == resolution:
        return array
    image = Image.fromarray(np.ascontiguousarray(array))
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.BICUBIC), dtype=np.uint8)


def prepare_image_bytes(data: bytes, where: str, resolution: int, crop: str) -> np.ndarray:
    """Bytes of one image file -> (R, R, 3) uint8 RGB, via decode, RGB conversion, crop and resize."""
    return crop_and_resize(to_rgb(decode_image(data, where), where), resolution, crop)


def to_tensor(images):
    """uint8 numpy (N, H, W, 3) -> float32 torch tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"to_tensor expects uint8 images shaped (N, H, W, 3); got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (tensor / 127.5 - 1.0).contiguous()


def to_uint8(tensor) -> np.ndarray:
    """Float tensor (N, 3, H, W) in [-1, 1] -> uint8 numpy (N, H, W, 3); values outside [-1, 1] are clipped."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        tensor = torch.as_tensor(np.asarray(tensor))
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"to_uint8 expects a tensor shaped (N, 3, H, W); got {tuple(tensor.shape)}")
    pixels = ((tensor.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()
