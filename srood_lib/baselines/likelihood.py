"""VAE likelihood baselines of Tables I/II: Likelihood, Typicality Test, WAIC, Likelihood Ratio, DoSE.

All use the DCGAN VAE of ``vae.py`` and log p(x) estimated by the importance-weighted bound with K = ``iwae_k``
samples (Burda et al. 2016). Scores are higher = more OOD. A trained VAE can be passed in, so one ID VAE serves
Likelihood, Typicality Test, DoSE, Likelihood Regret and WAIC's first member.

Protocol: the ID training images are split (seeded) into ``train`` (the VAEs learn on it) and ``n_holdout``
held-out images; Typicality Test and DoSE fit their statistics on the held-out images only.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from srood_lib.baselines.common import (LOG_2PI, STREAM_BACKGROUND, STREAM_IWAE, STREAM_WAIC, bits_per_dim,
                                        load_detector_blob, module_blob, module_from_blob, per_image_noise,
                                        save_detector, split_holdout)
from srood_lib.baselines.vae import (VAE, gaussian_kl, iwae_nll_from_log_w, iwae_samples, train_vae,
                                     weights_fingerprint)
from srood_lib.config import require_keys
from srood_lib.runtime import data_fingerprint, lru_memo, resolve_device, step_seed, uint8_to_tensor

COMMON_KEYS = ("vae", "n_holdout", "iwae_k", "score_batch", "seed", "device")
DECODE_CHUNK = 64  # images decoded at once inside the IWAE: memory only (about 200 MB of logits), not results
_MEMO: "OrderedDict[tuple, dict]" = OrderedDict()
_MEMO_SIZE = 64


def member_seed(seed: int, m: int) -> int:
    """Seed of WAIC member m; member 0 is the shared ID VAE (the profile's seed)."""
    return int(seed) if m == 0 else step_seed(seed, m, STREAM_WAIC)


def background_seed(seed: int) -> int:
    return step_seed(seed, 0, STREAM_BACKGROUND)


def vae_statistics(vae: VAE, images: np.ndarray, k: int, seed: int, batch: int,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Per-image statistics of a VAE on uint8 ``images`` (N, H, W, 3), all in nats, float64:

    ``nll`` (IWAE, K samples), ``rate`` (KL(q(z|x) || p(z)), analytic), ``distortion`` (-log p(x|z) averaged over
    the same K posterior samples), ``entropy`` (H[q(z|x)], analytic), ``mu`` and ``logvar`` (N, z_dim).
    Image i's noise is seeded by (seed, i), so results do not depend on ``batch``. Memoised on (weights, data,
    k, seed): the detectors sharing one VAE score each image set once.
    """
    key = (weights_fingerprint(vae), data_fingerprint(images), int(k), int(seed))
    return lru_memo(_MEMO, key, _MEMO_SIZE, lambda: _vae_statistics(vae, images, k, seed, batch, progress))


@torch.no_grad()
def _vae_statistics(vae: VAE, images: np.ndarray, k: int, seed: int, batch: int, progress: bool) -> dict:
    from srood_lib.progress import tqdm

    device = next(vae.parameters()).device
    data = uint8_to_tensor(images)
    parts: dict[str, list] = {n: [] for n in ("nll", "rate", "distortion", "entropy", "mu", "logvar")}
    for start in tqdm(range(0, len(data), batch), disable=not progress, desc="VAE log p(x)", unit="batch"):
        x = data[start:start + batch].to(device)
        eps = per_image_noise(seed, start, len(x), (k, vae.z_dim), STREAM_IWAE)
        out = iwae_samples(vae, x, k, eps=eps, chunk=DECODE_CHUNK)
        mu, logvar = out["mu"], out["logvar"]
        parts["nll"].append(iwae_nll_from_log_w(out["log_w"]))
        parts["rate"].append(gaussian_kl(mu, logvar))
        parts["distortion"].append(-out["log_px_z"].mean(1))
        parts["entropy"].append(0.5 * (mu.shape[1] * (1 + LOG_2PI) + logvar.sum(1)))
        parts["mu"].append(mu)
        parts["logvar"].append(logvar)
    stats = {n: (torch.cat(v).double().cpu().numpy() if v else np.zeros(0)) for n, v in parts.items()}
    for arr in stats.values():
        arr.flags.writeable = False
    return stats


class _VAEDetector:
    """Shared plumbing: config, named VAEs (trained on the non-held-out part when missing), save/load."""

    method = ""

    def __init__(self, config: dict, **vaes: VAE | None):
        require_keys(config, COMMON_KEYS, "baselines")
        self.config = copy.deepcopy(config)
        self.device = resolve_device(config["device"])
        self.vaes: dict[str, VAE | None] = {name: (None if v is None else v.to(self.device))
                                            for name, v in vaes.items()}

    # what each VAE is trained with: (seed, mutation rate)
    def _recipe(self, name: str) -> tuple[int, float]:
        return int(self.config["seed"]), 0.0

    def split(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return split_holdout(images, int(self.config["n_holdout"]), int(self.config["seed"]))

    def fit(self, images: np.ndarray, progress: bool = True):
        """Train the missing VAEs on the non-held-out ID images, then fit statistics on the held-out ones."""
        train, holdout = self.split(images)
        for name, vae in self.vaes.items():
            if vae is None:
                seed, mutation = self._recipe(name)
                self.vaes[name] = train_vae(train, self.config["vae"], seed, self.device, progress,
                                            mutation_rate=mutation)
        self._fit_statistics(holdout, progress)
        return self

    def _fit_statistics(self, holdout: np.ndarray, progress: bool) -> None:
        pass

    def _vae(self, name: str) -> VAE:
        vae = self.vaes[name]
        if vae is None:
            raise RuntimeError(f"{type(self).__name__} has no trained VAE {name!r}: call fit(...) or load(path)")
        return vae

    def statistics(self, images: np.ndarray, name: str = "id", progress: bool = False) -> dict[str, np.ndarray]:
        return vae_statistics(self._vae(name), images, int(self.config["iwae_k"]), int(self.config["seed"]),
                              int(self.config["score_batch"]), progress)

    def nll_bits_per_dim(self, images: np.ndarray, name: str = "id", progress: bool = False) -> np.ndarray:
        dims = int(np.prod(images.shape[1:]))
        return bits_per_dim(self.statistics(images, name, progress)["nll"], dims)

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass

    def save(self, path: str | os.PathLike) -> Path:
        models = {name: module_blob(self._vae(name)) for name in self.vaes}
        return save_detector(self, path, models, self._state())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None):
        blob = load_detector_blob(path, cls.__name__)
        config = blob["config"] if device is None else {**blob["config"], "device": device}
        det = cls.__new__(cls)
        _VAEDetector.__init__(det, config)
        det.vaes = {name: module_from_blob(VAE, b, det.device) for name, b in blob["models"].items()}
        det._set_state(blob["state"])
        return det


class VAELikelihood(_VAEDetector):
    """"Likelihood" (as re-run by Xiao et al. 2020): score = NLL(x) in bits/dim, IWAE with K samples.

    The SR-OOD paper calls it the ELBO; the Likelihood Regret code it re-implements reports the IWAE NLL, which
    is what this computes (K = 1 would be the single-sample ELBO).
    """

    method = "Likelihood"

    def __init__(self, config: dict, vae: VAE | None = None):
        super().__init__(config, id=vae)

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        return self.nll_bits_per_dim(images, "id", progress)


class TypicalityTest(_VAEDetector):
    """Nalisnick et al. (2019), single-sample version (test batch size M = 1):
    score = |NLL(x) - mean NLL of the held-out ID training images| (bits/dim, IWAE).

    The reference bootstraps a threshold from the held-out set; for AUROC only the statistic is needed.
    """

    method = "Typicality Test"

    def __init__(self, config: dict, vae: VAE | None = None):
        super().__init__(config, id=vae)
        self.holdout_mean: float | None = None

    def _fit_statistics(self, holdout: np.ndarray, progress: bool) -> None:
        self.holdout_mean = float(np.mean(self.nll_bits_per_dim(holdout, "id", progress)))

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        if self.holdout_mean is None:
            raise RuntimeError("TypicalityTest is not fitted: call fit(...) or load(path)")
        return np.abs(self.nll_bits_per_dim(images, "id", progress) - self.holdout_mean)

    def _state(self) -> dict:
        return {"holdout_mean": self.holdout_mean}

    def _set_state(self, state: dict) -> None:
        self.holdout_mean = state["holdout_mean"]


class WAIC(_VAEDetector):
    """Choi, Jang & Alemi (2018): an ensemble of M independently seeded VAEs (``waic.n_models``),
    WAIC(x) = mean_m log p_m(x) - var_m log p_m(x) (nats, IWAE); score = -WAIC so higher = more OOD.

    Member 0 is the shared ID VAE (the profile's seed); member m > 0 uses a seed derived from (seed, m).
    The reference ensembles Glow models; here the ensemble members are the VAE above.
    """

    method = "WAIC"

    def __init__(self, config: dict, vaes: list[VAE | None] | None = None):
        require_keys(config, ["waic"], "baselines")
        require_keys(config["waic"], ["n_models"], "baselines.waic")
        m = int(config["waic"]["n_models"])
        given = list(vaes or [])
        if len(given) > m:
            raise ValueError(f"{len(given)} VAEs given for a {m}-member ensemble")
        super().__init__(config, **{f"member{i}": (given[i] if i < len(given) else None) for i in range(m)})

    def _recipe(self, name: str) -> tuple[int, float]:
        return member_seed(self.config["seed"], int(name.removeprefix("member"))), 0.0

    def member_log_px(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """(M, N) log p_m(x) in nats."""
        return np.stack([-self.statistics(images, name, progress)["nll"] for name in self.vaes])

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        log_p = self.member_log_px(images, progress)
        return -(log_p.mean(0) - log_p.var(0))


class LikelihoodRatio(_VAEDetector):
    """Ren et al. (2019): LLR(x) = log p_ID(x) - log p_bg(x); score = -LLR (nats, IWAE).

    The background model is the same VAE trained on ID images perturbed by replacing each sub-pixel with a
    uniform random value in 0..255 with probability ``likelihood_ratio.mutation_rate`` (0.1-0.3 in the
    reference). Deviation: Ren et al. use PixelCNN++ for images (and an L2 penalty on the background model);
    here the VAE stands in, as in Xiao et al.'s comparison, with the ID VAE's weight decay.
    """

    method = "Likelihood Ratio"

    def __init__(self, config: dict, vae: VAE | None = None, background: VAE | None = None):
        require_keys(config, ["likelihood_ratio"], "baselines")
        require_keys(config["likelihood_ratio"], ["mutation_rate"], "baselines.likelihood_ratio")
        super().__init__(config, id=vae, background=background)

    def _recipe(self, name: str) -> tuple[int, float]:
        if name == "background":
            return background_seed(self.config["seed"]), float(self.config["likelihood_ratio"]["mutation_rate"])
        return int(self.config["seed"]), 0.0

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        nll_id = self.statistics(images, "id", progress)["nll"]
        nll_bg = self.statistics(images, "background", progress)["nll"]
        return nll_id - nll_bg


# ------------------------------------------------------------------------------------------------ DoSE

DOSE_STATS = ("rate", "distortion", "entropy", "xent_aggregate", "nll")


def moment_matched_gaussian(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and full covariance of the mixture (1/N) sum_i N(mu_i, diag exp(logvar_i)): the aggregate posterior
    approximated by one Gaussian with the mixture's first two moments."""
    mean = mu.mean(0)
    cov = np.cov(mu, rowvar=False, bias=True) + np.diag(np.exp(logvar).mean(0))
    return mean, np.atleast_2d(cov)


def gaussian_cross_entropy(mu: np.ndarray, logvar: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """-E_{q(z|x)} log N(z; mean, cov) per row, for diagonal Gaussian posteriors q (analytic)."""
    d = mu.shape[1]
    chol = np.linalg.cholesky(cov)
    inv = np.linalg.inv(cov)
    logdet = 2 * np.log(np.diag(chol)).sum()
    diff = mu - mean
    maha = np.einsum("ni,ij,nj->n", diff, inv, diff)
    trace = np.exp(logvar) @ np.diag(inv)
    return 0.5 * (d * LOG_2PI + logdet + trace + maha)


class _DoSE(_VAEDetector):
    """Morningstar et al. (2021), "Density of States Estimation", with the VAE's per-image statistics:
    rate, distortion, posterior entropy, cross-entropy of the posterior to the aggregate posterior, IWAE NLL.

    The aggregate posterior is approximated by a moment-matched Gaussian (full covariance) of the held-out ID
    posteriors; the statistics' densities are fitted on the held-out ID images only.
    """

    def __init__(self, config: dict, vae: VAE | None = None):
        require_keys(config, ["dose"], "baselines")
        super().__init__(config, id=vae)
        self.aggregate: tuple[np.ndarray, np.ndarray] | None = None
        self.holdout_features: np.ndarray | None = None

    def features(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """(N, 5) statistics in the order of ``DOSE_STATS``."""
        if self.aggregate is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(...) or load(path)")
        s = self.statistics(images, "id", progress)
        xent = gaussian_cross_entropy(s["mu"], s["logvar"], *self.aggregate)
        cols = {"rate": s["rate"], "distortion": s["distortion"], "entropy": s["entropy"],
                "xent_aggregate": xent, "nll": s["nll"]}
        return np.stack([cols[k] for k in DOSE_STATS], 1)

    def _fit_statistics(self, holdout: np.ndarray, progress: bool) -> None:
        s = self.statistics(holdout, "id", progress)
        self.aggregate = moment_matched_gaussian(s["mu"], s["logvar"])
        self.holdout_features = self.features(holdout)
        self._fit_density()

    def _fit_density(self) -> None:
        raise NotImplementedError

    def _state(self) -> dict:
        return {"aggregate": self.aggregate, "holdout_features": self.holdout_features}

    def _set_state(self, state: dict) -> None:
        self.aggregate, self.holdout_features = state["aggregate"], state["holdout_features"]
        self._fit_density()  # deterministic refit from the stored held-out statistics


class DoSE_KDE(_DoSE):  # noqa: N801 (the method's name in the paper)
    """DoSE_KDE: score = sum over statistics of -log KDE_j(t_j(x)), one Gaussian KDE per statistic (scipy,
    bandwidth rule ``dose.kde_bandwidth``)."""

    method = "DoSE_KDE"

    def _fit_density(self) -> None:
        from scipy.stats import gaussian_kde

        require_keys(self.config["dose"], ["kde_bandwidth"], "baselines.dose")
        bw = self.config["dose"]["kde_bandwidth"]
        self.kdes = [gaussian_kde(self.holdout_features[:, j], bw_method=bw) for j in range(len(DOSE_STATS))]

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        f = self.features(images, progress)
        return -np.sum([kde.logpdf(f[:, j]) for j, kde in enumerate(self.kdes)], axis=0)


class DoSE_SVM(_DoSE):  # noqa: N801
    """DoSE_SVM: a one-class SVM (sklearn, RBF kernel, ``dose.svm_nu``, ``dose.svm_gamma``) on the statistics
    whitened with the held-out mean and covariance (ZCA); score = -decision_function (higher = more OOD)."""

    method = "DoSE_SVM"

    def _fit_density(self) -> None:
        from sklearn.svm import OneClassSVM

        require_keys(self.config["dose"], ["svm_nu", "svm_gamma"], "baselines.dose")
        f = self.holdout_features
        self.mean = f.mean(0)
        evals, evecs = np.linalg.eigh(np.cov(f, rowvar=False))
        self.whiten = evecs @ np.diag(1.0 / np.sqrt(np.maximum(evals, 1e-12))) @ evecs.T
        d = self.config["dose"]
        self.svm = OneClassSVM(kernel="rbf", nu=float(d["svm_nu"]), gamma=d["svm_gamma"])
        self.svm.fit((f - self.mean) @ self.whiten)

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        f = self.features(images, progress)
        return -self.svm.decision_function((f - self.mean) @ self.whiten).astype(np.float64)
