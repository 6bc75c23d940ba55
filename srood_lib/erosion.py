"""Erosions T: the corruptions SR-OOD applies before the repair network restores the image.

All erosions take a float tensor ``(N, 3, H, W)`` in ``[-1, 1]`` (batched, CPU or GPU) and return a tensor of
the same shape, dtype and device. They are small frozen dataclasses with a readable ``name`` that
``parse_erosion`` turns back into the same object, so a profile config can list erosion sets as plain strings:

=============================  ==========================================================================
name                           erosion
=============================  ==========================================================================
``identity``                   no change: the reconstruction task (SR-OOD_Rec)
``bicubic_x4``                 bicubic down-sampling by 4, then bicubic up-sampling back (SR-OOD_SR)
``blackout_16x16_off0_0``      black (-1) rectangle of height 16 and width 16 whose centre sits
                               (dy, dx) = (0, 0) pixels from the image centre (SR-OOD_Inpaint, Table V)
``blackout_random_8-16``       black rectangle, height and width drawn independently from {8, ..., 16},
                               placed uniformly at random fully inside the image, per image (training)
=============================  ==========================================================================

Training (Algorithm 1) draws one erosion per image uniformly from a set T: ``apply_random_erosions``. The test
stage (Algorithm 2) fixes one erosion T* and simply calls it.

Randomness only comes from an explicit ``torch.Generator``; random numbers are drawn on the generator's
device (CPU for a default ``torch.Generator()``) and then moved to the data, so a seeded CPU generator gives
the same erosions whether the images live on the CPU or a GPU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

# Pixel value used to black out a region: black in the [-1, 1] convention.
BLACK = -1.0
# Slack on the [-1, 1] range check: resampled or float16 images can overshoot by a rounding error.
RANGE_TOLERANCE = 1e-3


def check_images(x: torch.Tensor) -> tuple[int, int]:
    """Validate a batch of images ``(N, 3, H, W)`` in ``[-1, 1]`` and return ``(H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"erosions take a torch.Tensor, got {type(x).__name__}; convert uint8 images with "
                        "srood_lib.data.to_tensor first")
    if not x.is_floating_point():
        raise TypeError(f"erosions take a float tensor in [-1, 1], got dtype {x.dtype}; convert uint8 images "
                        "with x.float() / 127.5 - 1")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"erosions take images shaped (N, 3, H, W), got {tuple(x.shape)}; add a batch "
                         "dimension with x[None] or move channels first with x.permute(0, 3, 1, 2)")
    if x.numel() > 0:
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        # Written so that NaN fails the check too.
        if not (lo >= -1 - RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):
            raise ValueError(f"erosions take images in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; rescale "
                             "[0, 1] images with 2 * x - 1 and [0, 255] images with x / 127.5 - 1")
    return int(x.shape[2]), int(x.shape[3])


