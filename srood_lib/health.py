"""Repair health: does the repair network repair *this* input, or output one template for every input?

A detector whose repairs do not depend on their input scores S(x) ~ LPIPS(x, template): a distance-to-a-template
detector, not sample repairing. Three numbers say which it is:

- ``repair_distance``: mean LPIPS(R(T(x)), x) over a set (how faithful the repairs are);
- ``specificity`` (on ID images): ``1 - LPIPS(R_i, x_i) / median_j LPIPS(R_i, x_j)`` averaged over i, with j
  running over the other ID inputs of the sample. 1 = each repair is far closer to its own input than to other
  inputs; 0 = a repair is as close to any input as to its own (a collapsed network scores ~0);
- ``ood_id_ratio``: mean OOD repair distance / mean ID repair distance (> 1 is what the method relies on).

A fourth, about the codes rather than the images: ``code_offsets`` says, per style of W+, how far the encoder's
codes lie from ``w_avg`` compared with the mapping network's own outputs. Styles far outside that range are
codes the generator never saw in training; they decode to artefacts shared by every repair.

``passes`` applies the gate ``specificity >= min_specificity`` (``detector.health.min_specificity`` in the
profile): rows named SR-OOD_* must come from settings that pass it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from srood_lib.models.psp import mix_label
from srood_lib.perceptual import pairwise_lpips

_DEFAULT = object()


N_SPECIFICITY = 64  # ID images behind one specificity value: the gate's sample (selection, health tables)
N_W_SAMPLES = 4096  # mapping-network samples behind the extent of W in code_offsets


@torch.no_grad()
def specificity_from_repairs(repaired: torch.Tensor, originals: torch.Tensor, net: str = "alex") -> np.ndarray:
    """Per-image specificity (see module doc) of float repairs ``(N, 3, H, W)`` against their inputs, N >= 2.

    The median over the N - 1 other inputs is the lower middle value when N - 1 is even (``torch.median``)."""
    n = len(originals)
    if n < 2 or repaired.shape != originals.shape:
        raise ValueError(f"specificity needs >= 2 repairs and inputs of one shape, got {tuple(repaired.shape)} "
                         f"and {tuple(originals.shape)}")
    d = pairwise_lpips(repaired, originals, net=net)  # d[i, j] = LPIPS(R_i, x_j)
    own = d.diagonal()
    to_others = d[~torch.eye(n, dtype=torch.bool, device=d.device)].reshape(n, n - 1)
    return (1.0 - own / to_others.median(dim=1).values.clamp_min(1e-12)).cpu().numpy()


def repair_health(detector, id_images: np.ndarray, ood_sets: Mapping[str, np.ndarray] | None = None,
                  n_specificity: int = N_SPECIFICITY, mix_from_layer=_DEFAULT, erosion=_DEFAULT,
                  lpips_net: str = "alex") -> dict:
    """Health of one detector setting: ``repair_distance`` on ID and each OOD set, ID ``specificity`` (on the
    first ``n_specificity`` ID images) and ``ood_id_ratio`` per OOD set. Distances are LPIPS(``lpips_net``).

    ``detector`` is an :class:`srood_lib.detector.SROOD` (anything with ``repair`` and ``score`` of that shape).
    """
    kw = {}
    if mix_from_layer is not _DEFAULT:
        kw["mix_from_layer"] = mix_from_layer
    if erosion is not _DEFAULT:
        kw["erosion"] = erosion
    sample = np.asarray(id_images[:n_specificity])
    _, repaired, x = detector.repair(sample, **kw)
    spec = specificity_from_repairs(repaired.float().cpu(), x.cpu(), net=lpips_net)
    dist_id = float(np.mean(detector.score(id_images, metric="lpips", lpips_net=lpips_net, **kw)))
    out = {"specificity": float(np.mean(spec)), "repair_distance_id": dist_id}
    for name, imgs in (ood_sets or {}).items():
        d = float(np.mean(detector.score(imgs, metric="lpips", lpips_net=lpips_net, **kw)))
        out[f"repair_distance_{name}"] = d
        out[f"ood_id_ratio_{name}"] = d / max(dist_id, 1e-12)
    return out


@torch.no_grad()
def code_offsets(net, eroded: torch.Tensor, quantile: float = 0.99, n_w: int = N_W_SAMPLES,
                 seed: int = 0) -> pd.DataFrame:
    """Where a repair network's W+ codes of ``eroded`` (N, 3, R, R) lie against the prior's own W, per style.

    ``net`` is a :class:`srood_lib.models.psp.RepairNetwork`. One row per style ``l``: the median and largest
    ``|w+_l - w_avg|`` over the images, the same distance's median and ``quantile`` over ``n_w`` samples
    ``mapping(z)`` (z ~ N(0, I), seeded), the codes' median over the mapping's median (``offset_ratio``, ~1 for
    codes like the prior's) and the share of codes beyond the mapping's ``quantile`` (``share_outside``)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    generator = net.generator
    w_avg = generator.w_avg.float()
    codes = net.encode(eroded).float()                                          # (N, n_latent, w_dim)
    z = torch.randn(n_w, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(w_avg.device)
    w_offsets = (generator.mapping(z).float() - w_avg).norm(dim=1)
    w_median, w_edge = float(w_offsets.median()), float(torch.quantile(w_offsets, quantile))
    rows = []
    for style in range(codes.shape[1]):
        d = (codes[:, style] - w_avg).norm(dim=1)
        rows.append({"style": style, "code_offset_median": float(d.median()), "code_offset_max": float(d.max()),
                     "w_offset_median": w_median, f"w_offset_q{quantile:g}": w_edge,
                     "offset_ratio": float(d.median()) / max(w_median, 1e-12),
                     "share_outside": float((d > w_edge).float().mean())})
    return pd.DataFrame(rows)


def train_test_gap(detector, fit_images: np.ndarray, test_images: np.ndarray, n: int, seed: int,
                   lpips_net: str = "alex") -> dict:
    """Does the repair network memorise? Mean repair distance on ``n`` of the images it was trained on vs ``n``
    ID test images (seeded subsets), and their ratio test / train (~1: it generalises; >> 1: it memorised)."""
    rng = np.random.default_rng([seed, 11])
    pick = lambda imgs: imgs[np.sort(rng.permutation(len(imgs))[:min(n, len(imgs))])]  # noqa: E731
    d_train = float(np.mean(detector.score(pick(fit_images), metric="lpips", lpips_net=lpips_net)))
    d_test = float(np.mean(detector.score(pick(test_images), metric="lpips", lpips_net=lpips_net)))
    return {"repair_distance_train": d_train, "repair_distance_test": d_test,
            "test_train_ratio": d_test / max(d_train, 1e-12)}


def passes(health: Mapping, min_specificity: float) -> bool:
    """The gate: repairs depend on their input at least this much (specificity on ID test)."""
    return bool(health["specificity"] >= min_specificity)


def health_table(detectors: Mapping[str, object], id_images: np.ndarray, ood_sets: Mapping[str, np.ndarray],
                 mix_layers, min_specificity: float, id_name: str, method_names: Mapping[str, str],
                 n_specificity: int = N_SPECIFICITY, lpips_net: str = "alex") -> pd.DataFrame:
    """One row per (variant, mixing setting): health numbers, the gate, ``chosen`` (the detector's own k) and how
    many images each mean is over (``n_id``, ``n_<ood>``)."""
    sizes = {"n_id": len(id_images), **{f"n_{name}": len(imgs) for name, imgs in ood_sets.items()}}
    rows = []
    for variant, det in detectors.items():
        for k in mix_layers:
            h = repair_health(det, id_images, ood_sets, n_specificity=n_specificity, mix_from_layer=k,
                              lpips_net=lpips_net)
            rows.append({"id": id_name, "method": method_names.get(variant, variant), "variant": variant,
                         "erosion": det.erosion_name, "mix_from_layer": mix_label(k),
                         **{key: round(v, 4) for key, v in h.items()},
                         "passes_gate": passes(h, min_specificity),
                         "chosen": k == det.mix_from_layer, **sizes})
    return pd.DataFrame(rows)
