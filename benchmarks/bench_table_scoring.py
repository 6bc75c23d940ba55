"""Notebook 03's scoring of the test sets (03_table and 03_analyses), before and after the one-pass prefetch and the channels_last CPU layout,
measured in one run on the shipped CIFAR-10 detectors (real networks, their own settings).

03 scores ID test and each OOD set under overlapping settings: the table rows and their JPEG-control copies (each
detector's T*, k, backbone), the repair health (every k of ``detector.mix_sweep``, LPIPS-alex), the oracle T*
(every candidate erosion), and for SR-OOD_SR the mixing sweep and the scoring levers. Three ways, same images:

- ``before``: the network in its stored NCHW layout, each call scored when it comes (the per-call score memo);
- ``layout``: the channels_last scoring copy, each call scored when it comes;
- ``after``: channels_last plus ``pipeline.prefetch_table_scores`` and ``prefetch_analyses_scores`` (one pass per
  image set for every setting each notebook uses).

Prints wall seconds of each, the ratios, and the largest difference of any score and of any AUROC against
``before`` (the layout may move scores by float rounding; the prefetch must move nothing).

    .venv/bin/python benchmarks/bench_table_scoring.py --n 256
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import detector as detector_module  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.detector import SROOD, mixing_sweep  # noqa: E402
from srood_lib.health import health_table  # noqa: E402
from srood_lib.levers import lever_scores  # noqa: E402
from srood_lib.pipeline import (VARIANT_METHODS, default_detector, health_sets, oracle_erosions,  # noqa: E402
                                prefetch_analyses_scores, prefetch_table_scores, score_variants)


def analyses(cfg: dict, dets: dict[str, SROOD], id_set, ood: dict, val: np.ndarray, prefetch: bool):
    """03's scoring calls in 03's order; returns (every score, every AUROC-like number)."""
    if prefetch:
        prefetch_table_scores(cfg, dets, id_set, ood)
        prefetch_analyses_scores(cfg, dets, id_set, ood, analysed="sr")
    rows, raw = score_variants(cfg, dets, id_set, ood, cfg["eval"]["jpeg_control"])
    h_id, h_ood = health_sets(cfg, id_set, ood)
    health = health_table(dets, h_id.images, {k: v.images for k, v in h_ood.items()}, cfg["detector"]["mix_sweep"],
                          cfg["detector"]["min_specificity"], "bench", VARIANT_METHODS)
    oracle = oracle_erosions(cfg, dets, id_set, ood)
    sweep = mixing_sweep(dets["sr"], id_set.images, {k: v.images for k, v in ood.items()}, cfg["detector"]["mix_sweep"])
    levers = lever_scores(dets["sr"], {"id": id_set.images, **{k: v.images for k, v in ood.items()}}, val)
    scores = [s for per in raw.values() for s in per.values()] + [s for per in levers.values() for s in per.values()]
    numbers = np.concatenate([rows["value"].to_numpy(float), health.select_dtypes("number").to_numpy(float).ravel(),
                              oracle["auroc"].to_numpy(float), sweep["auroc"].to_numpy(float)])
    return scores, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="images per set (ID test, each OOD set, ID validation)")
    parser.add_argument("--ood", nargs="+", default=["texture", "celeba", "fashionmnist"])
    args = parser.parse_args()

    cfg = load_config("quick", experiment="cifar10", overrides=[f"data.n_test_id={args.n}", f"data.n_test_ood={args.n}"])
    cfg["eval"]["n_boot"] = 10  # the bootstrap is not what is measured
    from srood_lib.pipeline import id_sets, ood_sets
    train, test = id_sets(cfg)
    ood = {k: v for k, v in ood_sets(cfg)[0].items() if k in args.ood}
    val = train.images[:args.n]
    dets = {v: SROOD.load(default_detector("cifar10", v)) for v in cfg["repair"]["variants"]}
    dets["sr"].score(test.images[:8])  # warm-up: LPIPS weights loaded, kernels chosen

    seconds, out = {}, {}
    for mode in ("before", "layout", "after"):
        detector_module.SCORING_CHANNELS_LAST = mode != "before"
        for det in dets.values():
            det.net = det.net  # empties the score memo and the scoring copy
        t = time.perf_counter()
        out[mode] = analyses(cfg, dets, test, ood, val, prefetch=mode == "after")
        seconds[mode] = time.perf_counter() - t
    detector_module.SCORING_CHANNELS_LAST = True

    print(f"quick CIFAR-10 shipped detectors ({', '.join(dets)}), {args.n} images per set "
          f"(ID test + {', '.join(ood)} + their JPEG copies), threads {torch.get_num_threads()}")
    for mode in seconds:
        print(f"{mode:7s}: {seconds[mode]:7.1f} s")
    print(f"ratio before / layout: {seconds['before'] / seconds['layout']:.2f}x; layout / after (prefetch): "
          f"{seconds['layout'] / seconds['after']:.2f}x; before / after: {seconds['before'] / seconds['after']:.2f}x")
    for mode in ("layout", "after"):
        ds = max(float(np.max(np.abs(a - b))) for a, b in zip(out[mode][0], out["before"][0]))
        dn = float(np.nanmax(np.abs(out[mode][1] - out["before"][1])))
        print(f"{mode} vs before: largest score difference {ds:.2e}, largest table/health/AUROC difference {dn:.4f}")
    same = all(np.array_equal(a, b) for a, b in zip(out["after"][0], out["layout"][0]))
    print(f"prefetch changes no score (after vs layout, bit for bit): {same}")


if __name__ == "__main__":
    main()
