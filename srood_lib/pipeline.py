"""The workbook's steps as functions of the profile config, so notebooks stay a few calls long.

Each step reads only the config and what earlier steps wrote (the data cache, checkpoints keyed by the hash of
the config section that made them), so a re-run skips work whose inputs have not changed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from srood_lib.config import PROJECT_ROOT, checkpoint_dir, config_hash, project_relative
from srood_lib.data import DatasetMissingError, ImageSet, data_hash, load_dataset, subsample, subsample_indices
from srood_lib.detector import SROOD, detector_config
from srood_lib.models.psp import mix_label  # noqa: F401 - notebooks call pipeline.mix_label
from srood_lib.report import git_commit
from srood_lib.runtime import data_fingerprint
from srood_lib.rows import evaluate, table_of
from srood_lib import shipped

VARIANT_METHODS = {"rec": "SR-OOD_Rec", "inpaint": "SR-OOD_Inpaint", "sr": "SR-OOD_SR"}


# ------------------------------------------------------------------------------------------------ data

def id_sets(cfg: dict) -> tuple[ImageSet, ImageSet]:
    """(ID train, ID test) as the profile asks: dataset, resolution and subsample sizes."""
    d = cfg["data"]
    train = subsample(load_dataset(d["id"], "train", d["resolution"]), d["n_train"], cfg["seed"])
    test = subsample(load_dataset(d["id"], "test", d["resolution"]), d["n_test_id"], cfg["seed"])
    return train, test


def ood_sets(cfg: dict) -> tuple[dict[str, ImageSet], dict[str, str]]:
    """The profile's OOD test sets that are present, and for the absent ones why (the dataset error's text)."""
    d = cfg["data"]
    present, missing = {}, {}
    for name in d["ood"]:
        try:
            full = load_dataset(name, "test", d["resolution"], progress=False)
        except DatasetMissingError as err:
            missing[name] = str(err)
            continue
        present[name] = subsample(full, d["n_test_ood"], cfg["seed"])
    return present, missing


# ------------------------------------------------------------------------------------------------ prior

def prior_recipe(cfg: dict) -> dict:
    """The prior section minus the pointer to a stored checkpoint, plus what the prior is trained on."""
    recipe = {k: v for k, v in cfg["prior"].items() if k != "checkpoint"}
    return {"prior": recipe, "data": {"id": cfg["data"]["id"], "n_train": cfg["data"]["n_train"]},
            "seed": cfg["seed"]}


def prior_id(cfg: dict) -> str:
    """Hash of the prior's recipe without its budget: a larger ``kimg`` resumes the same run."""
    from srood_lib.train_prior import RESUMABLE_KEYS

    recipe = prior_recipe(cfg)
    recipe["prior"] = {k: v for k, v in recipe["prior"].items() if k not in RESUMABLE_KEYS}
    return config_hash(recipe)


def prior_run_dir(cfg: dict) -> Path:
    return checkpoint_dir() / "prior" / f"{cfg['data']['id']}_{cfg['prior']['resolution']}px_{prior_id(cfg)}"


def stored_prior(cfg: dict) -> Path | None:
    """The stored prior named by ``prior.checkpoint`` if its recipe hash matches and it saw at least ``kimg``
    (``stored_prior_check`` says why not).

    A stored prior is an EMA-generator checkpoint with a JSON record beside it (``<name>.json``: prior_id, kimg
    reached, the training images' fingerprint, device, wall time) — the workbook's stand-in for a downloadable
    pretrained StyleGAN2. Like one, it is used on any copy of its ID set; ``ensure_prior`` says when the copy here
    is not the one it was trained on.
    """
    return stored_prior_check(cfg)[0]


def stored_prior_check(cfg: dict) -> tuple[Path | None, str]:
    """(the usable stored prior or None, why it is not usable; "" when it is)."""
    name = cfg["prior"].get("checkpoint")
    if not name:
        return None, "no prior.checkpoint"
    path = Path(name) if Path(name).is_absolute() else PROJECT_ROOT / name
    record = path.with_suffix(".json")
    if not path.exists() or not record.exists():
        return None, f"prior.checkpoint {name} (or its .json record) is missing"
    info = json.loads(record.read_text())
    if info.get("prior_id") != prior_id(cfg):
        return None, (f"prior.checkpoint {name} was made by another recipe ({info.get('prior_id')}, "
                      f"not {prior_id(cfg)})")
    if info.get("kimg", 0) < cfg["prior"]["kimg"]:
        return None, (f"prior.checkpoint {name} saw {info.get('kimg', 0):g} kimg, fewer than "
                      f"prior.kimg={cfg['prior']['kimg']:g}")
    return path, ""


