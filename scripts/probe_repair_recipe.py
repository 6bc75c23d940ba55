"""Probe a repair-training recipe: train one variant's encoder on the profile's prior in stages and, after each
stage, measure repair health and AUROC on the offline OOD sets for several mixing layers and both LPIPS backbones.

The measurement behind the quick profile's repair recipe (issue "The repair network must repair"). It peeks at
test OOD sets, so it is a diagnostic for choosing a *training budget and recipe*, never a T*/k selection.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/probe_repair_recipe.py --profile quick \
        --set repair.train.lr=0.001 --stages 5 10 20 40 --out logs/probe_lr1e-3.csv

Training resumes stage to stage (``repair.train.kimg`` is a resumable key), so the stages cost the last one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import pipeline  # noqa: E402
from srood_lib.config import checkpoint_dir, config_hash, load_config  # noqa: E402
from srood_lib.detector import SROOD, detector_config, split_validation  # noqa: E402
from srood_lib.health import repair_health  # noqa: E402
from srood_lib.metrics import auroc  # noqa: E402
from srood_lib.train_repair import train_repair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--id", default=None, help="ID set (default: the profile's first)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--variant", default="sr")
    ap.add_argument("--erosion", default=None, help="test erosion (default: the variant's middle candidate)")
    ap.add_argument("--stages", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--n-eval", type=int, default=300, help="ID test and per-OOD images scored")
    ap.add_argument("--mix", nargs="+", default=["none", "6", "4"])
    ap.add_argument("--nets", nargs="+", default=["alex", "vgg"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    cfg = load_config(args.profile, args.set, experiment=args.id)
    train, test = pipeline.id_sets(cfg)
    ood, _ = pipeline.ood_sets(cfg)
    prior = pipeline.ensure_prior(cfg, train)
    dcfg = detector_config(cfg, args.variant)
    erosion = args.erosion or dcfg["candidate_erosions"][len(dcfg["candidate_erosions"]) // 2]
    tr, _ = split_validation(train.images, dcfg["n_val"], dcfg["seed"])
    run = checkpoint_dir() / "probe" / f"{args.variant}_{config_hash({'d': dcfg, 'p': prior.prior_id})}"
    id_imgs = test.images[:args.n_eval]
    ood_imgs = {k: v.images[:args.n_eval] for k, v in ood.items()}
    mixes = [None if m == "none" else int(m) for m in args.mix]
    rows = []
    for kimg in args.stages:
        t0 = time.time()
        train_cfg = {**dcfg["train"], "kimg": kimg}
        det = SROOD({**dcfg, "train": train_cfg}, prior.path)
        det.net = train_repair(tr, det.generator, train_cfg, dcfg["encoder"], dcfg["train_erosions"], run,
                               seed=dcfg["seed"], device=det.device, prior_id=prior.prior_id, progress=False)
        det.erosion_name = erosion
        train_s = time.time() - t0
        for k in mixes:
            h = repair_health(det, id_imgs, ood_imgs, mix_from_layer=k)
            row = {"kimg": kimg, "mix": "none" if k is None else k, "erosion": erosion,
                   "spec": round(h["specificity"], 3), "id_lpips": round(h["repair_distance_id"], 4)}
            for net in args.nets:
                s_id = det.score(id_imgs, mix_from_layer=k, lpips_net=net)
                for name, imgs in ood_imgs.items():
                    row[f"{name}_{net}"] = round(100 * auroc(s_id, det.score(imgs, mix_from_layer=k,
                                                                             lpips_net=net)), 1)
            rows.append(row)
            print(row, flush=True)
        print(f"stage {kimg} kimg: train {train_s:.0f} s, eval {time.time() - t0 - train_s:.0f} s", flush=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
