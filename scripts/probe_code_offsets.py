"""Where the shipped detectors' W+ codes lie against their prior's W, per style (health.code_offsets).

For each ID set and variant: the ID test images eroded by the detector's T*, encoded, and each style's distance
from w_avg compared with the mapping network's own outputs. A diagnostic of the repair recipe (issue "The repair
network must repair"): codes many times farther out than any mapping(z) are ones the generator never saw.

    SROOD_DATA_DIR=../shared/data .venv/bin/python scripts/probe_code_offsets.py --out logs/code_offsets.csv

``--detector FILE --ids ID`` measures one detector file instead (a lever's, from ``checkpoints/``), on ID's test images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib import pipeline  # noqa: E402
from srood_lib.config import id_set_names, load_config  # noqa: E402
from srood_lib.detector import SROOD  # noqa: E402
from srood_lib.health import code_offsets  # noqa: E402
from srood_lib.shipped import shipped_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", nargs="+", default=id_set_names())
    ap.add_argument("--variants", nargs="+", default=["rec", "inpaint", "sr"])
    ap.add_argument("--n", type=int, default=256, help="ID test images encoded per detector")
    ap.add_argument("--detector", default=None, help="one detector file instead of the shipped ones (one --ids)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.detector and len(args.ids) != 1:
        sys.exit("error: --detector needs exactly one --ids (the ID set whose test images it encodes)")
    tables = []
    for id_set in args.ids:
        _, test = pipeline.id_sets(load_config("quick", [], experiment=id_set))
        targets = ({Path(args.detector).stem: [Path(args.detector)]} if args.detector else
                   {v: sorted(shipped_dir().glob(f"{id_set}_{v}_*.pt")) for v in args.variants})
        for variant, files in targets.items():
            if len(files) != 1:
                sys.exit(f"error: expected one shipped {id_set} {variant} detector in {shipped_dir()}, "
                         f"found {len(files)}")
            det = SROOD.load(files[0], device="cpu")
            eroded, _, _ = det.repair(test.images[:args.n])
            table = code_offsets(det.net, eroded)
            table.insert(0, "variant", variant)
            table.insert(0, "id", id_set)
            tables.append(table)
            print(f"{id_set} {variant} ({det.settings()}): median |w+ - w_avg| / the mapping's median, per style: "
                  + " ".join(f"{r:.1f}" for r in table["offset_ratio"]), flush=True)
    out = pd.concat(tables, ignore_index=True)
    out.to_csv(args.out, index=False, float_format="%.4g")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