def _other_copy_note(record: dict, images: np.ndarray, name: str) -> list[str]:
    """A note when the stored prior was trained on another copy of the ID set than the images here."""
    stored, here = record.get("images_fingerprint"), data_fingerprint(images)
    if stored == here:
        return []
    what = (f"on another copy of these images (fingerprint {stored}, here {here})" if stored
            else "on images its record does not fingerprint")
    return [f"the stored prior {name} was trained {what}; used as any pretrained prior is (the paper's StyleGAN2 "
            "was trained elsewhere too); ./run_all.sh --retrain trains one on the images here"]


@dataclass
class PriorInfo:
    path: Path
    prior_id: str  # the weights' key: recipe hash and budget (prior_weights_key); keys every encoder on it
    source: str  # "stored checkpoint" | "trained by this run"
    notes: list[str] = field(default_factory=list)


def ensure_prior(cfg: dict, train_images: ImageSet, progress: bool = True) -> PriorInfo:
    """Use the stored prior whose recipe matches the profile; otherwise train (or resume) one with its budget."""
    from srood_lib.train_prior import train_prior

    pid = prior_id(cfg)
    stored, why_not = stored_prior_check(cfg)
    if stored is not None:
        record = json.loads(stored.with_suffix(".json").read_text())
        return PriorInfo(stored, prior_weights_key(pid, record["kimg"]), "stored checkpoint",
                         _other_copy_note(record, train_images.images, stored.name))
    recipe = prior_recipe(cfg)["prior"]
    path = train_prior(train_images.images, recipe, prior_run_dir(cfg), seed=cfg["seed"], device=cfg["device"],
                       progress=progress)
    notes = []
    if cfg["prior"].get("checkpoint"):
        notes.append(f"{why_not}; trained one here")
    return PriorInfo(path, prior_weights_key(pid, cfg["prior"]["kimg"]), "trained by this run", notes)


def prior_weights_key(pid: str, kimg: float) -> str:
    """What a prior's weights are: its recipe and the budget it was trained for (``<prior_id>@<kimg>kimg``)."""
    return f"{pid}@{float(kimg):g}kimg"


def budget_priors(cfg: dict, train_images: ImageSet, progress: bool = True) -> dict[float, PriorInfo]:
    """The profile's prior at each fraction of its training budget (``prior_budget.fractions``).

    Fraction 1 is the profile's own prior (stored or trained). Smaller fractions are EMA snapshots of a rerun of
    the same recipe and seed, stopped at the largest fraction below 1 — so the curve costs that fraction of the
    prior's budget, not all of it again.
    """
    from srood_lib.train_prior import snapshot_path, train_prior

    fractions = sorted(float(f) for f in cfg["prior_budget"]["fractions"])
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise ValueError(f"prior_budget.fractions must lie in (0, 1], got {cfg['prior_budget']['fractions']}")
    full = ensure_prior(cfg, train_images, progress)
    kimg = float(cfg["prior"]["kimg"])
    partial = [f for f in fractions if f < 1]
    priors: dict[float, PriorInfo] = {}
    if partial:
        run = prior_run_dir(cfg).with_name(prior_run_dir(cfg).name + "_budget")
        snapshots = {f: snapshot_path(run, f * kimg) for f in partial}
        if not all(p.exists() for p in snapshots.values()):
            recipe = {**prior_recipe(cfg)["prior"], "kimg": max(partial) * kimg,
                      "snapshot_kimg": [f * kimg for f in partial]}
            train_prior(train_images.images, recipe, run, seed=cfg["seed"], device=cfg["device"], progress=progress)
        for f, path in snapshots.items():
            priors[f] = PriorInfo(path, prior_weights_key(prior_id(cfg), f * kimg),
                                  f"EMA snapshot at {f * kimg:g} of {kimg:g} kimg (same recipe and seed)")
    if fractions[-1] == 1:
        priors[1.0] = full
    return priors


# ------------------------------------------------------------------------------------------------ repair

