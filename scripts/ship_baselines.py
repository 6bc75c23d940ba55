"""Ship the profile's trained baseline models (notebook 04's VAEs, Glow, classifier) to detectors/baselines/, after
measuring what their storage costs: each ID set's baseline detectors score a seeded subset of its ID test set and
OOD columns with float32 weights, with every model in fp16, and with the shipped plan (the VAEs as ``--vae-mode``,
the Glow and the classifier as fp16); the held-out statistics (Typicality Test, DoSE) are refitted on each trial's
weights, as notebook 04 does with the shipped models. An ID set ships only if every row and column of the shipped
plan stays within ``--max-diff`` AUROC (×100) of float32.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/ship_baselines.py --profile quick --ship

Writes detectors/baselines/compact_vs_full.csv (one row per ID set, method, OOD column; rows of ID sets not
measured in this run are kept) and, with --ship, the files. The models must be in the checkpoint cache already
(notebook 04, or ./run_all.sh --retrain). Likelihood Regret (~1.4 s/image on 2 cores) is measured on
``--n-regret`` images per set and not in the all-fp16 trial.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import shipped  # noqa: E402
from srood_lib.baselines import likelihood, run  # noqa: E402
from srood_lib.config import experiment_names  # noqa: E402
from srood_lib.data import subsample  # noqa: E402
from srood_lib.experiment import Experiment  # noqa: E402
from srood_lib.metrics import auroc  # noqa: E402
from srood_lib.report import git_commit  # noqa: E402
from srood_lib.runtime import compact_state, expand_state  # noqa: E402

TRAINED_FAMILIES = ("likelihood", "classifier")   # "features" has no trained model


def plan_of(trial: str, name: str, vae_mode: str) -> str:
    """Storage of model ``name`` in ``trial``: float32 | fp16 | shipped (VAEs ``vae_mode``, the rest fp16)."""
    if trial == "shipped":
        return vae_mode if name.startswith("vae") else "fp16"
    return trial


def memoised_vae_statistics():
    """Within one trial every VAE detector asks for the same per-image statistics of the same images; compute them
    once (``clear`` between trials, whose weights differ)."""
    original, memo = likelihood.vae_statistics, {}

    def stats(vae, images, *args):
        key = (id(vae), id(images), args)
        entry = memo.get(key)
        if entry is None or entry[0] is not vae or entry[1] is not images:   # the entry keeps both alive
            entry = memo[key] = (vae, images, original(vae, images, *args))
        return entry[2]

    likelihood.vae_statistics = stats
    return memo


def measure(detectors: dict, images: dict, trial: str, args, memo: dict) -> dict:
    """AUROC ×100 {(method, ood): value} of ``detectors`` with the trial's weights, on ``images`` (``subsets``)."""
    models = run.models_of(detectors)
    full = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in models.items()}
    for name, m in models.items():
        mode = plan_of(trial, name, args.vae_mode)
        if mode != "float32":
            m.load_state_dict(expand_state(compact_state(full[name], mode)))
    memo.clear()
    out = {}
    for method, det in detectors.items():
        regret = method == "Likelihood Regret"
        if regret and trial == "fp16":
            continue
        sets = images["regret" if regret else "main"]
        if hasattr(det, "_fit_statistics"):
            det._fit_statistics(images["holdout"], False)   # held-out statistics on these weights
        s_id = det.score(sets["id"])
        for col, ood in sets.items():
            if col != "id":
                out[(method, col)] = 100 * auroc(s_id, det.score(ood))
        print(f"  {trial} {method}: done", flush=True)
    for name, m in models.items():
        m.load_state_dict(full[name])
    return out


def subsets(exp: Experiment, detectors: dict, args) -> dict:
    """The images every trial scores, made once: the memo of ``memoised_vae_statistics`` keys on the arrays."""
    seed = exp.cfg["seed"]

    def take(n):
        return {"id": subsample(exp.test, n, seed).images,
                **{col: subsample(s, n, seed).images for col, s in exp.ood.items()}}

    holdout = next((d.split(exp.train.images)[1] for d in detectors.values() if hasattr(d, "split")), None)
    return {"main": take(args.n), "regret": take(args.n_regret), "holdout": holdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--id", nargs="*", help="ID sets (default: every one of the profile)")
    ap.add_argument("--n", type=int, default=500, help="ID test and per-OOD images scored (seeded subset)")
    ap.add_argument("--n-regret", type=int, default=25, help="the same for Likelihood Regret")
    ap.add_argument("--vae-mode", default="int8", choices=("fp16", "int8"))
    ap.add_argument("--max-diff", type=float, default=0.1, help="largest |AUROC difference| (×100) allowed")
    ap.add_argument("--ship", action="store_true", help="write the models of the ID sets that pass")
    ap.add_argument("--device-note", default="2-core CPU")
    args = ap.parse_args()

    table = shipped.shipped_dir() / "baselines" / "compact_vs_full.csv"
    memo = memoised_vae_statistics()
    rows = []
    for name in args.id or experiment_names(args.profile):
        exp = Experiment.load(args.profile, name, progress=False)
        families = [f for f in exp.cfg["baselines"]["families"] if f in TRAINED_FAMILIES]
        if not families:
            continue
        exp = Experiment.load(args.profile, name, {"baselines.families": families}, progress=False)
        detectors = run.fit_baselines(exp.cfg, exp.train, progress=False)
        models = run.models_of(detectors)
        if any(m.weights != "float32" for m in models.values()):
            sys.exit(f"{name}: some models are not the float32 ones (shipped files?); train them first "
                     f"(notebook 04 with SROOD_SHIPPED_DIR pointing at an empty folder)")
        images = subsets(exp, detectors, args)
        result = {trial: measure(detectors, images, trial, args, memo) for trial in ("float32", "fp16", "shipped")}
        found = [{"id": name, "method": method, "ood": col, "n": args.n_regret if method == "Likelihood Regret"
                  else args.n, **{f"auroc_{t}": round(result[t].get((method, col), np.nan), 3) for t in result},
                  **{f"diff_{t}": round(result[t].get((method, col), np.nan) - v, 3) for t in ("fp16", "shipped")}}
                 for (method, col), v in result["float32"].items()]
        rows += found
        frame = pd.DataFrame(found)
        worst = {t: float(frame[f"diff_{t}"].abs().max()) for t in ("fp16", "shipped")}
        print(f"{name}: largest |AUROC diff| fp16 {worst['fp16']:.3f}, shipped ({args.vae_mode} VAEs) "
              f"{worst['shipped']:.3f}", flush=True)
        if args.ship and worst["shipped"] <= args.max_diff:
            for model_name, model in models.items():
                mode = plan_of("shipped", model_name, args.vae_mode)
                path = run.ship_model(model, name, mode, {"device_note": args.device_note, "commit": git_commit(),
                                                          "largest_auroc_diff": worst["shipped"]})
                for stale in shipped.stale_baseline_files(name, model_name, path):
                    stale.unlink()
                    stale.with_suffix(".json").unlink(missing_ok=True)
                print(f"  shipped {path.name} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
        elif args.ship:
            print(f"  {name}: not shipped (shipped plan moves an AUROC by {worst['shipped']:.3f} > {args.max_diff})")
    measured = {r["id"] for r in rows}
    if table.exists():
        rows = [r for r in pd.read_csv(table).to_dict("records") if r["id"] not in measured] + rows
    table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(table, index=False)
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
