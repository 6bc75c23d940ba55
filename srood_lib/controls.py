"""Controls beside the method's rows (BEYOND THE PAPER): how far a trivial statistic gets on the same split.

Pokemon sit on white backgrounds, so an OOD detector for Pokemon as ID could win by measuring brightness alone.
The mean-pixel control is that detector, fitted on ID training images only: score = |mean pixel value of x -
the median over ID training images| (both in [0, 255]), so it flags images brighter or darker than ID. A method
row is informative only where it beats this row clearly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from srood_lib.data import ImageSet
from srood_lib.rows import evaluate, table_of

MEAN_PIXEL = "Mean pixel value (control, beyond the paper)"


def mean_pixel(images: np.ndarray) -> np.ndarray:
    """Mean over all pixels and channels of uint8 ``(N, H, W, 3)`` images."""
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(axis=1)


def mean_pixel_scores(train_images: np.ndarray, images: np.ndarray) -> np.ndarray:
    """|mean pixel of each image - median mean pixel of the ID training images| (higher = more OOD)."""
    return np.abs(mean_pixel(images) - float(np.median(mean_pixel(train_images))))


def control_rows(cfg: dict, train: ImageSet, id_set: ImageSet, ood: dict[str, ImageSet]) -> pd.DataFrame:
    """Rows of the mean-pixel control for the experiment's table, on the same ID test and OOD images."""
    s_id = mean_pixel_scores(train.images, id_set.images)
    s_ood = {name: mean_pixel_scores(train.images, s.images) for name, s in ood.items()}
    note = f"|mean pixel - median over {len(train)} ID training images|; no model"
    return evaluate(cfg, table_of(cfg), MEAN_PIXEL, s_id, s_ood, id_set, ood, note=note)