def repair_recipe(cfg: dict, variant: str, prior_key: str) -> dict:
    """Exactly what changes a repair network's weights: its training section and encoder, its erosions, the seed,
    the ID training images (dataset, resolution, subsample, validation hold-out) and the prior's weights. Test-time
    settings (T* candidates, mixing, backbone, threshold, batch size, device) are not in it."""
    d, rep = cfg["data"], cfg["repair"]
    if variant not in rep["variants"]:
        raise KeyError(f"unknown SR-OOD variant {variant!r}; the profile defines {sorted(rep['variants'])}")
    from srood_lib.train_repair import encoder_recipe, weights_recipe

    return {"train": weights_recipe(rep["train"]), "encoder": encoder_recipe(rep["encoder"]),
            "train_erosions": rep["variants"][variant]["train_erosions"],
            "seed": cfg["seed"], "data": {"id": d["id"], "resolution": d["resolution"], "n_train": d["n_train"],
                                          "n_val": d["n_val"]}, "prior": prior_key}


def profile_prior_key(cfg: dict) -> str:
    """The weights key of the prior ``ensure_prior`` gives this profile, without loading it: the stored prior's
    budget where one matches (it may have seen more than ``prior.kimg``), else the profile's."""
    stored = stored_prior(cfg)
    kimg = json.loads(stored.with_suffix(".json").read_text())["kimg"] if stored else cfg["prior"]["kimg"]
    return prior_weights_key(prior_id(cfg), kimg)


def detector_path(cfg: dict, variant: str, prior_key: str | None = None) -> Path:
    """The run folder of one variant's repair network, keyed by ``repair_recipe`` (``prior_key``: a
    ``PriorInfo.prior_id``; default the profile's own prior at its budget)."""
    key = config_hash(repair_recipe(cfg, variant, prior_key or profile_prior_key(cfg)))
    return checkpoint_dir() / "repair" / f"{cfg['data']['id']}_{variant}_{key}"


def validation_ood_sets(cfg: dict) -> dict[str, np.ndarray]:
    """The real OOD sets named by ``detector.validation_ood`` (train split, profile resolution), used only to choose
    a detector's settings; one that cannot be had is left out (the selection table shows which were used)."""
    out = {}
    for name in cfg["detector"]["validation_ood"]:
        if name == cfg["data"]["id"] or name in cfg["data"]["ood"]:
            raise ValueError(f"detector.validation_ood names {name!r}, which is the ID set or a test column; "
                             f"validation outliers must never be a test column")
        try:
            out[name] = load_dataset(name, "train", cfg["data"]["resolution"], progress=False).images
        except DatasetMissingError:
            continue
    return out


def calibration_key(cfg: dict, variant: str) -> str:
    """Hash of the test-time settings a detector is calibrated with (T* candidates, mixing and backbone
    candidates, gate, outliers, validation sets, eps rule): the key of a calibrated detector beside its network."""
    dcfg = detector_config(cfg, variant)
    calibration = {k: v for k, v in dcfg.items() if k not in ("train", "encoder", "train_erosions", "device",
                                                              "batch_size")}
    calibration["validation_ood"] = cfg["detector"]["validation_ood"]
    return config_hash(calibration)


def calibrated_detector_file(cfg: dict, variant: str, prior_key: str | None = None) -> Path:
    """The calibrated detector notebook 02 caches beside the variant's network."""
    return detector_path(cfg, variant, prior_key) / f"detector_{calibration_key(cfg, variant)}.pt"


def shipped_detector_file(cfg: dict, variant: str, prior_key: str | None = None) -> Path:
    """Where the shipped form of this profile's detector would be (``srood_lib.shipped``)."""
    return shipped.shipped_file(detector_path(cfg, variant, prior_key).name, calibration_key(cfg, variant))


def default_detector(id_set: str, variant: str, profile: str = "quick") -> Path:
    """The detector the CLI uses when no ``--checkpoint`` is given: the profile's (ID set, variant) at its current
    recipe and calibration, as notebook 02 calibrated it here (the cache) or as shipped (``detectors/``). Raises
    FileNotFoundError naming what is missing and how to make it."""
    from srood_lib.config import load_config

    cfg = load_config(profile, experiment=id_set)
    cached = calibrated_detector_file(cfg, variant)
    path = shipped_detector_file(cfg, variant)
    for candidate in (cached, path):
        if candidate.exists():
            return candidate
    stale = shipped.stale_files(id_set, variant, path)
    why = (f"only {', '.join(p.name for p in stale)}, made by another recipe or calibration" if stale
           else "none for it")
    raise FileNotFoundError(f"no {profile} detector for {id_set}/{variant}: none calibrated here and none shipped in "
                            f"{shipped.shipped_dir()} ({why}); run ./run_all.sh --profile {profile} --id {id_set} "
                            "--only 02_train_repair to train it, or pass --checkpoint")


