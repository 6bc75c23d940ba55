"""Scoring levers BEYOND THE PAPER, on a trained SR-OOD detector. Their rows are labelled as such and shown beside
the faithful SR-OOD rows, never instead of them.

- ``median_erosions``: the median of S(x) over every candidate erosion of the variant (several erosions per
  image with a robust summary, as LMD scores several masks per image), at the detector's mixing layer and backbone;
- ``zscore_l2_lpips``: z(L2) + z(LPIPS) of the repair at the chosen setting, each distance z-scored with the mean
  and standard deviation of held-out ID validation images (a distance combination fixed on ID data only, in the
  spirit of DDPM-OOD's combined reconstruction metrics);
- ``rescaled_lpips``: LPIPS on the input and its repair both upsampled xs (bilinear) before the backbone
  (``scoring_levers.lpips_scales``). The backbones were trained on 224-px images, and at 32 px their deepest
  LPIPS layers are 1x1 to 2x2 maps. The backbone and s are chosen by the detector's own validation protocol
  (held-out ID vs. its outliers) at its T* and k, so the repairs are the faithful row's.

None looks at a test OOD set or retrains the repair network.

Levers that *retrain* it (``trained_levers`` in ``configs/method.yaml``, notebook 09) are config overrides of the
experiment: ``trained_lever_config`` applies one, and the lever's network gets its own weights key, so the faithful
network is never touched. ``wnorm``: pSp's W-norm penalty ``lambda_wnorm * ||w+ - w_avg||`` in training, which
pulls codes towards the prior's mean latent and so shrinks what an OOD image can be encoded into. ``w_latent``:
the encoder gives one code for every layer (W, not the paper's W+), so a repair is one drawing of the prior. ``zplus``:
one code per layer as in W+, but each is the prior's mapping of a z the encoder gives, so no layer's code leaves the
range of the mapping network (the W+ encoders' layout styles do: ``health.code_offsets``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from srood_lib.config import apply_overrides
from srood_lib.detector import candidates
from srood_lib.metrics import auroc
from srood_lib.perceptual import scaled_net
from srood_lib.progress import tqdm

LEVERS = {
    "median_erosions": "median of S over all candidate erosions",
    "zscore_l2_lpips": "z(L2) + z(LPIPS), z-scored on held-out ID",
    "rescaled_lpips": "LPIPS on input and repair upsampled, scale and backbone chosen on validation",
}


class MedianOverErosions:
    """Median over the variant's candidate erosions of S(x) (chosen k and backbone)."""
    note = ""

    def __init__(self, detector):
        self.detector = detector

    def score(self, images: np.ndarray) -> np.ndarray:
        per = [self.detector.score(images, erosion=name) for name in self.detector.config["candidate_erosions"]]
        return np.median(np.stack(per), axis=0)


def median_over_erosions(detector, images: np.ndarray) -> np.ndarray:
    """Median over the variant's candidate erosions of S(x) (chosen k and backbone)."""
    return MedianOverErosions(detector).score(images)


class ZScoredL2LPIPS:
    """z(L2) + z(LPIPS) with the moments of ID validation scores (fitted once, then applied to any set)."""
    note = ""

    def __init__(self, detector, val_images: np.ndarray):
        self.detector = detector
        self.moments = {m: (float(s.mean()), float(s.std()) or 1.0)
                        for m, s in self._raw(val_images).items()}

    def _raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"l2": self.detector.score(images, metric="l2"), "lpips": self.detector.score(images, metric="lpips")}

    def score(self, images: np.ndarray) -> np.ndarray:
        raw = self._raw(images)
        return sum((raw[m] - mu) / sd for m, (mu, sd) in self.moments.items())


class RescaledLPIPS:
    """S(x) as LPIPS on x and its repair upsampled xs first (whatever the detector's own distance); (backbone, s)
    chosen by the detector's validation protocol at its own T* and k: the highest mean AUROC of held-out ID vs. its
    outliers. ``selection`` keeps every candidate's AUROCs (×100)."""

    def __init__(self, detector, val_images: np.ndarray, validation_ood: Mapping[str, np.ndarray] | None,
                 scales: Sequence[int]):
        self.detector = detector
        pick, outliers = detector.validation_sets(val_images, dict(validation_ood or {}))
        nets = [scaled_net(n, s) for s in scales for n in candidates(detector.config["lpips_net"])]
        sets = tqdm([pick, *outliers.values()], unit="image set",
                    desc=f"choosing the LPIPS scale and backbone ({len(nets)} candidates)")
        s_val, *scored = [detector.score_nets(images, nets, metric="lpips") for images in sets]
        s_out = dict(zip(outliers, scored))
        rows = [{"lpips_net": n, **{kind: 100 * auroc(s_val[n], s_out[kind][n]) for kind in outliers}} for n in nets]
        table = pd.DataFrame(rows)
        table["mean"] = table[list(outliers)].mean(axis=1)
        table["chosen"] = table.index == table["mean"].idxmax()
        self.selection = table
        self.lpips_net = str(table.loc[table["chosen"], "lpips_net"].iloc[0])
        native = table[table["lpips_net"] == detector.lpips_net]["mean"]
        self.note = (f"lever: lpips={self.lpips_net}, validation mean {table['mean'].max():.2f}"
                     + (f" (lpips={detector.lpips_net}: {native.iloc[0]:.2f})" if len(native) else ""))

    @property
    def score_plan(self) -> dict:
        """What ``score`` asks of the detector, as a ``detector.prefetch_scores`` plan (one repair setting)."""
        return {(self.detector.erosion_name, self.detector.mix_from_layer): [("lpips", self.lpips_net)]}

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.detector.score(images, metric="lpips", lpips_net=self.lpips_net)


def fit_levers(detector, val_images: np.ndarray, validation_ood: Mapping[str, np.ndarray] | None = None,
               lpips_scales: Sequence[int] = (1,)) -> dict:
    """Every lever of :data:`LEVERS` for ``detector``, set on ID validation images (and, for the backbone and scale,
    the detector's own validation outliers). ``rescaled_lpips`` only when a scale other than 1 is asked."""
    out = {"median_erosions": MedianOverErosions(detector), "zscore_l2_lpips": ZScoredL2LPIPS(detector, val_images)}
    if any(int(s) != 1 for s in lpips_scales):
        out["rescaled_lpips"] = RescaledLPIPS(detector, val_images, validation_ood, lpips_scales)
    return out


def lever_scores(detector, sets: Mapping[str, np.ndarray], val_images: np.ndarray,
                 validation_ood: Mapping[str, np.ndarray] | None = None,
                 lpips_scales: Sequence[int] = (1,)) -> dict[str, dict[str, np.ndarray]]:
    """``{lever: {set name: scores}}`` for every lever ``fit_levers`` gives."""
    fitted = fit_levers(detector, val_images, validation_ood, lpips_scales)
    return {name: {set_name: lever.score(imgs) for set_name, imgs in sets.items()} for name, lever in fitted.items()}


# ------------------------------------------------------------------------------------ levers that retrain

TRAINED_LEVERS = {"wnorm": "W-norm penalty (pSp)", "w_latent": "encoder into W, one code for all layers",
                  "zplus": "encoder into Z+, each layer's code mapped into W"}


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
