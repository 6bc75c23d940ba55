"""Shipped detectors: calibrated SR-OOD detectors committed under ``detectors/`` so that a fresh clone scores and
regenerates tables without training (the workbook's stand-in for downloadable pretrained detectors).

One file per (ID set, variant), named like the cache it stands in for: ``<run folder>_<calibration key>.pt``, where
the run folder is ``pipeline.detector_path``'s (``<id>_<variant>_<hash of exactly what changes the weights>``) and
the calibration key hashes the test-time settings it was calibrated with. A file is used only when both keys match
the profile; one for the same (ID set, variant) with other keys is stale and reported, never used. Beside each:
``<name>.json`` (recipe, data hash, commit, train time, device, storage mode) and ``<name>.losses.csv``.
Files are ``SROOD.save_compact`` output: encoder weights as int8 or fp16, the prior referred to by its committed
file under ``priors/``.

Baseline models (notebook 04's VAEs, Glow and classifier) ship the same way under ``detectors/baselines/``:
``<id>_<model>_<hash of its recipe>.pt`` (the hash ``baselines.run`` keys its cache with), weights as fp16 or int8,
each with a JSON record.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from srood_lib.config import PROJECT_ROOT
from srood_lib.atomic import atomic_write

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


def shipped_baseline_file(id_set: str, model: str, recipe_hash: str) -> Path:
    """Where the shipped form of baseline model ``model`` (e.g. ``vae_id``) of ``id_set`` made by the recipe
    hashed ``recipe_hash`` lives."""
    return shipped_dir() / "baselines" / f"{id_set}_{model}_{recipe_hash}.pt"


def stale_baseline_files(id_set: str, model: str, wanted: Path) -> list[Path]:
    """Shipped files of the same ID set and baseline model made by another recipe: never used for this profile."""
    folder = wanted.parent
    if not folder.is_dir():
        return []
    # model names share prefixes (vae_id, vae_id2...): the recipe hash is the last "_" field and has no "_"
    return sorted(p for p in folder.glob(f"{id_set}_{model}_*.pt")
                  if p.name != wanted.name and "_" not in p.stem[len(f"{id_set}_{model}_"):])


def write_record(dest: Path, record: dict) -> Path:
    """The JSON record beside ``dest`` (with the file's size), written atomically."""
    text = json.dumps({**record, "bytes": dest.stat().st_size}, indent=2, default=str)
    path = dest.with_suffix(".json")
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def write_shipped(det, dest: Path, prior_file: Path, record: dict, losses_csv: Path | None, mode: str) -> Path:
    """Write ``dest`` (compact detector), its JSON record (with the file's size) and its losses beside it, each
    atomically (temp file, then rename)."""
    det.save_compact(dest, prior_file, mode=mode)
    write_record(dest, {**record, "mode": mode})
    if losses_csv is not None and losses_csv.exists():
        atomic_write(dest.with_suffix(".losses.csv"), lambda f: f.write(losses_csv.read_bytes()))
    return dest


def record_of(path: Path) -> dict:
    """The JSON record beside a shipped detector ({} when there is none)."""
    rec = Path(path).with_suffix(".json")
    return json.loads(rec.read_text()) if rec.exists() else {}


def recorded_train_seconds(folders: list[Path] | None = None) -> list[tuple[str, float]]:
    """(record file name, ``train_seconds``) of every committed artefact record in ``folders`` (default
    ``detectors/``, ``detectors/baselines/`` and ``priors/``) that states one: what ``--retrain`` adds over the
    shipped run, as recorded by the machines that trained them (a sum of records, not a measured end-to-end time)."""
    folders = folders if folders is not None else [shipped_dir(), shipped_dir() / "baselines",
                                                   PROJECT_ROOT / "priors"]
    found = []
    for folder in folders:
        for record in sorted(Path(folder).glob("*.json")):
            seconds = json.loads(record.read_text()).get("train_seconds")
            if isinstance(seconds, (int, float)):
                found.append((record.name, float(seconds)))
    return found