def fit_detector(cfg: dict, variant: str, prior: PriorInfo, train_images: ImageSet,
                 progress: bool = True) -> SROOD:
    """Train (or resume, or load when finished) the repair network of one variant, then calibrate it (T*, k,
    backbone, eps) with the profile's test-time settings; the calibrated detector is cached beside the network,
    keyed by those settings, so changing them re-calibrates without re-training. Where nothing is cached, a shipped
    detector with the same keys (``detectors/``) is used instead of training; one with other keys is reported as
    stale and not used. ``det.source`` says which happened."""
    run_dir = detector_path(cfg, variant, prior.prior_id)
    final = calibrated_detector_file(cfg, variant, prior.prior_id)
    if final.exists():
        det = SROOD.load(final, device=None)
        det.source = f"cached ({final.relative_to(checkpoint_dir())})"
        return det
    ship = shipped_detector_file(cfg, variant, prior.prior_id)
    stale = shipped.stale_files(cfg["data"]["id"], variant, ship)
    if ship.exists():
        # The key holds the data set's name and sizes; its images are checked here (as train_repair checks a
        # checkpoint's): another copy of "cifar10" must not borrow a detector trained on this one.
        record = shipped.record_of(ship)
        if record.get("images_fingerprint") == data_fingerprint(train_images.images):
            det = SROOD.load(ship, device=None)
            det.source = f"shipped ({ship.name}, {record.get('mode', '?')})"
            return det
    det = SROOD(detector_config(cfg, variant), prior.path)
    det.fit(train_images.images, run_dir, prior_id=prior.prior_id, progress=progress,
            validation_ood=validation_ood_sets(cfg))
    det.save(final)
    why = []
    if stale:
        why.append(f"shipped {', '.join(p.name for p in stale)} made by another recipe or calibration, not used")
    if ship.exists():
        why.append(f"shipped {ship.name} trained on another copy of these images, not used")
    det.source = "; ".join(["trained by this run", *why])
    return det


def train_repair_network(cfg: dict, variant: str, prior: PriorInfo, train_images: ImageSet,
                         progress: bool = True) -> Path:
    """Algorithm 1 alone, exactly as ``fit_detector`` runs it (same images, held-out split, folder and seed), so a
    network trained here — e.g. by several processes under torchrun — is the one notebook 02 then calibrates."""
    from srood_lib.detector import split_validation
    from srood_lib.train_prior import load_prior
    from srood_lib.train_repair import train_repair

    dcfg = detector_config(cfg, variant)
    run_dir = detector_path(cfg, variant, prior.prior_id)
    train, _ = split_validation(train_images.images, dcfg["n_val"], dcfg["seed"])
    train_repair(train, load_prior(prior.path, dcfg["device"]), dcfg["train"], dcfg["encoder"],
                 dcfg["train_erosions"], run_dir, seed=dcfg["seed"], device=dcfg["device"], prior_id=prior.prior_id,
                 progress=progress)
    return run_dir


def repair_losses_csv(cfg: dict, variant: str, prior: PriorInfo) -> Path | None:
    """A variant's training losses: beside its network in the cache, or beside its shipped detector."""
    for candidate in (detector_path(cfg, variant, prior.prior_id) / "losses.csv",
                      shipped_detector_file(cfg, variant, prior.prior_id).with_suffix(".losses.csv")):
        if candidate.exists():
            return candidate
    return None


