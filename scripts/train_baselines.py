"""Train an ID set's baseline models (notebook 04's VAEs, Glow, classifier) into the checkpoint cache, without
scoring anything: the step before ``scripts/ship_baselines.py`` when the cache is empty, e.g. on a fresh machine.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/train_baselines.py --profile quick --id cifar10

Models already in the cache (or shipped with a matching recipe hash) are loaded, not trained again; every training
resumes from its last checkpoint when interrupted. ``SROOD_SHIPPED_DIR=/nonexistent`` forces training where a
shipped model would otherwise be used.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.baselines import run  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.experiment import Experiment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--id", required=True, help="ID set (configs/id/)")
    args = ap.parse_args()

    families = [f for f in load_config(args.profile, experiment=args.id)["baselines"]["families"]
                if f in run.TRAINED_FAMILIES]
    if not families:
        sys.exit(f"train_baselines: {args.id} has no trained baseline family {run.TRAINED_FAMILIES} in "
                 "baselines.families")
    exp = Experiment.load(args.profile, args.id, {"baselines.families": families})
    start = time.time()
    detectors = run.fit_baselines(exp.cfg, exp.train)
    print(run.model_sources(detectors).to_string(index=False))
    print(f"train_baselines: {args.id} ({', '.join(families)}) ready after {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
