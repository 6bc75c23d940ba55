"""Command line: ``python -m srood_lib <command> ...`` (``--help`` on each command).

Commands used by run_all.sh: ``resolve-config``, ``check-data``, ``provision-lpips``. For users:
``score --checkpoint C --images PATH`` (CSV of per-image scores) and
``evaluate --checkpoint C --id NAME|PATH --ood NAME|PATH ...`` (metrics table), where PATH is an image folder or
a zip of one and C a detector file written by notebook 02.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _cmd_resolve_config(args: argparse.Namespace) -> int:
    from .config import load_config

    try:
        cfg = load_config(args.profile, args.set, experiment=args.experiment)
    except (KeyError, ValueError, FileNotFoundError) as err:
        # A typo in --set is the user's to fix: one line naming the key and the keys that exist, no traceback.
        print(f"run_all.sh: bad --set/--profile/--id: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(cfg, sort_keys=False)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    """The ID experiments a profile runs, one per line (run_all.sh loops over them)."""
    from .config import experiment_names

    try:
        names = experiment_names(args.profile)
    except FileNotFoundError as err:
        print(f"run_all.sh: {err}", file=sys.stderr)
        return 2
    print("\n".join(names))
    return 0


def _cmd_notebooks(args: argparse.Namespace) -> int:
    """The notebooks of a resolved experiment config, one per line, in order."""
    from .config import load_config

    print("\n".join(load_config(args.config)["experiment"]["notebooks"]))
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    """Load (and cache) the ID dataset of a config; a missing one is a short named error, not a traceback."""
    from .config import load_config
    from .data import DatasetMissingError, CorruptDataError, load_dataset

    cfg = load_config(args.config)  # a profile name or a (resolved) YAML file
    data = cfg["data"]
    try:
        for split in ("train", "test"):
            s = load_dataset(data["id"], split, resolution=data["resolution"], data_dir=args.data_dir)
            print(f"data ok: {data['id']}/{split} {len(s)} images at {data['resolution']} px")
    except (DatasetMissingError, CorruptDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_provision_lpips(args: argparse.Namespace) -> int:
    from .perceptual import LPIPSWeightsUnavailable, provision_lpips_weights

    try:
        for net in args.nets:
            print(f"LPIPS {net}: backbone weights at {provision_lpips_weights(net)}")
    except LPIPSWeightsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _load_images(name_or_path: str, resolution: int, split: str = "test"):
    from .data import load_dataset

    return load_dataset(name_or_path, split, resolution=resolution)


def _load_detector(path: str, device: str | None):
    """The SR-OOD detector at ``path``, or None after a one-line error (missing, not a detector, unsafe)."""
    from .detector import SROOD

    try:
        return SROOD.load(path, device=device)
    except (FileNotFoundError, ValueError) as err:  # UnsafeArtefactError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return None


def _cmd_score(args: argparse.Namespace) -> int:
    """Per-image OOD scores of an image folder / zip / named dataset, as CSV."""
    import pandas as pd

    from .data import DatasetMissingError

    det = _load_detector(args.checkpoint, args.device)
    if det is None:
        return 2
    try:
        images = _load_images(args.images, det.generator.resolution)
    except DatasetMissingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scores = det.score(images.images)
    frame = pd.DataFrame({"index": range(len(scores)), "score": scores,
                          "ood": scores > det.threshold if det.threshold is not None else None})
    frame.to_csv(args.out if args.out else sys.stdout, index=False)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Metrics table of a detector: one ID set against one or more OOD sets."""
    from .data import DatasetMissingError
    from .metrics import ood_metrics

    det = _load_detector(args.checkpoint, args.device)
    if det is None:
        return 2
    res = det.generator.resolution
    try:
        id_images = _load_images(args.id, res)
        ood = {name: _load_images(name, res) for name in args.ood}
    except DatasetMissingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s_id = det.score(id_images.images)
    print("ood,n_id,n_ood,auroc,auroc_ci_lo,auroc_ci_hi,aupr_in,aupr_out,fpr_at_95tpr")
    for name, s in ood.items():
        m = ood_metrics(s_id, det.score(s.images), n_boot=args.n_boot, seed=0)
        vals = [m[k] * 100 for k in ("auroc", "auroc_ci_lo", "auroc_ci_hi", "aupr_in", "aupr_out", "fpr_at_95tpr")]
        print(",".join([name, str(m["n_id"]), str(m["n_ood"])] + [f"{v:.2f}" for v in vals]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m srood_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("resolve-config", help="write a profile with overrides applied, as YAML")
    p.add_argument("--profile", required=True, help="smoke | quick | paper, or a path to a YAML file")
    p.add_argument("--experiment", help="the ID set (configs/id/<name>.yaml; default: the profile's first)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. prior.kimg=20")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_resolve_config)

    p = sub.add_parser("experiments", help="the ID experiments a profile runs, one per line")
    p.add_argument("--profile", required=True)
    p.set_defaults(func=_cmd_experiments)

    p = sub.add_parser("notebooks", help="the notebooks of a resolved experiment config, one per line")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_notebooks)

    p = sub.add_parser("check-data", help="make sure the ID dataset of a config is reachable (and cache it)")
    p.add_argument("--config", required=True, help="a resolved config YAML or a profile name")
    p.add_argument("--data-dir", help="raw datasets folder (default: $SROOD_DATA_DIR)")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("score", help="per-image OOD scores (CSV) of an image folder, a zip of one, or a dataset")
    p.add_argument("--checkpoint", required=True, help="a detector file (detector.pt) from notebook 02")
    p.add_argument("--images", required=True, help="image folder, .zip of one, or a dataset name (test split)")
    p.add_argument("--out", help="CSV file to write (default: stdout)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the detector's config)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("evaluate", help="AUROC, AUPR-In/Out, FPR@95TPR of ID vs. each OOD set (×100)")
    p.add_argument("--checkpoint", required=True, help="a detector file (detector.pt) from notebook 02")
    p.add_argument("--id", required=True, help="ID test set: dataset name (test split) or image folder / zip")
    p.add_argument("--ood", required=True, nargs="+", help="OOD sets: dataset names or image folders / zips")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the AUROC CI")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the detector's config)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("provision-lpips", help="make LPIPS backbone weights available offline")
    p.add_argument("--nets", nargs="+", default=["alex", "vgg"], choices=["alex", "vgg"])
    p.set_defaults(func=_cmd_provision_lpips)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
