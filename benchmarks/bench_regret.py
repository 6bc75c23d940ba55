"""Likelihood Regret: seconds per image one image at a time (the reference's loop) vs. B images at once (B encoder
copies as one grouped-conv network, ``regret.batch_images``), measured in one run on the shipped CIFAR-10 VAE and
real CIFAR-10 test images, with the largest difference of the regret scores between the two.

    .venv/bin/python benchmarks/bench_regret.py --n 32 --batches 8 16 32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import shipped  # noqa: E402
from srood_lib.baselines.common import baseline_config  # noqa: E402
from srood_lib.baselines.regret import LikelihoodRegret  # noqa: E402
from srood_lib.baselines.common import module_from_blob  # noqa: E402
from srood_lib.baselines.vae import VAE  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.pipeline import id_sets  # noqa: E402
from srood_lib.runtime import expand_state, safe_torch_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="CIFAR-10 test images scored each way")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()

    cfg = load_config("quick", experiment="cifar10")
    files = sorted((shipped.shipped_dir() / "baselines").glob("cifar10_vae_id_*.pt"))
    blob = safe_torch_load(files[-1])
    vae = module_from_blob(VAE, {"kwargs": blob["kwargs"], "state": expand_state(blob["state"])}, torch.device("cpu"))
    images = id_sets(cfg)[1].images[:args.n]
    bcfg = baseline_config(cfg)
    runs = {}
    for b in [1, *args.batches]:
        rcfg = {**bcfg, "regret": {**bcfg["regret"], "batch_images": b}}
        det = LikelihoodRegret(rcfg, vae)
        t = time.perf_counter()
        scores = det.score(images)
        runs[b] = (time.perf_counter() - t) / len(images), scores
    print(f"Likelihood Regret on {args.n} CIFAR-10 test images, shipped VAE {files[-1].name}, "
          f"n_steps {bcfg['regret']['n_steps']}, K {bcfg['regret']['iwae_k']}, threads {torch.get_num_threads()}")
    base = runs[1]
    for b, (sec, scores) in runs.items():
        diff = float(np.max(np.abs(scores - base[1])))
        print(f"batch_images {b:3d}: {sec:6.3f} s/image ({base[0] / sec:5.2f}x the loop); largest regret difference "
              f"to the loop {diff:.2e} nats (regrets span {float(np.ptp(base[1])):.1f})")


if __name__ == "__main__":
    main()
