"""Ablations of the CIFAR-10 SR-OOD models: Tables IV (test distance) and V (mask offset), the prior-budget curve
and the reviewers' open questions. Each function reads the profile config and returns a results frame in the
standard row format (``rows.evaluate``) with the ablated setting in the ``setting`` column.

Test-time ablations reuse the Table I detectors; only the questions that need training (loss, seeds,
``train_decoder``) retrain, at the reduced encoder budget ``ablations.retrain.kimg``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from srood_lib import pipeline
from srood_lib.rows import evaluate
from srood_lib.config import apply_overrides
from srood_lib.data import ImageSet
from srood_lib.detector import SROOD, score_sets
from srood_lib.erosion import BicubicDownUp, Blackout, parse_erosion
from srood_lib.perceptual import PAPER_LPIPS_NET

VARIANT_METHODS = pipeline.VARIANT_METHODS
DISTANCE_LABELS = {"l2": "L2", "l2+lpips": "L2+LPIPS", "lpips": "LPIPS"}


def distance_setting(distance: str, lpips_net: str | None, paper_net: str) -> str:
    """The paper's spelling of a Table IV column; a backbone other than the paper's is named."""
    label = DISTANCE_LABELS[distance]
    if distance != "l2" and lpips_net != paper_net:
        label += f" ({lpips_net.upper()})"
    return f"distance={label}"


def _scores(det: SROOD, id_set: ImageSet, ood: dict[str, ImageSet], **kw):
    return det.score(id_set.images, **kw), score_sets(det, {name: s.images for name, s in ood.items()}, **kw)


def _prefetch(det: SROOD, id_set: ImageSet, ood: dict[str, ImageSet], asks: dict, what: str) -> None:
    """Every (T, k) -> [(metric, backbone)] a table asks, one pass per image set (same numbers, fewer repairs)."""
    pipeline.prefetch_sets([(s.images, [(det, asks)]) for s in (id_set, *ood.values())], what)


# ---------------------------------------------------------------------------------------------- Table IV

def distance_table(cfg: dict, det: SROOD, id_set: ImageSet, ood: dict[str, ImageSet]) -> pd.DataFrame:
    """Table IV: the same trained SR-OOD_SR scored with each test distance of ``ablations.table4_distances``."""
    _prefetch(det, id_set, ood, {(det.erosion_name, det.mix_from_layer): [tuple(d) for d in
                                                                        cfg["ablations"]["table4_distances"]]},
              "Table IV uses")
    frames = []
    for distance, net in cfg["ablations"]["table4_distances"]:
        s_id, s_ood = _scores(det, id_set, ood, metric=distance, lpips_net=net)
        setting = distance_setting(distance, net, PAPER_LPIPS_NET)
        frames.append(evaluate(cfg, "IV", VARIANT_METHODS[det.config["variant"]], s_id, s_ood, id_set, ood,
                                        note=f"T*={det.erosion_name}", setting=setting))
    return pd.concat(frames, ignore_index=True)


def table4_settings(cfg: dict) -> tuple[str, ...]:
    return tuple(distance_setting(d, n, PAPER_LPIPS_NET) for d, n in cfg["ablations"]["table4_distances"])


# ---------------------------------------------------------------------------------------------- Table V

def offset_erosion(tstar: str, offset: int) -> str:
    """The T* black-out rectangle with its centre moved ``offset`` px right of the image centre.

    The paper gives the distance between mask and image centre but not the direction; a horizontal shift makes
    that distance exactly ``offset``.
    """
    erosion = parse_erosion(tstar)
    if not isinstance(erosion, Blackout):
        raise ValueError(f"Table V needs a fixed black-out T* (e.g. blackout_8x8_off0_0), got {tstar!r}")
    return Blackout(erosion.h, erosion.w, 0, int(offset)).name


def offset_setting(offset: int) -> str:
    """The paper's spelling of a Table V column."""
    return f"offset={offset}"


def offset_table(cfg: dict, det: SROOD, id_set: ImageSet, ood: dict[str, ImageSet]) -> pd.DataFrame:
    """Table V: SR-OOD_Inpaint with its T* mask centred at each offset of ``ablations.table5_offsets``."""
    _prefetch(det, id_set, ood, {(offset_erosion(det.erosion_name, o), det.mix_from_layer):
                                 [(det.config["distance"], det.lpips_net)] for o in cfg["ablations"]["table5_offsets"]},
              "Table V uses")
    frames = []
    for offset in cfg["ablations"]["table5_offsets"]:
        name = offset_erosion(det.erosion_name, offset)
        s_id, s_ood = _scores(det, id_set, ood, erosion=name)
        frames.append(evaluate(cfg, "V", VARIANT_METHODS[det.config["variant"]], s_id, s_ood, id_set, ood,
                                        note=f"erosion={name}", setting=offset_setting(offset)))
    return pd.concat(frames, ignore_index=True)


