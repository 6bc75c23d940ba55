"""Shipped detectors: calibrated SR-OOD detectors committed under ``detectors/`` so that a fresh clone scores and
regenerates tables without training (the workbook's stand-in for downloadable pretrained detectors).

One file per (ID set, variant), named like the cache it stands in for: ``<run folder>_<calibration key>.pt``, where
the run folder is ``pipeline.detector_path``'s (``<id>_<variant>_<hash of exactly what changes the weights>``) and
the calibration key hashes the test-time settings it was calibrated with. A file is used only when both keys match
the profile; one for the same (ID set, variant) with other keys is stale and reported, never used. Beside each:
``<name>.json`` (recipe, data hash, commit, train time, device, storage mode) and ``<name>.losses.csv``.
Files are ``SROOD.save_compact`` output: encoder weights as int8 or fp16, the prior referred to by its committed
file under ``priors/``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from srood_lib.config import PROJECT_ROOT
from srood_lib.data.cache import atomic_write

SHIPPED_DIR = PROJECT_ROOT / "detectors"


def shipped_dir() -> Path:
    """``detectors/`` of the project (``SROOD_SHIPPED_DIR`` overrides it: tests, or a folder of one's own)."""
    return Path(os.environ.get("SROOD_SHIPPED_DIR", SHIPPED_DIR))


def shipped_file(run_name: str, calibration_key: str) -> Path:
    """Where the shipped form of run folder ``run_name`` calibrated under ``calibration_key`` lives."""
    return shipped_dir() / f"{run_name}_{calibration_key}.pt"


def stale_files(id_set: str, variant: str, wanted: Path) -> list[Path]:
    """Shipped detectors of the same ID set and variant whose keys differ from ``wanted``'s: made by another recipe
    or calibration, so never used for this profile."""
    folder = shipped_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{id_set}_{variant}_*.pt") if p.name != wanted.name)


def write_shipped(det, dest: Path, prior_file: Path, record: dict, losses_csv: Path | None, mode: str) -> Path:
    """Write ``dest`` (compact detector), its JSON record (with the file's size) and its losses beside it, each
    atomically (temp file, then rename)."""
    det.save_compact(dest, prior_file, mode=mode)
    text = json.dumps({**record, "mode": mode, "bytes": dest.stat().st_size}, indent=2, default=str)
    atomic_write(dest.with_suffix(".json"), lambda f: f.write(text.encode()))
    if losses_csv is not None and losses_csv.exists():
        atomic_write(dest.with_suffix(".losses.csv"), lambda f: f.write(losses_csv.read_bytes()))
    return dest


def record_of(path: Path) -> dict:
    """The JSON record beside a shipped detector ({} when there is none)."""
    rec = Path(path).with_suffix(".json")
    return json.loads(rec.read_text()) if rec.exists() else {}


def recorded_train_seconds(folders: list[Path] | None = None) -> list[tuple[str, float]]:
    """(record file name, ``train_seconds``) of every committed artefact record in ``folders`` (default
    ``detectors/`` and ``priors/``) that states one: what ``--retrain`` adds over the shipped run, as recorded by
    the machines that trained them (a sum of records, not a measured end-to-end time)."""
    folders = folders if folders is not None else [shipped_dir(), PROJECT_ROOT / "priors"]
    found = []
    for folder in folders:
        for record in sorted(Path(folder).glob("*.json")):
            seconds = json.loads(record.read_text()).get("train_seconds")
            if isinstance(seconds, (int, float)):
                found.append((record.name, float(seconds)))
    return found
