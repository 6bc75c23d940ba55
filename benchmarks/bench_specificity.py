"""Repair specificity by pairs vs. by one feature pass per image, measured in one run.

Specificity (srood_lib.health) needs LPIPS(R_i, x_j) for every pair of N repairs and N inputs. Computed pair by
pair (as before) that is N * N backbone passes per side; ``perceptual.pairwise_lpips`` passes each image once and
gets all pairs from one matrix product. This times both on the same N CIFAR-10-sized images for each LPIPS
backbone, prints the ratio, and the largest difference between the two (the matrix form must change no number
beyond float rounding; the tables round specificity to 4 decimals).

    .venv/bin/python benchmarks/bench_specificity.py --n 64
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.health import specificity_from_repairs  # noqa: E402
from srood_lib.perceptual import distance, get_lpips  # noqa: E402


def specificity_by_pairs(repaired: torch.Tensor, originals: torch.Tensor, net: str) -> np.ndarray:
    """The definition, one pair at a time (the implementation before pairwise_lpips)."""
    n = len(originals)
    own = distance(repaired, originals, "lpips", net=net)
    out = np.empty(n)
    for i in range(n):
        others = torch.cat([originals[:i], originals[i + 1:]])
        to_others = distance(repaired[i:i + 1].expand_as(others), others, "lpips", net=net)
        out[i] = 1.0 - float(own[i]) / max(float(to_others.median()), 1e-12)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="repairs and inputs (the gate uses 64)")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    # Inputs: smooth colour fields plus texture; "repairs": blurred, noisy versions of them (neither trivial).
    coarse = torch.rand(args.n, 3, 4, 4, generator=g) * 2 - 1
    x = (0.7 * torch.nn.functional.interpolate(coarse, size=args.size, mode="bilinear")
         + 0.3 * (torch.rand(args.n, 3, args.size, args.size, generator=g) * 2 - 1)).clamp(-1, 1)
    repaired = (torch.nn.functional.avg_pool2d(x, 3, 1, 1) + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    print(f"{args.n} repairs vs {args.n} inputs at {args.size}x{args.size}, {torch.get_num_threads()} threads")
    for net in ("alex", "vgg"):
        get_lpips(net)  # load the weights outside the timing
        t = time.perf_counter()
        before = specificity_by_pairs(repaired, x, net)
        t_pairs = time.perf_counter() - t
        t = time.perf_counter()
        after = specificity_from_repairs(repaired, x, net)
        t_matrix = time.perf_counter() - t
        print(f"LPIPS-{net}: by pairs {t_pairs:.2f} s, one pass per image {t_matrix:.3f} s: "
              f"{t_pairs / t_matrix:.0f}x faster; max |difference| {np.abs(before - after).max():.1e} "
              f"(mean specificity {after.mean():.4f})")


if __name__ == "__main__":
    main()
