"""Ship the profile's calibrated SR-OOD detectors to detectors/ in their compact form, after measuring what the
compression costs: every detector scores its table's ID test set and OOD columns with float32, fp16 and int8
encoder weights, and the AUROC (×100) of each column is compared. A detector is shipped as ``--mode`` only if
every column stays within ``--max-diff`` of float32.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/ship_detectors.py --profile quick --n 500 --ship

Writes detectors/compact_vs_full.csv (one row per ID set, variant, OOD column) and, with --ship, the files
(``--no-measure --ship`` ships from the CSV already there, e.g. after committing the code that writes them). Each
file shipped is then loaded back and scored on the same images: its AUROC goes into the CSV as ``auroc_shipped``
(``diff_shipped`` against float32), so the CSV states what the committed file does, not only what its mode should.
The detectors must be trained and calibrated already (notebook 02; the checkpoint cache), or shipped already with
the same keys, in which case only their storage changes (e.g. ``--mode int8`` re-stores a mixed file; the float32
measurement in the CSV must then come from an earlier run that had the cache). The priors must be the stored ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import pipeline, shipped  # noqa: E402
from srood_lib.detector import SROOD  # noqa: E402
from srood_lib.config import experiment_names  # noqa: E402
from srood_lib.data import subsample  # noqa: E402
from srood_lib.experiment import Experiment  # noqa: E402
from srood_lib.metrics import auroc  # noqa: E402
from srood_lib.detector import MIXED_INT8_PREFIXES  # noqa: E402
from srood_lib.runtime import compact_state, expand_state  # noqa: E402

MODES = ("float32", "fp16", "int8", "mixed")


def subsets(exp: Experiment, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The seeded ID test and per-OOD subsets every measurement here scores."""
    seed = exp.cfg["seed"]
    return subsample(exp.test, n, seed).images, {name: subsample(s, n, seed).images for name, s in exp.ood.items()}


def column_aurocs(det: SROOD, id_imgs: np.ndarray, ood: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC ×100 of ``det`` per OOD column."""
    s_id = det.score(id_imgs)
    return {name: 100 * auroc(s_id, det.score(imgs)) for name, imgs in ood.items()}


def measure(exp: Experiment, variant: str, n: int) -> list[dict]:
    det = exp.detector(variant)
    id_imgs, ood = subsets(exp, n)
    full = {k: v.clone() for k, v in det.net.encoder.state_dict().items()}
    aurocs = {}
    for mode in MODES:
        det.net.encoder.load_state_dict(full if mode == "float32" else
                                        expand_state(compact_state(full, mode, MIXED_INT8_PREFIXES)))
        aurocs[mode] = column_aurocs(det, id_imgs, ood)
    det.net.encoder.load_state_dict(full)
    return [{"id": exp.name, "variant": variant, "ood": name, "n_id": len(id_imgs), "n_ood": len(ood[name]),
             **{f"auroc_{m}": round(aurocs[m][name], 3) for m in MODES},
             **{f"diff_{m}": round(aurocs[m][name] - aurocs["float32"][name], 3) for m in MODES[1:]}}
            for name in ood]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--id", nargs="*", help="ID sets (default: every one of the profile)")
    ap.add_argument("--n", type=int, default=500, help="ID test and per-OOD images scored (seeded subset)")
    ap.add_argument("--mode", default="mixed", choices=MODES[1:])
    ap.add_argument("--max-diff", type=float, default=0.1, help="largest |AUROC difference| (×100) allowed")
    ap.add_argument("--no-measure", action="store_true", help="ship from the measurements already in the CSV")
    ap.add_argument("--ship", action="store_true", help="write the detectors that pass to detectors/")
    ap.add_argument("--device-note", default="2-core CPU")
    ap.add_argument("--no-check", action="store_true", help="do not score the shipped files back (auroc_shipped)")
    args = ap.parse_args()

    table = shipped.shipped_dir() / "compact_vs_full.csv"
    names = args.id or experiment_names(args.profile)
    if not args.no_measure:
        rows = []
        for name in names:
            exp = Experiment.load(args.profile, name, progress=False)
            for variant in exp.cfg["repair"]["variants"]:
                found = measure(exp, variant, args.n)
                rows += found
                print(f"{name}/{variant}: largest |AUROC diff| " + ", ".join(
                    f"{m} {max(abs(r[f'diff_{m}']) for r in found):.3f}" for m in MODES[1:]), flush=True)
        table.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(table, index=False)
        print(f"wrote {table}")
    if not args.ship:
        return
    measured = pd.read_csv(table)
    for col in ("auroc_shipped", "diff_shipped"):
        if col not in measured:
            measured[col] = np.nan
    for name in names:
        exp = Experiment.load(args.profile, name, progress=False)
        for variant in exp.cfg["repair"]["variants"]:
            rows = measured[(measured["id"] == name) & (measured["variant"] == variant)]
            if rows.empty:
                print(f"{name}/{variant}: not measured; not shipped", flush=True)
                continue
            worst = rows[f"diff_{args.mode}"].abs().max()
            if worst > args.max_diff:
                print(f"{name}/{variant}: not shipped, {args.mode} moves an AUROC by {worst:.3f} > {args.max_diff}")
                continue
            path = pipeline.ship_detector(exp.cfg, variant, exp.prior, exp.train, mode=args.mode,
                                          device_note=args.device_note)
            print(f"{name}/{variant}: shipped {path.name} ({path.stat().st_size / 1e6:.2f} MB; largest |AUROC "
                  f"diff| {worst:.3f})", flush=True)
            if args.no_check:
                continue
            n = int(rows[["n_id", "n_ood"]].max().max())   # the --n the CSV's rows were measured with
            back = column_aurocs(SROOD.load(path), *subsets(exp, n))   # the committed file, loaded back
            for idx in rows.index:
                col = measured.at[idx, "ood"]
                measured.at[idx, "auroc_shipped"] = round(back[col], 3)
                measured.at[idx, "diff_shipped"] = round(back[col] - measured.at[idx, "auroc_float32"], 3)
            print(f"{name}/{variant}: as shipped, largest |AUROC diff| to float32 "
                  f"{measured.loc[rows.index, 'diff_shipped'].abs().max():.3f}", flush=True)
            measured.to_csv(table, index=False)


if __name__ == "__main__":
    main()
