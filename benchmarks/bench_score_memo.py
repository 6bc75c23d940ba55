"""What the detector's score memo saves on notebook 03's analyses of SR-OOD_SR, measured in one run.

03 scores the same test sets under overlapping settings: the table rows (chosen T*, k, backbone), the repair-health
table (every k of ``detector.mix_sweep``, LPIPS-alex), the mixing sweep (every k, chosen backbone), the oracle T*
(every candidate erosion) and the scoring levers (median over erosions, z(L2) + z(LPIPS)). This runs that
sequence with the library's own functions twice on the same detector and images, once as it is (the memo fills as
it goes) and once with the memo emptied before every call (the behaviour before it existed), and prints the
repair passes and wall time of each and their ratio. Scores are compared too: the memo must change no number.

    .venv/bin/python benchmarks/bench_score_memo.py --profile quick --n 256
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

from bench_scoring import untrained_detector  # noqa: E402

from srood_lib.config import load_config  # noqa: E402
from srood_lib.detector import SROOD, mixing_sweep  # noqa: E402
from srood_lib.health import health_table  # noqa: E402
from srood_lib.levers import lever_scores  # noqa: E402
from srood_lib.pipeline import oracle_erosions  # noqa: E402


def analyses(det: SROOD, id_images: np.ndarray, ood: dict[str, np.ndarray], val: np.ndarray, mix_sweep) -> list:
    """03's calls on one detector, in 03's order; returns every number they produce, flattened."""
    sets = {"id": id_images, **ood}
    out = [det.score(imgs) for imgs in sets.values()]                                   # the table's rows
    out.append(health_table({"sr": det}, id_images, ood, mix_sweep, 0.5, "bench", {}).select_dtypes("number")
               .to_numpy())
    out.append(mixing_sweep(det, id_images, ood, mix_sweep)["auroc"].to_numpy())
    wrap = lambda imgs: SimpleNamespace(images=imgs)  # noqa: E731  (ImageSet's one field used here)
    out.append(oracle_erosions({}, {"sr": det}, wrap(id_images), {k: wrap(v) for k, v in ood.items()})["auroc"]
               .to_numpy())
    out += [s for per_set in lever_scores(det, sets, val).values() for s in per_set.values()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n", type=int, default=256, help="images per set (ID test, 3 OOD sets, ID validation)")
    args = parser.parse_args()

    cfg = load_config(args.profile)
    det = untrained_detector(args.profile)
    det.mix_from_layer, det.lpips_net = None, "vgg"       # the quick profile's chosen setting for SR-OOD_SR
    res = det.generator.resolution
    rng = np.random.default_rng(0)
    draw = lambda: rng.integers(0, 256, (args.n, res, res, 3), dtype=np.uint8)  # noqa: E731
    id_images, val = draw(), draw()
    ood = {name: draw() for name in ("ood_a", "ood_b", "ood_c")}
    mix_sweep = cfg["detector"]["mix_sweep"]

    passes = {"memo": 0, "no memo": 0}
    real_repair = SROOD.repair
    real_score_nets = SROOD.score_nets
    mode = {"now": "memo"}

    def counting_repair(self, images, *a, **k):
        passes[mode["now"]] += len(images)
        return real_repair(self, images, *a, **k)

    def forgetful_score_nets(self, *a, **k):
        self._scores.clear()
        return real_score_nets(self, *a, **k)

    SROOD.repair = counting_repair
    det.score(id_images[:8])  # warm-up (LPIPS weights loaded, kernels chosen)
    seconds, numbers = {}, {}
    for mode["now"] in ("no memo", "memo"):
        det.net = det.net       # empties the memo
        passes[mode["now"]] = 0
        SROOD.score_nets = forgetful_score_nets if mode["now"] == "no memo" else real_score_nets
        t = time.perf_counter()
        numbers[mode["now"]] = analyses(det, id_images, ood, val, mix_sweep)
        seconds[mode["now"]] = time.perf_counter() - t
    SROOD.score_nets, SROOD.repair = real_score_nets, real_repair

    same = all(np.allclose(a, b, equal_nan=True) for a, b in zip(numbers["memo"], numbers["no memo"]))
    print(f"profile {args.profile}, {args.n} images per set, threads {torch.get_num_threads()}, "
          f"mix_sweep {mix_sweep}, candidate erosions {det.config['candidate_erosions']}")
    for m in ("no memo", "memo"):
        print(f"{m:8s}: {passes[m]:7d} images repaired, {seconds[m]:7.1f} s")
    print(f"ratio no memo / memo: {seconds['no memo'] / seconds['memo']:.2f}x wall, "
          f"{passes['no memo'] / max(passes['memo'], 1):.2f}x images repaired; every number equal: {same}")


if __name__ == "__main__":
    main()
