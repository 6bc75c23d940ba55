"""Why the quick profile's VAE uses a logistic-mixture decoder: bits/dim reached per training image and per second.

Trains the profile's VAE twice from the same seed on the same CIFAR-10 training images, once with the reference's
256-way categorical decoder and once with the discretised logistic mixture, and prints for each: img/s of a
training step and the test bits/dim (single-sample ELBO on ``--test-images`` CIFAR-10 test images) after every
``--eval-every`` steps. Everything else (width, z, batch, lr) is the profile's.

    SROOD_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_vae_decoders.py --profile quick --steps 300

Reads real data (the ranking on noise images would say nothing about learning speed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.baselines.common import bits_per_dim  # noqa: E402
from srood_lib.baselines.vae import build_vae, elbo_terms  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.pipeline import id_sets  # noqa: E402
from srood_lib.runtime import EpochOrder, uint8_to_tensor  # noqa: E402


def run(vcfg: dict, train: torch.Tensor, test: torch.Tensor, steps: int, eval_every: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    vae = build_vae(vcfg, train.shape[-1])
    opt = torch.optim.Adam(vae.parameters(), lr=float(vcfg["lr"]), betas=tuple(map(float, vcfg["adam_betas"])),
                           weight_decay=float(vcfg["weight_decay"]))
    order = EpochOrder(len(train), int(vcfg["batch_size"]), seed)
    rows, train_seconds = [], 0.0
    for step in range(steps):
        vae.train()
        t0 = time.perf_counter()
        terms = elbo_terms(vae, train[order.indices(step)], torch.Generator().manual_seed(step))
        loss = (terms["rate"] + terms["distortion"]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_seconds += time.perf_counter() - t0
        if (step + 1) % eval_every == 0 or step == steps - 1:
            vae.eval()
            with torch.no_grad():
                t = elbo_terms(vae, test, torch.Generator().manual_seed(0))
            images = (step + 1) * int(vcfg["batch_size"])
            rows.append({"decoder": vcfg["decoder"], "step": step + 1, "train_images": images,
                         "test_bpd": bits_per_dim((t["rate"] + t["distortion"]).mean().item(), test[0].numel()),
                         "img_per_s": images / train_seconds})
            print(f"{vcfg['decoder']:>16}  step {step + 1:5d}  images {images:7d}  test ELBO "
                  f"{rows[-1]['test_bpd']:.3f} bits/dim  {rows[-1]['img_per_s']:.1f} img/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--train-images", type=int, default=20_000)
    parser.add_argument("--test-images", type=int, default=256)
    parser.add_argument("--mixture-components", type=int, default=None,
                        help="for the mixture run when the profile uses the categorical decoder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    train_set, test_set = id_sets(cfg)
    train = uint8_to_tensor(train_set.images[:args.train_images])
    test = uint8_to_tensor(test_set.images[:args.test_images])
    base = dict(cfg["baselines"]["vae"])
    components = args.mixture_components or base.get("mixture_components")
    if components is None:
        parser.error("the profile's decoder is categorical: pass --mixture-components")
    print(f"profile {args.profile}, {torch.get_num_threads()} threads, batch {base['batch_size']}, "
          f"lr {base['lr']}, width {base['width']}, z {base['z_dim']}")
    results = {}
    for decoder in ("categorical", "logistic_mixture"):
        vcfg = {**base, "decoder": decoder, "mixture_components": int(components)}
        results[decoder] = run(vcfg, train, test, args.steps, args.eval_every, int(cfg["seed"]))
    cat, mix = results["categorical"][-1], results["logistic_mixture"][-1]
    print(f"after {args.steps} steps: categorical {cat['test_bpd']:.3f} vs mixture {mix['test_bpd']:.3f} bits/dim; "
          f"mixture/categorical training speed {mix['img_per_s'] / cat['img_per_s']:.2f}x")


if __name__ == "__main__":
    main()