def ship_detector(cfg: dict, variant: str, prior: PriorInfo, train_images: ImageSet, mode: str = "mixed",
                  device_note: str = "") -> Path:
    """Write the calibrated detector of ``variant`` to ``detectors/`` in its compact form, with its JSON record and
    losses. The prior must be a stored one (``priors/``). The detector comes from the checkpoint cache (trained and
    calibrated here: ``fit_detector``); where the cache has none but a shipped file with the same keys exists, that
    file is re-stored as ``mode`` (its record kept, with ``restored_from`` naming the mode it had): only a change of
    storage, e.g. mixed -> int8, whose cost ``scripts/ship_detectors.py`` measures against float32 beforehand."""
    if prior.source != "stored checkpoint":
        raise ValueError(f"ship the prior first (export_prior to priors/): {prior.path} is not a stored prior")
    run_dir = detector_path(cfg, variant, prior.prior_id)
    dest = shipped_detector_file(cfg, variant, prior.prior_id)
    cached = calibrated_detector_file(cfg, variant, prior.prior_id)
    if not cached.exists():
        if not dest.exists():
            raise FileNotFoundError(f"no calibrated {variant} detector in the cache ({cached}) and none shipped: "
                                    "run notebook 02_train_repair first")
        old = shipped.record_of(dest)
        det = SROOD.load(dest, device="cpu")
        record = {k: v for k, v in old.items() if k not in ("mode", "bytes")}
        record["restored_from"] = old.get("mode")
        return shipped.write_shipped(det, dest, prior.path, record, None, mode)
    det = SROOD.load(cached, device="cpu")
    losses = run_dir / "losses.csv"
    seconds = None
    if losses.exists():
        tail = pd.read_csv(losses)
        seconds = float(tail["seconds"].iloc[-1]) if len(tail) else None
    record = {"id": cfg["data"]["id"], "variant": variant, "recipe": repair_recipe(cfg, variant, prior.prior_id),
              "calibration_key": calibration_key(cfg, variant), "settings": det.settings(), "threshold": det.threshold,
              "data_hash": data_hash(train_images), "images_fingerprint": data_fingerprint(train_images.images),
              "commit": git_commit(), "train_seconds": seconds,
              "device": device_note, "prior_file": project_relative(prior.path)}
    return shipped.write_shipped(det, dest, prior.path, record, losses, mode)


# ------------------------------------------------------------------------------------------------ evaluation

JPEG_NOTE = "OOD JPEG q75 4:2:0"
JPEG_SUBSET_NOTE = "OOD JPEG-control subset, as distributed"  # "JPEG" in both: results loaders leave controls out


def score_variants(cfg: dict, detectors: Mapping[str, SROOD], id_set: ImageSet, ood: dict[str, ImageSet],
                   jpeg_control: bool) -> tuple[pd.DataFrame, dict]:
    """Score ID test and every OOD set with each detector's chosen setting (keys: variants, named by their method,
    or row labels such as ``Experiment.lever_methods``'); with ``jpeg_control`` also the JPEG control: the OOD
    subsets of ``jpeg_control_sets`` as they are (noted ``JPEG_SUBSET_NOTE``) and after JPEG q75 4:2:0 (noted
    ``JPEG_NOTE``), both against every ID test score, so the two differ only by the encoding.

    Returns the results rows and the raw scores ``{key: {"id": ..., ood_name: ...}}``.
    """
    frames, raw, table = [], {}, table_of(cfg)
    jpeg = jpeg_control_sets(cfg, ood) if jpeg_control else {}
    # the same subsets as distributed: their scores are slices of the full sets' scores
    plain = {name: subsample(ood[name], cfg["eval"]["n_jpeg_control"], cfg["seed"]) for name in jpeg}
    pick = {name: subsample_indices(len(ood[name]), cfg["eval"]["n_jpeg_control"], cfg["seed"]) for name in jpeg}
    for key, det in detectors.items():
        method = VARIANT_METHODS.get(key, key)
        s_id = det.score(id_set.images)
        s_ood = {name: det.score(s.images) for name, s in ood.items()}
        raw[key] = {"id": s_id, **s_ood}
        note = det.settings() + ("" if det.passes_health else "; FAILS the repair-health gate (diagnostic only)")
        frames.append(evaluate(cfg, table, method, s_id, s_ood, id_set, ood, note=note))
        if jpeg:
            frames.append(evaluate(cfg, table, method, s_id, {name: s_ood[name][i] for name, i in pick.items()}, id_set,
                                   plain, note=note + f"; {JPEG_SUBSET_NOTE}"))
            frames.append(evaluate(cfg, table, method, s_id, {name: det.score(s.images) for name, s in jpeg.items()},
                                   id_set, jpeg, note=note + f"; {JPEG_NOTE}"))
    return pd.concat(frames, ignore_index=True), raw


def jpeg_control_sets(cfg: dict, ood: dict[str, ImageSet]) -> dict[str, ImageSet]:
    """The JPEG control's OOD images: ``eval.n_jpeg_control`` of each OOD set (seeded subset; all when null) after
    the same JPEG q75 4:2:0 encoding as the offline CIFAR-10 copy. The manifest records the encoding, so the rows'
    ``data_hash`` tells these images from the originals."""
    from srood_lib.compression import jpeg_roundtrip

    out = {}
    for name, s in ood.items():
        sub = subsample(s, cfg["eval"]["n_jpeg_control"], cfg["seed"])
        out[name] = ImageSet(jpeg_roundtrip(sub.images), sub.labels, {**sub.manifest, "transform": "JPEG q75 4:2:0"},
                             sub.name, sub.split)
    return out


