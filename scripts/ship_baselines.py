"""Ship the profile's trained baseline models (notebook 04's VAEs, Glow, classifier) to detectors/baselines/, after
measuring what their storage costs: each ID set's baseline detectors score a seeded subset of its ID test set and
OOD columns with float32 weights and with each storage trial (``fp16``: every model fp16; ``int8_vaes``: the VAEs
int8, the Glow and the classifier fp16); the held-out statistics (Typicality Test, DoSE) are refitted on each
trial's weights, as notebook 04 does with the shipped models. An ID set ships as ``--ship-as`` only if every row and
column of that trial stays within ``--max-diff`` AUROC (×100) of float32, or within one swapped (ID, OOD) pair where
the subset is too small to resolve ``--max-diff`` (Likelihood Regret's: 100 / n² = 0.16 at n = 25).

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/ship_baselines.py --profile quick --ship

Writes detectors/baselines/compact_vs_full.csv (one row per ID set, method, OOD column; what an earlier run measured
and this one did not, other ID sets or other trials, is kept) and, with --ship, the files. The models must be in the
checkpoint cache already (notebook 04, or ./run_all.sh --retrain). Likelihood Regret (~1.4 s/image on 2 cores) is
measured on ``--n-regret`` images per set: there one swapped (ID, OOD) pair moves the AUROC by 100 / n².
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



TRIALS = ("float32", "fp16", "int8_vaes")


def plan_of(trial: str, name: str) -> str:
    """Storage of model ``name`` in ``trial`` (``TRIALS``): float32 | fp16 | int8 (the VAEs of ``int8_vaes``)."""
    if trial == "int8_vaes":
        return "int8" if name.startswith("vae") else "fp16"
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
        mode = plan_of(trial, name)
        if mode != "float32":
            m.load_state_dict(expand_state(compact_state(full[name], mode)))
    memo.clear()
    out = {}
    for method, det in detectors.items():
        sets = images["regret" if method == "Likelihood Regret" else "main"]
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
    ap.add_argument("--trials", nargs="+", default=list(TRIALS[1:]), choices=TRIALS[1:], help="storages measured")
    ap.add_argument("--ship-as", default="fp16", choices=TRIALS[1:], help="the storage shipped")
    ap.add_argument("--max-diff", type=float, default=0.1, help="largest |AUROC difference| (×100) allowed")
    ap.add_argument("--ship", action="store_true", help="write the models of the ID sets that pass")
    ap.add_argument("--no-measure", action="store_true", help="ship from the measurements already in the CSV")
    ap.add_argument("--device-note", default="2-core CPU")
    args = ap.parse_args()

    table = shipped.shipped_dir() / "baselines" / "compact_vs_full.csv"
    memo = memoised_vae_statistics()
    rows = []
    for name in args.id or experiment_names(args.profile):
        exp = Experiment.load(args.profile, name, progress=False)
        families = [f for f in exp.cfg["baselines"]["families"] if f in run.TRAINED_FAMILIES]
        if not families:
            continue
        exp = Experiment.load(args.profile, name, {"baselines.families": families}, progress=False)
        detectors = run.fit_baselines(exp.cfg, exp.train, progress=False)
        models = run.models_of(detectors)
        if any(m.weights != "float32" for m in models.values()):
            sys.exit(f"{name}: some models are not the float32 ones (shipped files?); train them first "
                     f"(notebook 04 with SROOD_SHIPPED_DIR pointing at an empty folder)")
        if args.no_measure:
            frame = pd.read_csv(table)
            frame = frame[frame["id"] == name]
            trials = [t for t in TRIALS if f"diff_{t}" in frame.columns and frame[f"diff_{t}"].notna().all()]
        else:
            images = subsets(exp, detectors, args)
            trials = ["float32", *args.trials]
            result = {trial: measure(detectors, images, trial, args, memo) for trial in trials}
            found = [{"id": name, "method": method, "ood": col, "n": args.n_regret if method == "Likelihood Regret"
                      else args.n, **{f"auroc_{t}": round(result[t][(method, col)], 3) for t in trials},
                      **{f"diff_{t}": round(result[t][(method, col)] - v, 3) for t in trials[1:]}}
                     for (method, col), v in result["float32"].items()]
            rows += found
            frame = pd.DataFrame(found)
        # the gate: --max-diff, or one swapped pair where the subset cannot resolve --max-diff
        tolerance = np.maximum(args.max_diff, 100.0 / frame["n"].to_numpy(float) ** 2 + 1e-6)
        worst = {t: float(frame[f"diff_{t}"].abs().max()) for t in trials if t != "float32"}
        passes = {t: bool((frame[f"diff_{t}"].abs().to_numpy() <= tolerance).all()) for t in worst}
        print(f"{name}: largest |AUROC diff| " + ", ".join(f"{t} {w:.3f}" for t, w in worst.items()), flush=True)
        ship_as = args.ship_as
        if args.ship and ship_as not in worst:
            print(f"  {name}: not shipped ({ship_as} was not measured in this run)")
        elif args.ship and passes[ship_as]:
            for model_name, model in models.items():
                mode = plan_of(ship_as, model_name)
                path = run.ship_model(model, name, mode, {"device_note": args.device_note, "commit": git_commit(),
                                                          "largest_auroc_diff": worst[ship_as]})
                for stale in shipped.stale_baseline_files(name, model_name, path):
                    stale.unlink()
                    stale.with_suffix(".json").unlink(missing_ok=True)
                print(f"  shipped {path.name} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
        elif args.ship:
            print(f"  {name}: not shipped ({ship_as} moves an AUROC by {worst[ship_as]:.3f}, beyond the gate)")
    if not rows:
        return
    keys = ["id", "method", "ood"]
    frame = pd.DataFrame(rows).set_index(keys)
    if table.exists():   # this run's cells win; what only the earlier run measured stays
        frame = frame.combine_first(pd.read_csv(table).set_index(keys))
    columns = ["n"] + [f"auroc_{t}" for t in TRIALS] + [f"diff_{t}" for t in TRIALS[1:]]
    table.parent.mkdir(parents=True, exist_ok=True)
    frame.reindex(columns=[c for c in columns if c in frame.columns]).reset_index().to_csv(table, index=False)
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
