"""Command line: ``python -m srood_lib <command> ...`` (``--help`` on each command).

Commands used by run_all.sh: ``resolve-config``, ``check-data``, ``provision-lpips``. For users:
``score --images PATH`` (CSV: one row per image with its relative path, score, OOD flag and eps) and
``evaluate --id NAME|PATH --ood NAME|PATH ...`` (metrics table), where PATH is an image, an image folder or a zip
of one. Both use the shipped CIFAR-10 SR-OOD_SR detector unless told otherwise (``--id-set``, ``--variant``,
``--checkpoint`` for a detector file of one's own; ``evaluate --id`` naming an ID set picks that set's). Expected
failures (missing path, empty folder, corrupt file, an image below the detector's resolution, a file that is not a
detector) print one line naming the fix and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .config import id_set_names

DEFAULT_ID_SET = "cifar10"  # whose shipped detector score and evaluate use unless told


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
    """The notebooks of a resolved experiment config, one per line, in order: its tables path, then (``--all``)
    its analyses beyond the tables."""
    from .config import load_config

    experiment = load_config(args.config)["experiment"]
    print("\n".join(experiment["notebooks"] + (experiment["analyses"] if args.all else [])))
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


class _UserError(Exception):
    """An input the user can fix (a path, a file, a flag); main prints it as one line and exits 2."""


def _user_errors():
    """Run the reading half of a command; what the user can fix becomes one ``_UserError`` line. Scoring itself
    runs outside it, so a bug there still shows its traceback."""
    import contextlib

    from .data import CorruptDataError, DatasetMissingError, ImageTooSmallError

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (DatasetMissingError, CorruptDataError, ImageTooSmallError, FileNotFoundError, ValueError) as err:
            raise _UserError(" ".join(str(err).split())) from None

    return guard()


def _detector(args: argparse.Namespace):
    """The detector a command names: ``--checkpoint``, else the shipped one of ``--id-set``/``--variant``."""
    from .detector import SROOD
    from .pipeline import default_detector

    path = args.checkpoint or default_detector(_detector_id_set(args), args.variant, args.profile)
    return SROOD.load(path, device=args.device)


def _detector_id_set(args: argparse.Namespace) -> str:
    """``--id-set``; unset, ``evaluate --id`` when it names an ID set (its own detector), else CIFAR-10."""
    if args.id_set is not None:
        return args.id_set
    named = getattr(args, "id", None)
    return named if named in id_set_names() else DEFAULT_ID_SET


def _cmd_score(args: argparse.Namespace) -> int:
    """Per-image OOD scores of an image, a folder / zip of images or a named dataset, as CSV."""
    import pandas as pd

    from .data import DATASETS, read_image_files

    with _user_errors():
        det = _detector(args)
        res = det.generator.resolution
        if args.images in DATASETS and not Path(args.images).exists():
            images, names, skipped = _load_images(args.images, res).images, None, []
        else:
            files = read_image_files(args.images, res, skip_unreadable=args.skip_unreadable, upsample=args.upsample)
            images, names, skipped = files.images, files.names, files.skipped
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    scores = det.score(images)
    frame = pd.DataFrame({"path": names if names is not None else [f"{args.images}[{i}]" for i in range(len(images))],
                          "score": scores})
    if det.threshold is not None:
        frame["ood"] = scores > det.threshold
        frame["eps"] = det.threshold
    frame.to_csv(args.out if args.out else sys.stdout, index=False)
    if args.out:
        flagged = (f"{int(frame['ood'].sum())} flagged OOD at eps={det.threshold:.4g}" if "ood" in frame
                   else "no threshold: not calibrated")
        print(f"scored {len(frame)} images ({flagged}, {det.settings()}"
              f"{f'; {len(skipped)} unreadable skipped' if skipped else ''}) -> {args.out}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Metrics table of a detector: one ID set against one or more OOD sets (the notebooks' metric code)."""
    from .metrics import ood_metrics

    with _user_errors():
        det = _detector(args)
        res = det.generator.resolution
        id_images = _load_images(args.id, res)
        ood = {name: _load_images(name, res) for name in args.ood}
    s_id = det.score(id_images.images)
    print("ood,n_id,n_ood,auroc,auroc_ci_lo,auroc_ci_hi,aupr_in,aupr_out,fpr_at_95tpr")
    for name, s in ood.items():
        m = ood_metrics(s_id, det.score(s.images), n_boot=args.n_boot, seed=0)
        vals = [m[k] * 100 for k in ("auroc", "auroc_ci_lo", "auroc_ci_hi", "aupr_in", "aupr_out", "fpr_at_95tpr")]
        print(",".join([name, str(m["n_id"]), str(m["n_ood"])] + [f"{v:.2f}" for v in vals]))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train the prior, or one variant's repair network, of a profile's ID experiment into the folders the notebooks
    use; under ``torchrun --nproc_per_node=N`` the N processes share each batch (srood_lib.distributed). Notebook
    01/02 then find the finished run (02 calibrates the detector on one process)."""
    from . import pipeline
    from .config import load_config
    from .data import DatasetMissingError
    from .distributed import world

    try:
        cfg = load_config(args.profile, args.set, experiment=args.id_set)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"error: bad --profile/--id-set/--set: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    me = world(cfg["device"])
    say = print if me.main else (lambda *a, **k: None)
    try:
        # process 0 builds the dataset cache first, the others then read it (no concurrent builds)
        if not me.main:
            me.barrier()
        train, _ = pipeline.id_sets(cfg)
        if me.main:
            me.barrier()
        prior = pipeline.ensure_prior(cfg, train, progress=me.main)
        if args.command == "train-prior":
            say(f"prior {prior.prior_id}: {prior.source} -> {prior.path}")
            for note in prior.notes:
                say(f"note: {note}")
        else:
            run = pipeline.train_repair_network(cfg, args.variant, prior, train, progress=me.main)
            say(f"repair network {args.variant} on prior {prior.prior_id}: trained -> {run}; notebook 02 "
                "calibrates it")
    except (DatasetMissingError, ValueError) as err:
        # another recipe's checkpoint, a batch that does not split over the processes, missing data: one line
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


def _add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="a detector file (notebook 02's cache or detectors/); default: the shipped "
                                        "detector of --id-set and --variant")
    p.add_argument("--id-set", default=None, choices=id_set_names(),
                   help="the in-distribution set of the shipped detector (default: evaluate's --id when it names "
                        f"one, else {DEFAULT_ID_SET})")
    p.add_argument("--variant", default="sr", choices=["sr", "inpaint", "rec"],
                   help="the SR-OOD variant of the shipped detector (default sr)")
    p.add_argument("--profile", default="quick", help="the profile whose shipped detector to use (default quick)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the detector's config)")


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
    p.add_argument("--all", action="store_true", help="also the analyses beyond the tables (experiment.analyses)")
    p.set_defaults(func=_cmd_notebooks)

    p = sub.add_parser("check-data", help="make sure the ID dataset of a config is reachable (and cache it)")
    p.add_argument("--config", required=True, help="a resolved config YAML or a profile name")
    p.add_argument("--data-dir", help="raw datasets folder (default: $SROOD_DATA_DIR)")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("score", help="per-image OOD scores (CSV: path, score, ood, eps) of images of one's own")
    p.add_argument("--images", required=True, help="an image, a folder of images (any depth), a .zip of one, or a "
                                                    "dataset name (its test split)")
    p.add_argument("--out", help="CSV file to write (default: stdout)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out files that cannot be decoded (listed on stderr) instead of stopping")
    p.add_argument("--upsample", action="store_true",
                   help="score images smaller than the detector's resolution by enlarging them (refused by default)")
    _add_detector_args(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("evaluate", help="AUROC, AUPR-In/Out, FPR@95TPR of ID vs. each OOD set (×100)")
    p.add_argument("--id", required=True, help="ID test set: dataset name (test split) or image folder / zip")
    p.add_argument("--ood", required=True, nargs="+", help="OOD sets: dataset names or image folders / zips")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the AUROC CI")
    _add_detector_args(p)
    p.set_defaults(func=_cmd_evaluate)

    for name, what in (("train-prior", "the generative prior"), ("train-repair", "one variant's repair network")):
        p = sub.add_parser(name, help=f"train {what} of a profile (torchrun --nproc_per_node=N for N processes)")
        p.add_argument("--profile", default="quick", help="smoke | quick | paper, or a path to a YAML file")
        p.add_argument("--id-set", help="the ID experiment (default: the profile's first)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
        if name == "train-repair":
            p.add_argument("--variant", required=True, choices=["sr", "inpaint", "rec"])
        p.set_defaults(func=_cmd_train)

    p = sub.add_parser("provision-lpips", help="make LPIPS backbone weights available offline")
    p.add_argument("--nets", nargs="+", default=["alex", "vgg"], choices=["alex", "vgg"])
    p.set_defaults(func=_cmd_provision_lpips)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
