"""Benchmark the likelihood-family baselines at a profile's settings (``baselines`` section of the profile).

Prints img/s of VAE and Glow training steps and of their scoring (IWAE with the profile's K; one dequantisation
sample for Glow), the seconds per image of Likelihood Regret (the profile's n_steps, loop or grouped batch as
configured), and from those an estimate of the whole baseline run: training every model for its epochs on the
profile's training set and scoring the ID test set plus ``--n-ood-sets`` OOD sets.

    .venv/bin/python benchmarks/bench_baselines.py --profile quick --threads 1
    .venv/bin/python benchmarks/bench_baselines.py --profile smoke

Models are untrained (timing only); images are uniform noise.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.baselines.common import baseline_config  # noqa: E402
from srood_lib.baselines.glow import Glow, dequantise, nll_bits_per_dim  # noqa: E402
from srood_lib.baselines.likelihood import vae_statistics  # noqa: E402
from srood_lib.baselines.regret import LikelihoodRegret  # noqa: E402
from srood_lib.baselines.vae import build_vae, elbo_terms  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.runtime import uint8_to_tensor  # noqa: E402

CIFAR10_TRAIN = 50_000


def timed(fn, repeats: int) -> float:
    """Wall seconds per call after one warm-up call."""
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def noise_images(n: int, res: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, res, res, 3), dtype=np.uint8)


def bench_vae_train(vcfg: dict, res: int, steps: int) -> float:
    torch.manual_seed(0)
    vae = build_vae(vcfg, res).train()
    opt = torch.optim.Adam(vae.parameters(), lr=float(vcfg["lr"]))
    x = uint8_to_tensor(noise_images(int(vcfg["batch_size"]), res))

    def step():
        t = elbo_terms(vae, x)
        loss = (t["rate"] + t["distortion"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return len(x) / timed(step, steps)


def bench_vae_score(bcfg: dict, res: int, n: int) -> float:
    torch.manual_seed(0)
    vae = build_vae(bcfg["vae"], res).eval().requires_grad_(False)
    imgs = noise_images(n, res)
    calls = iter(range(10 ** 6))  # a new seed per call: the scores are memoised on (weights, data, K, seed)
    return n / timed(lambda: vae_statistics(vae, imgs, int(bcfg["iwae_k"]), next(calls), int(bcfg["score_batch"])),
                     1)


def bench_glow(gcfg: dict, res: int, steps: int, n_score: int) -> tuple[float, float]:
    torch.manual_seed(0)
    flow = Glow(res, int(gcfg["levels"]), int(gcfg["steps"]), int(gcfg["hidden"])).train()
    opt = torch.optim.Adam(flow.parameters(), lr=float(gcfg["lr"]))
    x = uint8_to_tensor(noise_images(int(gcfg["batch_size"]), res))
    y = dequantise(x, torch.rand(x.shape))

    def step():
        loss = nll_bits_per_dim(flow, y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    train = len(x) / timed(step, steps)
    flow.eval()
    ys = dequantise(uint8_to_tensor(noise_images(n_score, res)), torch.rand(n_score, 3, res, res))
    with torch.no_grad():
        score = n_score / timed(lambda: nll_bits_per_dim(flow, ys), 1)
    return train, score


def bench_regret(bcfg: dict, res: int, n: int) -> float:
    torch.manual_seed(0)
    vae = build_vae(bcfg["vae"], res).eval().requires_grad_(False)
    det = LikelihoodRegret(bcfg, vae)
    det.score(noise_images(n, res))
    return det.seconds_per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--score-images", type=int, default=64)
    parser.add_argument("--regret-images", type=int, default=2)
    parser.add_argument("--n-ood-sets", type=int, default=3, help="OOD sets present (for the estimate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    bcfg = {**baseline_config(cfg), "device": "cpu"}
    res = int(cfg["data"]["resolution"])
    print(f"[{args.profile}] torch {torch.__version__}, CPU, threads {torch.get_num_threads()}")

    vae_train = bench_vae_train(bcfg["vae"], res, args.steps)
    vae_score = bench_vae_score(bcfg, res, args.score_images)
    glow_train, glow_score = bench_glow(bcfg["glow"], res, args.steps, args.score_images)
    regret = bench_regret(bcfg, res, args.regret_images)
    rows = [("VAE training", f"{vae_train:.1f} img/s", f"batch {bcfg['vae']['batch_size']}"),
            ("VAE scoring (IWAE)", f"{vae_score:.1f} img/s", f"K={bcfg['iwae_k']}"),
            ("Glow training", f"{glow_train:.1f} img/s", f"batch {bcfg['glow']['batch_size']}"),
            ("Glow scoring", f"{glow_score:.1f} img/s", "1 dequantisation sample"),
            ("Likelihood Regret", f"{regret:.2f} s/img",
             f"{bcfg['regret']['n_steps']} steps, K={bcfg['regret']['iwae_k']}, "
             f"batch_images {bcfg['regret']['batch_images']}")]
    print(f"\n{'what':<22}{'throughput':>14}   settings")
    for what, rate, note in rows:
        print(f"{what:<22}{rate:>14}   {note}")

    # the whole run, from these rates
    d = cfg["data"]
    n_train = (d["n_train"] or CIFAR10_TRAIN) - int(bcfg["n_holdout"])
    n_test = (d["n_test_id"] or 10_000) + args.n_ood_sets * (d["n_test_ood"] or 10_000)
    n_vaes = int(bcfg["waic"]["n_models"]) + 1  # WAIC members (the first is the shared ID VAE) + background
    epochs_v, epochs_g = float(bcfg["vae"]["epochs"]), float(bcfg["glow"]["epochs"])
    n_regret = (1 + args.n_ood_sets) * (bcfg["regret"]["n_images"] or 10_000)
    parts = {"VAE training": n_vaes * epochs_v * n_train / vae_train,
             "VAE scoring": (n_vaes * n_test + int(bcfg["n_holdout"])) / vae_score,
             "Glow training": epochs_g * n_train / glow_train,
             "Glow scoring": n_test / glow_score,
             "Likelihood Regret": n_regret * regret}
    print(f"\nestimate of the whole baseline run ({n_vaes} VAEs x {epochs_v:g} ep on {n_train} images, Glow "
          f"{epochs_g:g} ep; scoring {n_test} images; Regret {n_regret} images):")
    for what, sec in parts.items():
        print(f"  {what:<20}{sec / 60:8.1f} min")
    total = sum(parts.values())
    # A single-thread measurement (e.g. beside another job) says little about 2 free cores: give a rough guess.
    guess = torch.get_num_threads() == 1 and not math.isclose(total, 0)
    print(f"  {'total':<20}{total / 60:8.1f} min at {torch.get_num_threads()} threads"
          + (f"  (~{total / 60 / 1.7:.1f} min if 2 cores give ~1.7x)" if guess else ""))


if __name__ == "__main__":
    main()
