"""Scoring throughput of a trained SR-OOD detector, and its overhead over the bare forward pass.

Measured in one run, on the same images, alternating the two so machine noise hits both alike:
- end to end: ``SROOD.score`` (uint8 -> tensor, erosion, encoder, style mixing, generator, LPIPS, back to numpy);
- bare: encoder + generator + LPIPS forward on a ready float batch.
The ratio end-to-end / bare throughput says what the detector's bookkeeping costs (1.0 = nothing).

    .venv/bin/python benchmarks/bench_scoring.py --checkpoint checkpoints/repair/<run>/detector.pt
    .venv/bin/python benchmarks/bench_scoring.py --profile smoke      # builds an untrained detector of that size
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.config import load_config  # noqa: E402
from srood_lib.detector import SROOD, detector_config  # noqa: E402
from srood_lib.erosion import parse_erosion  # noqa: E402
from srood_lib.perceptual import distance  # noqa: E402
from srood_lib.runtime import to_float_images, uint8_to_tensor  # noqa: E402
from srood_lib.train_prior import build_generator  # noqa: E402
from srood_lib.train_repair import build_repair_network  # noqa: E402


def untrained_detector(profile: str) -> SROOD:
    cfg = load_config(profile)
    G = build_generator(cfg["prior"]).eval()
    det = SROOD(detector_config(cfg, "sr"), G)
    det.net = build_repair_network(G, cfg["repair"]["encoder"], False).eval()
    det.erosion_name = cfg["repair"]["variants"]["sr"]["candidate_erosions"][0]
    return det


@torch.no_grad()
def bare_forward(det: SROOD, x: torch.Tensor) -> torch.Tensor:
    eroded = parse_erosion(det.erosion_name)(x)
    repaired = det.net(eroded, mix_from_layer=det.mix_from_layer)
    return distance(repaired, x, "lpips", net=det.lpips_net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a detector.pt; default: an untrained detector of --profile's size")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n", type=int, default=1024, help="images per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    det = SROOD.load(args.checkpoint) if args.checkpoint else untrained_detector(args.profile)
    res = det.generator.resolution
    images = np.random.default_rng(0).integers(0, 256, (args.n, res, res, 3), dtype=np.uint8)
    bs = int(det.config["batch_size"])
    batches = [to_float_images(uint8_to_tensor(images[i:i + bs])).to(det.device) for i in range(0, args.n, bs)]
    det.score(images[:bs])  # warm-up
    end_to_end, bare = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        det.score(images)
        end_to_end.append(args.n / (time.perf_counter() - t))
        t = time.perf_counter()
        for x in batches:
            bare_forward(det, x)
        bare.append(args.n / (time.perf_counter() - t))
    e2e, raw = float(np.median(end_to_end)), float(np.median(bare))
    print(f"device: {det.device}, threads: {torch.get_num_threads()}, batch {bs}, {args.n} images x {args.repeats}")
    print(f"end-to-end scoring      : {e2e:8.1f} img/s (median)")
    print(f"encoder+generator+LPIPS : {raw:8.1f} img/s (median)")
    print(f"ratio end-to-end / bare : {e2e / raw:8.3f}")


if __name__ == "__main__":
    main()
