"""The T*/k/backbone selection's scoring: every setting of an image set at once vs. one setting at a time.

``SROOD.select_settings`` scores the held-out ID images and each outlier set under every candidate (T*, k) with
both LPIPS backbones. One setting at a time (``score_nets`` per setting, as before) passes each input through
both backbones once per setting and each eroded image through the encoder once per k; ``score_settings`` does
both once per image set and erosion. This times the two on the same quick-profile-sized network (untrained: the
cost does not depend on the weights) and images, in one run, and checks that every score is identical.

    .venv/bin/python benchmarks/bench_score_settings.py --profile quick --n 128 --sets 2
"""
from __future__ import annotations

import argparse
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scoring import untrained_detector  # noqa: E402

from srood_lib.config import load_config  # noqa: E402
from srood_lib.detector import candidates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n", type=int, default=128, help="images per set")
    parser.add_argument("--sets", type=int, default=2, help="image sets (the selection scores 7 at the quick size)")
    args = parser.parse_args()
    cfg = load_config(args.profile)
    det = untrained_detector(args.profile)
    res = det.generator.resolution
    rng = np.random.default_rng(0)
    sets = [rng.integers(0, 256, (args.n, res, res, 3), dtype=np.uint8) for _ in range(args.sets)]
    nets = candidates(cfg["detector"]["lpips_net"])
    settings = list(product(cfg["repair"]["variants"]["sr"]["candidate_erosions"],
                            candidates(cfg["detector"]["mix_from_layer"])))
    det.score_nets(sets[0][:8], nets, erosion=settings[0][0], mix_from_layer=None)  # warm-up (LPIPS weights)

    det.net = det.net  # empty memo
    t = time.perf_counter()
    one_by_one = [{s: det.score_nets(imgs, nets, erosion=s[0], mix_from_layer=s[1]) for s in settings}
                  for imgs in sets]
    t_one = time.perf_counter() - t
    det.net = det.net
    t = time.perf_counter()
    together = [det.score_settings(imgs, nets, settings) for imgs in sets]
    t_all = time.perf_counter() - t
    same = all(np.array_equal(a[s][n], b[s][n]) for a, b in zip(one_by_one, together) for s in settings for n in nets)
    print(f"{args.profile}: {len(settings)} settings x {len(nets)} backbones, {args.sets} sets of {args.n} images")
    print(f"one setting at a time {t_one:.1f} s, all settings at once {t_all:.1f} s: {t_one / t_all:.2f}x faster; "
          f"every score identical: {same}")


if __name__ == "__main__":
    main()