def table5_settings(cfg: dict) -> tuple[str, ...]:
    return tuple(offset_setting(o) for o in cfg["ablations"]["table5_offsets"])


# ---------------------------------------------------------------------------------------------- prior budget

def budget_curve(cfg: dict, priors: dict[float, pipeline.PriorInfo], train: ImageSet, id_set: ImageSet,
                 ood: dict[str, ImageSet], progress: bool = True) -> tuple[pd.DataFrame, dict[float, SROOD]]:
    """AUROC of ``prior_budget.variant`` trained on the prior at each budget fraction (``pipeline.budget_priors``).

    Also reports the mean ID test score: how faithfully the prior lets ID images be repaired.
    """
    variant = cfg["prior_budget"]["variant"]
    frames, detectors = [], {}
    for fraction, prior in sorted(priors.items()):
        det = pipeline.fit_detector(cfg, variant, prior, train, progress=progress)
        detectors[fraction] = det
        s_id, s_ood = _scores(det, id_set, ood)
        kimg = fraction * cfg["prior"]["kimg"]
        rows = evaluate(cfg, "prior budget", VARIANT_METHODS[variant], s_id, s_ood, id_set, ood,
                                 note=f"{prior.source}; T*={det.erosion_name}", setting=f"prior_kimg={kimg:g}")
        rows["prior_fraction"], rows["prior_kimg"] = fraction, kimg
        rows["id_score_mean"] = float(np.mean(s_id))
        frames.append(rows)
    return pd.concat(frames, ignore_index=True), detectors


# ---------------------------------------------------------------------------------------------- open questions

def erosion_strength(cfg: dict, detectors: dict[str, SROOD], id_set: ImageSet,
                     ood: dict[str, ImageSet]) -> pd.DataFrame:
    """AUROC (×100) against test erosion strength: every candidate of each variant, the chosen T* marked."""
    frame = pipeline.oracle_erosions(cfg, detectors, id_set, ood)
    erosions = [parse_erosion(name) for name in frame["erosion"]]
    frame["strength"] = [e.factor if isinstance(e, BicubicDownUp) else e.h if isinstance(e, Blackout) else 0
                         for e in erosions]
    frame["strength_unit"] = ["down-sampling factor" if isinstance(e, BicubicDownUp) else
                              "mask side (px)" if isinstance(e, Blackout) else "none" for e in erosions]
    return frame


def retrain_configs(cfg: dict) -> dict[str, dict]:
    """One profile config per retrained ablation run: ``ablations.retrain.runs`` overrides on top of the profile,
    with the encoder budget set to ``ablations.retrain.kimg``."""
    retrain = cfg["ablations"]["retrain"]
    out = {}
    for name, overrides in retrain["runs"].items():
        run_cfg = apply_overrides(cfg, {"repair.train.kimg": retrain["kimg"], **(overrides or {})})
        out[name] = run_cfg
    return out


def retrain_runs(cfg: dict, prior: pipeline.PriorInfo, train: ImageSet,
                 progress: bool = True) -> dict[str, SROOD]:
    """Train (or load) the detector of each retrained ablation run, all on the profile's one frozen prior."""
    variant = cfg["ablations"]["retrain"]["variant"]
    return {name: pipeline.fit_detector(run_cfg, variant, prior, train, progress=progress)
            for name, run_cfg in retrain_configs(cfg).items()}


def retrain_table(cfg: dict, runs: dict[str, SROOD], id_set: ImageSet, ood: dict[str, ImageSet]) -> pd.DataFrame:
    """AUROC etc. of each retrained run (its own T*), one block of rows per run (``setting`` = run name)."""
    frames = []
    for name, det in runs.items():
        s_id, s_ood = _scores(det, id_set, ood)
        rows = evaluate(cfg, "ablation", VARIANT_METHODS[det.config["variant"]], s_id, s_ood, id_set, ood,
                                 note=f"T*={det.erosion_name}; encoder {cfg['ablations']['retrain']['kimg']} kimg",
                                 setting=name)
        rows["seed"], rows["T*"] = det.config["seed"], det.erosion_name
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def seed_summary(table: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    """Mean ± std of AUROC over the named runs (the seeds), per OOD set."""
    auroc = table[(table["metric"] == "auroc") & table["setting"].isin(runs)]
    agg = auroc.groupby("ood")["value"].agg(["mean", "std", "count"]).round(2)
    agg["mean ± std"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(agg["mean"], agg["std"])]
    return agg.reset_index()