def health_sets(cfg: dict, id_set: ImageSet, ood: dict[str, ImageSet]) -> tuple[ImageSet, dict[str, ImageSet]]:
    """The images the repair-health table is measured on: ``eval.n_health`` of ID test and of each OOD set (seeded
    subsets; all when null). Health at the other mixing layers costs one repair per image per k, the table's rows
    none of it, so a subset keeps the default run short; its means are stated with their n."""
    n, seed = cfg["eval"]["n_health"], cfg["seed"]
    return subsample(id_set, n, seed), {name: subsample(s, n, seed) for name, s in ood.items()}


def own_setting_plan(det: SROOD) -> dict[tuple, list[tuple[str, str | None]]]:
    """The detector's own setting as a score plan: (T*, k*) -> [(its distance, its backbone)]."""
    return {(det.erosion_name, det.mix_from_layer): [(det.config["distance"], det.lpips_net)]}


def health_score_plan(cfg: dict, det: SROOD) -> dict[tuple, list[tuple[str, str | None]]]:
    """What the repair-health table scores one detector's health sets with: T* at every k of
    ``detector.mix_sweep``, LPIPS-alex (``health.health_table``)."""
    return {(det.erosion_name, k): [("lpips", "alex")] for k in cfg["detector"]["mix_sweep"]}


def analyses_score_plan(cfg: dict, det: SROOD, analysed: bool) -> dict[tuple, list[tuple[str, str | None]]]:
    """What notebook 03_analyses scores one detector's test sets with: the oracle T* (every candidate T at k*);
    for the ``analysed`` variant also the mixing sweep (T* at every k of ``detector.mix_sweep``) and the scoring
    levers (every candidate T at k*; L2 at T*, k*). Its backbone throughout, as the rows."""
    t_star, k_star, own = det.erosion_name, det.mix_from_layer, (det.config["distance"], det.lpips_net)
    plan = {(t, k_star): [own] for t in det.config["candidate_erosions"]}
    if analysed:
        for k in cfg["detector"]["mix_sweep"]:
            plan.setdefault((t_star, k), []).append(own)
        plan.setdefault((t_star, k_star), []).append(("l2", None))
    return {s: list(dict.fromkeys(a)) for s, a in plan.items()}


def prefetch_sets(jobs_per_set: list, what: str) -> None:
    """``detector.prefetch_scores`` for each ``(images, jobs)`` of ``jobs_per_set``, under one progress bar."""
    from srood_lib.detector import prefetch_scores
    from srood_lib.progress import tqdm

    with tqdm(total=sum(len(images) for images, _ in jobs_per_set), unit="img",
              desc=f"scoring {len(jobs_per_set)} test sets under every setting {what}") as bar:
        for images, jobs in jobs_per_set:
            prefetch_scores(jobs, images, bar)


def prefetch_table_scores(cfg: dict, detectors: Mapping[str, SROOD], id_set: ImageSet,
                          ood: dict[str, ImageSet]) -> None:
    """Score every image set once for all that notebook 03_table's cells will ask, in one pass per set
    (``detector.prefetch_scores``): the test sets at each detector's own setting (the rows), the health sets
    (``health_sets``, ``health_score_plan``) and the JPEG-control sets (``jpeg_control_sets``, own setting). A set
    that is two of these (``eval.n_health: null``) is scored once for both. The cells then read the detectors'
    score memo: what they compute is unchanged, only when (``benchmarks/bench_table_scoring.py``)."""
    own = [(det, own_setting_plan(det)) for det in detectors.values()]
    health = [(det, health_score_plan(cfg, det)) for det in detectors.values()]
    h_id, h_ood = health_sets(cfg, id_set, ood)
    sets = [(s.images, own) for s in (id_set, *ood.values())]
    sets += [(s.images, health) for s in (h_id, *h_ood.values())]
    if cfg["eval"]["jpeg_control"]:
        sets += [(s.images, own) for s in jpeg_control_sets(cfg, ood).values()]
    prefetch_sets(merge_score_jobs(sets), "the table uses")


def merge_score_jobs(sets: list) -> list:
    """``[(images, jobs)]`` with the entries of one image array (the same object) merged into one, so that
    ``prefetch_sets`` passes over it once: ``jobs`` are ``[(detector, {(T, k): [(metric, backbone)]})]``."""
    merged: dict[int, tuple] = {}
    for images, jobs in sets:
        _, per_det = merged.setdefault(id(images), (images, {}))
        for det, plan in jobs:
            into = per_det.setdefault(id(det), (det, {}))[1]
            for setting, asks in plan.items():
                into[setting] = list(dict.fromkeys([*into.get(setting, []), *asks]))
    return [(images, list(per_det.values())) for images, per_det in merged.values()]


