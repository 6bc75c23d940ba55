"""Probe what the prior alone can tell apart: invert each image by per-image latent optimisation (no encoder) in
W (one code for every layer) or W+ (one code per layer), then measure the repair distance and the ID-vs-OOD AUROC.

The question behind it (issue "The repair network must repair"): does restricting the latent space make OOD images
harder to repair than ID ones with *this* prior? If W-inversion separates ID from OOD no better than the encoder
does, no encoder lever confined to W can help, and the prior itself is the limit. The optimisation fits the eroded
image (T(G(w)) against T(x)), as a repair network must, and scores LPIPS(G(w), x) on the clean image.

It peeks at test OOD sets, so it chooses nothing; it only says where a lever could go.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/probe_inversion.py --id cifar10 --n 128 \
        --erosion bicubic_x4 --space w wplus --out logs/probe_inversion_cifar10.csv
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import pipeline  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.erosion import parse_erosion  # noqa: E402
from srood_lib.metrics import auroc  # noqa: E402
from srood_lib.train_prior import load_prior  # noqa: E402
from srood_lib.perceptual import distance, lpips_distance  # noqa: E402
from srood_lib.runtime import to_float_images, uint8_to_tensor  # noqa: E402


def invert(generator, x: torch.Tensor, erosion, space: str, steps: int, lr: float) -> torch.Tensor:
    """Per-image codes fitted by Adam from w_avg; returns the repaired images G(w)."""
    n, n_latent = x.shape[0], generator.n_latent
    start = generator.w_avg.detach().reshape(1, 1, -1)
    shape = (n, 1, generator.w_dim) if space == "w" else (n, n_latent, generator.w_dim)
    w = start.expand(shape).clone().requires_grad_(True)
    target = erosion(x)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        wplus = w.expand(n, n_latent, -1)
        img = generator.synthesis(wplus, noise_mode="const").clamp(-1.0, 1.0)
        loss = distance(erosion(img), target, "l2+lpips", "alex").mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return generator.synthesis(w.expand(n, n_latent, -1), noise_mode="const").clamp(-1.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--id", default=None, help="ID set (default: the profile's first)")
    ap.add_argument("--n", type=int, default=128, help="images per set (ID test and each OOD set)")
    ap.add_argument("--erosion", default="bicubic_x4")
    ap.add_argument("--space", nargs="+", default=["w", "wplus"], choices=["w", "wplus"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = load_config(args.profile, [], experiment=args.id)
    train, test = pipeline.id_sets(cfg)
    ood, _ = pipeline.ood_sets(cfg)
    prior = pipeline.ensure_prior(cfg, train)
    generator = load_prior(prior.path, torch.device("cpu")).requires_grad_(False).eval()
    erosion = parse_erosion(args.erosion)
    sets = {cfg["data"]["id"]: test.images[:args.n], **{k: v.images[:args.n] for k, v in ood.items()}}
    rows, scores = [], {}
    for space in args.space:
        for name, imgs in sets.items():
            t0 = time.time()
            x = to_float_images(uint8_to_tensor(imgs))
            rep = invert(generator, x, erosion, space, args.steps, args.lr)
            with torch.no_grad():
                scores[space, name] = {net: lpips_distance(rep, x, net).numpy() for net in ("alex", "vgg")}
            print(f"{space} {name}: {time.time() - t0:.0f} s, LPIPS-alex {scores[space, name]['alex'].mean():.4f}",
                  flush=True)
        id_name = cfg["data"]["id"]
        for name in sets:
            row = {"space": space, "set": name, "erosion": args.erosion, "steps": args.steps,
                   "lpips_alex": float(scores[space, name]["alex"].mean()),
                   "lpips_vgg": float(scores[space, name]["vgg"].mean())}
            if name != id_name:
                for net in ("alex", "vgg"):
                    row[f"auroc_{net}"] = 100 * auroc(scores[space, id_name][net], scores[space, name][net])
            rows.append(row)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