def _randint(low: int, high_inclusive: int, n: int, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    """n integers uniform on {low, ..., high_inclusive}, drawn on the generator's device, moved to ``device``."""
    draw_device = generator.device if generator is not None else torch.device("cpu")
    values = torch.randint(low, high_inclusive + 1, (n,), generator=generator, device=draw_device)
    return values.to(device)


def _rectangle_mask(height: int, width: int, top: torch.Tensor, left: torch.Tensor, h: torch.Tensor,
                    w: torch.Tensor) -> torch.Tensor:
    """Boolean mask (N, 1, H, W), True inside each image's rectangle [top, top+h) x [left, left+w)."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + h)[:, None])  # (N, H)
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < (left + w)[:, None])  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


class Erosion:
    """Base class: ``erosion(x, generator=None)`` returns the eroded batch; ``erosion.name`` round-trips."""

    #: True when the erosion draws random numbers (then pass a generator for repeatable results).
    is_random: bool = False

    @property
    def name(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(x)
        return self._apply(x, generator)

    def _apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Identity(Erosion):
    """No erosion: the repair task becomes plain reconstruction (SR-OOD_Rec)."""

    @property
    def name(self) -> str:
        return "identity"

    def _apply(self, x, generator):
        return x.clone()


@dataclass(frozen=True)
class BicubicDownUp(Erosion):
    """Bicubic down-sampling by an integer ``factor`` and bicubic up-sampling back to the input size (SR-OOD_SR).

    The down step uses antialiasing (as image libraries do when shrinking), so the eroded image holds the
    low-pass content a real low-resolution capture would; the result is clamped to [-1, 1] because bicubic
    kernels overshoot at edges.
    """

    factor: int

    def __post_init__(self):
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 2:
            raise ValueError(f"bicubic factor must be an integer >= 2, got {self.factor!r}; use 'identity' for "
                             "no down-sampling")

    @property
    def name(self) -> str:
        return f"bicubic_x{self.factor}"

    def _apply(self, x, generator):
        height, width = x.shape[2], x.shape[3]
        if height % self.factor or width % self.factor:
            raise ValueError(f"{self.name}: factor {self.factor} does not divide the image size {height}x{width}; "
                             f"pick a factor that divides both sides or resize the images")
        small = F.interpolate(x, size=(height // self.factor, width // self.factor), mode="bicubic",
                              align_corners=False, antialias=True)
        # Up-sampling needs no antialiasing (it only matters when shrinking).
        restored = F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False)
        return restored.clamp(-1.0, 1.0)


@dataclass(frozen=True)
class Blackout(Erosion):
    """Black out an ``h`` x ``w`` rectangle whose centre is ``(dy, dx)`` pixels from the image centre.

    Placement: top = (H - h) // 2 + dy and left = (W - w) // 2 + dx, i.e. the rectangle is centred (rounding
    up-left when H - h is odd) and then shifted down by dy and right by dx. Table V of the paper uses centre
    offsets of 0, 4 and 8 pixels. The rectangle must lie fully inside the image.
    """

    h: int
    w: int
    dy: int = 0
    dx: int = 0

    def __post_init__(self):
        for field_name in ("h", "w", "dy", "dx"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"blackout {field_name} must be an integer number of pixels, got {value!r}")
        if self.h < 1 or self.w < 1:
            raise ValueError(f"blackout rectangle must be at least 1x1 pixels, got {self.h}x{self.w}")

    @property
    def name(self) -> str:
        return f"blackout_{self.h}x{self.w}_off{self.dy}_{self.dx}"

    def placement(self, height: int, width: int) -> tuple[int, int]:
        """(top, left) of the rectangle in an image of ``height`` x ``width``; raises if it does not fit."""
        if self.h > height or self.w > width:
            raise ValueError(f"{self.name}: a {self.h}x{self.w} rectangle is larger than the {height}x{width} "
                             "image; use a smaller rectangle")
        top = (height - self.h) // 2 + self.dy
        left = (width - self.w) // 2 + self.dx
        if top < 0 or left < 0 or top + self.h > height or left + self.w > width:
            raise ValueError(f"{self.name}: with offset (dy, dx) = ({self.dy}, {self.dx}) the rectangle reaches "
                             f"outside the {height}x{width} image (rows {top}..{top + self.h - 1}, columns "
                             f"{left}..{left + self.w - 1}); use a smaller offset or a smaller rectangle")
        return top, left

    def _apply(self, x, generator):
        top, left = self.placement(x.shape[2], x.shape[3])
        out = x.clone()
        out[:, :, top:top + self.h, left:left + self.w] = BLACK
        return out


@dataclass(frozen=True)
class RandomBlackout(Erosion):
    """Black out a random rectangle per image, for training (SR-OOD_Inpaint's erosion set).

    Height and width are drawn independently and uniformly from {min_size, ..., max_size}; the top-left corner
    is then uniform over all positions that keep the rectangle fully inside the image.
    """

    min_size: int
    max_size: int
    is_random = True

    def __post_init__(self):
        for field_name in ("min_size", "max_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"random blackout {field_name} must be an integer, got {value!r}")
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"random blackout needs 1 <= min_size <= max_size, got {self.min_size}-{self.max_size}")

    @property
    def name(self) -> str:
        return f"blackout_random_{self.min_size}-{self.max_size}"

    def _apply(self, x, generator):
        n, height, width = x.shape[0], x.shape[2], x.shape[3]
        if self.max_size > min(height, width):
            raise ValueError(f"{self.name}: rectangles up to {self.max_size} pixels do not fit a {height}x{width} "
                             f"image; use max_size <= {min(height, width)}")
        h = _randint(self.min_size, self.max_size, n, generator, x.device)
        w = _randint(self.min_size, self.max_size, n, generator, x.device)
        # Uniform top-left corner on {0, ..., H - h}: scale a uniform [0, 1) draw per image (sizes differ).
        draw_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((2, n), generator=generator, device=draw_device, dtype=torch.float64).to(x.device)
        top = (u[0] * (height - h + 1)).long().clamp(max=height - h)
        left = (u[1] * (width - w + 1)).long().clamp(max=width - w)
        mask = _rectangle_mask(height, width, top, left, h, w)
        return x.masked_fill(mask, BLACK)


_PATTERNS: list[tuple[re.Pattern, callable]] = [
    (re.compile(r"identity"), lambda m: Identity()),
    (re.compile(r"bicubic_x(\d+)"), lambda m: BicubicDownUp(int(m[1]))),
    (re.compile(r"blackout_random_(\d+)-(\d+)"), lambda m: RandomBlackout(int(m[1]), int(m[2]))),
    (re.compile(r"blackout_(\d+)x(\d+)(?:_off(-?\d+)_(-?\d+))?"),
     lambda m: Blackout(int(m[1]), int(m[2]), int(m[3] or 0), int(m[4] or 0))),
]
NAME_FORMS = ("identity", "bicubic_x<factor>", "blackout_<h>x<w>_off<dy>_<dx>", "blackout_<h>x<w>",
              "blackout_random_<min>-<max>")


def parse_erosion(name: str | Erosion) -> Erosion:
    """Turn a name such as ``"bicubic_x4"`` into its erosion; ``parse_erosion(e.name) == e`` for every erosion.

    ``"blackout_16x16"`` is accepted as shorthand for ``"blackout_16x16_off0_0"``. An ``Erosion`` is returned
    unchanged.
    """
    if isinstance(name, Erosion):
        return name
    if not isinstance(name, str):
        raise TypeError(f"an erosion name must be a string, got {type(name).__name__} {name!r}")
    text = name.strip()
    for pattern, build in _PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return build(match)
    raise ValueError(f"unknown erosion {name!r}; write one of: {', '.join(NAME_FORMS)} "
                     "(e.g. 'bicubic_x4', 'blackout_16x16_off8_8', 'blackout_random_8-16')")


def erosion_set(names: Iterable[str | Erosion]) -> list[Erosion]:
    """Parse a config's erosion set (a list of names) into erosions, keeping the order (index u-1 is T_u)."""
    if isinstance(names, (str, Erosion)):
        raise TypeError(f"erosion_set takes a list of names, got the single name {str(names)!r}; wrap it: "
                        f"[{str(names)!r}]")
    erosions = [parse_erosion(n) for n in names]
    if not erosions:
        raise ValueError("an erosion set needs at least one erosion, e.g. ['bicubic_x2', 'bicubic_x4']")
    seen = set()
    for e in erosions:
        if e in seen:
            # A repeat would silently double that erosion's sampling weight in Algorithm 1.
            raise ValueError(f"erosion {e.name!r} is listed twice in the erosion set; list each erosion once")
        seen.add(e)
    return erosions


def apply_random_erosions(x: torch.Tensor, erosions: Sequence[Erosion],
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's erosion step: each image gets its own T_u with u uniform over the set.

    Returns ``(eroded, index)`` where ``index[i]`` is the 0-based position in ``erosions`` used for image i
    (the paper's u minus one), a long tensor on ``x``'s device. Images that share an erosion are processed as
    one batch. With a seeded generator the result is repeatable.
    """
    check_images(x)
    erosions = [parse_erosion(e) for e in erosions]
    if not erosions:
        raise ValueError("apply_random_erosions needs at least one erosion, e.g. erosion_set(['bicubic_x4'])")
    index = _randint(0, len(erosions) - 1, x.shape[0], generator, x.device)
    out = torch.empty_like(x)
    # Groups in ascending erosion order, so random erosions consume the generator in a fixed order.
    for k in torch.unique(index).tolist():
        rows = (index == k).nonzero(as_tuple=True)[0]
        out[rows] = erosions[k](x[rows], generator)
    return out, index