def prefetch_analyses_scores(cfg: dict, detectors: Mapping[str, SROOD], id_set: ImageSet, ood: dict[str, ImageSet],
                             analysed: str) -> None:
    """``prefetch_table_scores`` for notebook 03_analyses (``analyses_score_plan``; ``analysed``: the variant
    whose mixing sweep and levers it shows)."""
    plans = [(det, analyses_score_plan(cfg, det, variant == analysed)) for variant, det in detectors.items()]
    prefetch_sets([(s.images, plans) for s in (id_set, *ood.values())], "the analyses use")


def lever_rows(cfg: dict, det: SROOD, train: ImageSet, id_set: ImageSet,
               ood: dict[str, ImageSet]) -> tuple[pd.DataFrame, dict]:
    """Rows of the scoring levers BEYOND THE PAPER (``srood_lib.levers``) for one trained detector, each method
    named "<SR-OOD variant> + <lever> (beyond the paper)"; the faithful row stays the variant's own."""
    from srood_lib.detector import split_validation
    from srood_lib.levers import LEVERS, fit_levers
    from srood_lib.progress import tqdm

    _, val = split_validation(train.images, cfg["data"]["n_val"], cfg["seed"])
    levers = fit_levers(det, val, validation_ood_sets(cfg), cfg["scoring_levers"]["lpips_scales"])
    sets = {"id": id_set.images, **{name: s.images for name, s in ood.items()}}
    # a lever that asks for scores the analyses' prefetch did not make says so (score_plan): score it under a bar
    plans = [(det, lever.score_plan) for lever in levers.values() if hasattr(lever, "score_plan")]
    if plans:
        prefetch_sets([(images, plans) for images in sets.values()], "the levers use")
    scores, frames = {}, []
    for name, lever in tqdm(levers.items(), desc=f"scoring {len(sets)} test sets with each lever", unit="lever"):
        per_set = scores[name] = {set_name: lever.score(images) for set_name, images in sets.items()}
        method = f"{VARIANT_METHODS[det.config['variant']]} + {LEVERS[name]} (beyond the paper)"
        s_ood = {set_name: v for set_name, v in per_set.items() if set_name != "id"}
        note = "; ".join(filter(None, [det.settings(), lever.note]))
        frames.append(evaluate(cfg, table_of(cfg), method, per_set["id"], s_ood, id_set, ood, note=note))
    return pd.concat(frames, ignore_index=True), scores


def beside_paper(results: pd.DataFrame, table: str, metric: str = "auroc") -> pd.DataFrame:
    """Ours (with the bootstrap CI) beside the paper's value, one row per (method, setting, OOD set) of ours.

    The cells are the report's (``summary.labelled_cells``), restricted to the rows this run produced."""
    from srood_lib.summary import KEY, NEEDS_DATA, labelled_cells

    rows = results[~results["note"].fillna("").str.contains("JPEG")].assign(
        setting=results["setting"].fillna("") if "setting" in results else "")
    cells = labelled_cells(rows, table, metric).merge(rows[KEY].drop_duplicates(), on=KEY)
    ours = cells["cell"].replace(NEEDS_DATA, "needs download")
    return pd.DataFrame({"method": cells["method"], "setting": cells["setting"], "ood": cells["ood"],
                         "ours": ours, "paper (reported)": cells["paper"]})


def oracle_erosions(cfg: dict, detectors: dict[str, SROOD], id_set: ImageSet,
                    ood: dict[str, ImageSet]) -> pd.DataFrame:
    """AUROC (×100) of every candidate erosion on every test OOD set — the "oracle" view of T*.

    Not a method: it looks at the test OOD sets, which the T* protocol may not. It shows the gap between the
    validation choice and the best choice in hindsight.
    """
    from srood_lib.metrics import auroc

    rows = []
    for variant, det in detectors.items():
        for name in det.config["candidate_erosions"]:
            s_id = det.score(id_set.images, erosion=name)
            for ood_name, s in ood.items():
                rows.append({"method": VARIANT_METHODS[variant], "erosion": name, "ood": ood_name,
                             "auroc": round(100 * auroc(s_id, det.score(s.images, erosion=name)), 2),
                             "chosen_T*": name == det.erosion_name})
    return pd.DataFrame(rows)


