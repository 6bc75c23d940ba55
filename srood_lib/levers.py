"""Scoring levers BEYOND THE PAPER, on a trained SR-OOD detector. Their rows are labelled as such and shown beside
the faithful SR-OOD rows, never instead of them.

- ``median_erosions``: the median of S(x) over every candidate erosion of the variant (several erosions per
  image with a robust summary, as LMD scores several masks per image), at the detector's mixing layer and backbone;
- ``zscore_l2_lpips``: z(L2) + z(LPIPS) of the repair at the chosen setting, each distance z-scored with the mean
  and standard deviation of held-out ID validation images (a distance combination fixed on ID data only, in the
  spirit of DDPM-OOD's combined reconstruction metrics).

Both use only ID data to set anything; neither retrains the repair network.

Levers that *retrain* it (``trained_levers`` in ``configs/method.yaml``, notebook 09) are config overrides of the
experiment: ``trained_lever_config`` applies one, and the lever's network gets its own weights key, so the faithful
network is never touched. ``wnorm``: pSp's W-norm penalty ``lambda_wnorm * ||w+ - w_avg||`` in training, which
pulls codes towards the prior's mean latent and so shrinks what an OOD image can be encoded into. ``w_latent``:
the encoder gives one code for every layer (W, not the paper's W+), so a repair is one drawing of the prior.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from srood_lib.config import apply_overrides

LEVERS = {
    "median_erosions": "median of S over all candidate erosions",
    "zscore_l2_lpips": "z(L2) + z(LPIPS), z-scored on held-out ID",
}


def median_over_erosions(detector, images: np.ndarray) -> np.ndarray:
    """Median over the variant's candidate erosions of S(x) (chosen k and backbone)."""
    per = [detector.score(images, erosion=name) for name in detector.config["candidate_erosions"]]
    return np.median(np.stack(per), axis=0)


class ZScoredL2LPIPS:
    """z(L2) + z(LPIPS) with the moments of ID validation scores (fitted once, then applied to any set)."""

    def __init__(self, detector, val_images: np.ndarray):
        self.detector = detector
        self.moments = {m: (float(s.mean()), float(s.std()) or 1.0)
                        for m, s in self._raw(val_images).items()}

    def _raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"l2": self.detector.score(images, metric="l2"), "lpips": self.detector.score(images, metric="lpips")}

    def score(self, images: np.ndarray) -> np.ndarray:
        raw = self._raw(images)
        return sum((raw[m] - mu) / sd for m, (mu, sd) in self.moments.items())


def lever_scores(detector, sets: Mapping[str, np.ndarray], val_images: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """``{lever: {set name: scores}}`` for every lever of :data:`LEVERS`."""
    z = ZScoredL2LPIPS(detector, val_images)
    return {"median_erosions": {name: median_over_erosions(detector, imgs) for name, imgs in sets.items()},
            "zscore_l2_lpips": {name: z.score(imgs) for name, imgs in sets.items()}}


# ------------------------------------------------------------------------------------ levers that retrain

TRAINED_LEVERS = {"wnorm": "W-norm penalty (pSp)", "w_latent": "encoder into W, one code for all layers"}


def trained_lever_config(cfg: dict, name: str) -> dict:
    """A copy of the experiment's ``cfg`` with trained lever ``name``'s overrides (``trained_levers.runs``)."""
    runs = cfg["trained_levers"]["runs"]
    if name not in runs:
        raise KeyError(f"no trained lever {name!r}: configs/method.yaml trained_levers.runs has {', '.join(runs)}")
    return apply_overrides(cfg, runs[name])


def trained_lever_method(cfg: dict, name: str, variant_method: str) -> str:
    """The row label of trained lever ``name`` on ``variant_method``: what it is, its overrides, and that it is
    beyond the paper, e.g. "SR-OOD_SR + W-norm penalty (pSp), lambda_wnorm=0.001 (beyond the paper)"."""
    runs = cfg["trained_levers"]["runs"]
    overrides = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in runs[name].items())
    return f"{variant_method} + {TRAINED_LEVERS.get(name, name)}, {overrides} (beyond the paper)"
