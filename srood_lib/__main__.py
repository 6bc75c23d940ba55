"""Command line: ``python -m srood_lib <command> ...`` (``--help`` on each command).

Commands used by run_all.sh: ``resolve-config``, ``check-data``, ``provision-lpips``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _cmd_resolve_config(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.profile, args.set)
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


def _cmd_check_data(args: argparse.Namespace) -> int:
    """Load (and cache) the ID dataset of a config; a missing one is a short named error, not a traceback."""
    from .config import load_config
    from .data import DatasetMissingError, CorruptDataError, load_dataset

    with open(args.config) as f:
        cfg = yaml.safe_load(f) if args.config.endswith((".yaml", ".yml")) else None
    cfg = cfg or load_config(args.config)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m srood_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("resolve-config", help="write a profile with overrides applied, as YAML")
    p.add_argument("--profile", required=True, help="smoke | quick | paper, or a path to a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. prior.train.kimg=20")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_resolve_config)

    p = sub.add_parser("check-data", help="make sure the ID dataset of a config is reachable (and cache it)")
    p.add_argument("--config", required=True, help="a resolved config YAML or a profile name")
    p.add_argument("--data-dir", help="raw datasets folder (default: $SROOD_DATA_DIR)")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("provision-lpips", help="make LPIPS backbone weights available offline")
    p.add_argument("--nets", nargs="+", default=["alex", "vgg"], choices=["alex", "vgg"])
    p.set_defaults(func=_cmd_provision_lpips)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