def repair_grid(detector: SROOD, id_set: ImageSet, ood: dict[str, ImageSet], n_per_set: int, title: str,
                path=None, with_eroded: bool = True):
    """The paper's repair figures: original / eroded / repaired rows, ID first then each OOD set."""
    from srood_lib.report import repair_figure

    parts = {id_set.name: subsample(id_set, n_per_set, 0).images}
    parts.update({name: subsample(s, n_per_set, 0).images for name, s in ood.items()})
    images = np.concatenate(list(parts.values()))
    out = detector.repair_uint8(images)
    rows = [("original", out["original"])]
    if with_eroded:
        rows.append((f"eroded\n({detector.erosion_name})", out["eroded"]))
    rows.append(("repaired", out["repaired"]))
    return repair_figure(rows, columns=[(k, len(v)) for k, v in parts.items()], title=title, path=path)


def prior_losses_csv(prior: PriorInfo) -> Path | None:
    """The prior's losses.csv: beside a trained run's checkpoint, or the stored prior's ``<name>.losses.csv``."""
    for candidate in (prior.path.parent / "losses.csv", prior.path.with_suffix(".losses.csv")):
        if candidate.exists():
            return candidate
    return None


def selection_table(detectors: Mapping[str, SROOD]) -> pd.DataFrame:
    """Each detector's selection: every (T, k, backbone) candidate with its ID-validation specificity, the gate, its
    AUROC ×100 of held-out ID vs. each outlier kind and their mean; ``chosen`` marks the choice (with eps). Keys are
    variants (named by their method) or row labels (``Experiment.lever_methods``)."""
    frames = []
    for key, det in detectors.items():
        sel = det.selection.copy()
        sel.insert(0, "method", VARIANT_METHODS.get(key, key))
        sel["threshold_eps"] = np.where(sel["chosen"], det.threshold, np.nan)
        frames.append(sel)
    return pd.concat(frames, ignore_index=True).round(4)


def jpeg_control_table(results: pd.DataFrame) -> pd.DataFrame:
    """AUROC of each (method, OOD set) on all its OOD images, on the JPEG control's subset as distributed and on
    that subset after JPEG q75 4:2:0 (the last two differ only by the encoding), with the two image counts."""
    auroc = results[(results["metric"] == "auroc") & results["value"].notna()].copy()
    kind = np.select([auroc["note"].str.endswith(JPEG_NOTE), auroc["note"].str.endswith(JPEG_SUBSET_NOTE)],
                     ["subset, JPEG q75 4:2:0", "subset, as distributed"], "all, as distributed")
    auroc["OOD images"] = kind
    table = auroc.pivot_table(index=["method", "ood"], columns="OOD images", values="value", sort=False)
    n = auroc.assign(n=auroc["n_ood"].astype(int)).pivot_table(index=["method", "ood"], columns="OOD images",
                                                               values="n", sort=False)
    table["n (all)"] = n["all, as distributed"].astype(int)
    if "subset, as distributed" in n:
        table["n (subset)"] = n["subset, as distributed"].astype(int)
    return table[[c for c in ("all, as distributed", "subset, as distributed", "subset, JPEG q75 4:2:0", "n (all)",
                              "n (subset)") if c in table]]


def export_prior(cfg: dict, dest: str | Path, device_note: str) -> Path:
    """Store the trained prior of ``cfg`` as a small artefact: EMA generator only, plus a JSON training record
    and its losses — what ``prior.checkpoint`` points at so later runs start from it (as the paper starts from a
    pretrained StyleGAN2). Returns the checkpoint path."""
    import shutil

    from srood_lib.train_prior import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint

    run = prior_run_dir(cfg)
    ckpt = load_checkpoint(run)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    slim = {"format": CHECKPOINT_FORMAT, "G_kwargs": ckpt["G_kwargs"], "G_ema": ckpt["G_ema"], "cfg": ckpt["cfg"],
            "step": ckpt["step"], "nimg": ckpt["nimg"], "seed": ckpt["seed"]}
    atomic_torch_save(slim, dest)
    record = {"prior_id": prior_id(cfg), "kimg": ckpt["nimg"] / 1000, "images_fingerprint": ckpt["data"],
              "device": device_note,
              "recipe": prior_recipe(cfg), "commit": git_commit(), "train_seconds": round(ckpt["seconds"], 1)}
    tmp = dest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(dest.with_suffix(".json"))
    if (run / "losses.csv").exists():
        shutil.copyfile(run / "losses.csv", dest.with_suffix(".losses.csv"))
    return dest
