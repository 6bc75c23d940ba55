"""Feature-space baselines beyond the paper: kNN and Mahalanobis distance in the LPIPS backbone's features.

SR-OOD scores with LPIPS, i.e. with an ImageNet AlexNet or VGG16. These detectors use the same frozen backbone
without any generative model, fitted on ID training images only, so a reader can see what the repair adds
beyond the perceptual network it scores with. No training.

Features of an image: at each of the five layers LPIPS compares, the channel vector at every position is
scaled to unit length (as LPIPS does), averaged over positions; the five averages are concatenated
(AlexNet: 1,152 numbers, VGG16: 1,472).

- ``FeatureKNN``: distance of the unit-normalised feature to its k-th nearest ID training feature (Sun et al.
  2022), computed by pytorch-ood's ``KNN``.
- ``FeatureMahalanobis``: Mahalanobis distance to one Gaussian fitted on the ID features (mean and a
  Ledoit-Wolf shrunk covariance: Pokemon has fewer training images than feature dimensions). pytorch-ood's
  ``Mahalanobis`` is class-conditional with an unshrunk covariance; with one class and no shrinkage the two
  rank every image the same (tests/test_baselines_features.py).
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import torch

from srood_lib.config import require_keys
from srood_lib.data import subsample_indices
from srood_lib.perceptual import get_lpips, unit_normalize
from srood_lib.runtime import data_fingerprint, lru_memo, resolve_device, to_float_images, uint8_to_tensor

FEATURE_KEYS = ("k", "n_fit", "batch_size", "shrinkage")
PROGRESS_MIN_BATCHES = 20  # shorter passes take seconds: no bar
# kNN and Mahalanobis of one backbone see the same images (fit subset, then each test set): one feature pass serves
# both. Scoring runs one detector over every set, then the next, so the memo must hold a table's sets (ID + up to
# 7 OOD) and the fit subsets; 16 entries do (VGG: ~12 MB per 2,000 images, ~60 MB for the 10,000-image fit set).
_MEMO: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_MEMO_SIZE = 16


@torch.no_grad()
def backbone_features(images: np.ndarray, net: str, device: torch.device | str = "cpu", batch: int = 256,
                      progress: bool = False) -> torch.Tensor:
    """float32 (N, D) features of uint8 ``images`` (N, H, W, 3) in the LPIPS backbone ``net`` (see module doc).
    Memoised on (net, device, batch, images), so the detectors of one backbone share one pass."""
    key = (net, str(device), int(batch), data_fingerprint(images))
    z = lru_memo(_MEMO, key, _MEMO_SIZE, lambda: _backbone_features(images, net, device, batch, progress))
    return z.clone()  # a copy: a caller that changes it in place cannot change the memo


def _backbone_features(images: np.ndarray, net: str, device, batch: int, progress: bool) -> torch.Tensor:
    from srood_lib.progress import tqdm

    model = get_lpips(net, device)
    data = uint8_to_tensor(images)
    out = []
    starts = range(0, len(data), batch)
    for start in tqdm(starts, disable=not progress or len(starts) < PROGRESS_MIN_BATCHES, desc=f"{net} features",
                      unit="batch"):
        x = to_float_images(data[start:start + batch]).to(device)
        if x.device.type == "cpu":  # ~1.4x faster there (benchmarks/bench_table_scoring.py); same to float rounding
            x = x.contiguous(memory_format=torch.channels_last)
        layers = model.net(model.scaling_layer(x))
        out.append(torch.cat([unit_normalize(f).mean(dim=(2, 3)) for f in layers], dim=1).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


class _FeatureDetector:
    method_prefix = ""

    def __init__(self, config: dict, net: str):
        require_keys(config, ("features", "seed", "device"), "baselines")
        require_keys(config["features"], FEATURE_KEYS, "baselines.features")
        self.config = copy.deepcopy(config)
        self.net = net
        self.device = resolve_device(config["device"])
        self.n_fitted = 0

    @property
    def method(self) -> str:
        return f"{self.method_prefix} ({'AlexNet' if self.net == 'alex' else 'VGG16'} features)"

    def features(self, images: np.ndarray, progress: bool = False) -> torch.Tensor:
        return backbone_features(images, self.net, self.device, int(self.config["features"]["batch_size"]),
                                 progress)

    def fit(self, images: np.ndarray, progress: bool = True, labels: np.ndarray | None = None):
        """Fit on (a seeded subset of ``features.n_fit``) ID training images; ``labels`` are not used."""
        n_fit = self.config["features"]["n_fit"]
        fit_images = images[subsample_indices(len(images), n_fit, int(self.config["seed"]))]
        z = self.features(fit_images, progress)
        self.n_fitted = len(z)
        self._fit_features(z)
        return self

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        if not self.n_fitted:
            raise RuntimeError(f"{self.method} is not fitted: call fit(ID training images) first")
        return self._score_features(self.features(images, progress)).double().numpy()


class FeatureKNN(_FeatureDetector):
    method_prefix = "KNN"

    def _fit_features(self, z: torch.Tensor) -> None:
        from pytorch_ood.detector import KNN

        k = int(self.config["features"]["k"])
        if len(z) < k:
            raise ValueError(f"KNN with k={k} needs at least {k} ID training images, got {len(z)}; lower "
                             "baselines.features.k")
        self._knn = KNN(None, k=k).fit_features(z, torch.zeros(len(z), dtype=torch.long))

    def _score_features(self, z: torch.Tensor) -> torch.Tensor:
        return self._knn.predict_features(z)


class FeatureMahalanobis(_FeatureDetector):
    method_prefix = "Mahalanobis"

    def _fit_features(self, z: torch.Tensor) -> None:
        x = z.double().numpy()
        self.mean = x.mean(axis=0)
        shrinkage = self.config["features"]["shrinkage"]
        if shrinkage == "ledoit-wolf":
            from sklearn.covariance import LedoitWolf

            cov = LedoitWolf(assume_centered=False).fit(x).covariance_
        else:  # a fixed shrinkage towards the scaled identity, 0 = the sample covariance
            sample = np.cov(x, rowvar=False, bias=True)
            mu = np.trace(sample) / len(sample)
            cov = (1 - float(shrinkage)) * sample + float(shrinkage) * mu * np.eye(len(sample))
        self.precision = np.linalg.pinv(cov, hermitian=True)

    def _score_features(self, z: torch.Tensor) -> torch.Tensor:
        d = z.double().numpy() - self.mean
        return torch.from_numpy(((d @ self.precision) * d).sum(axis=1))  # d P d^T per row; BLAS (einsum: 20x slower)
