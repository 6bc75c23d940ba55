"""Shipped detectors: pipeline.fit_detector uses a shipped file whose keys match instead of training, reports one
with other keys as stale (and trains), and ship_detector writes the compact file with its record and losses."""
import json
import shutil

import numpy as np
import pytest
import torch

from srood_lib import pipeline, shipped
from srood_lib.config import load_config
from srood_lib.data import ImageSet
from srood_lib.models.stylegan2 import Generator

from test_detector import _prior_file, smooth_images


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("SROOD_SHIPPED_DIR", str(tmp_path / "detectors"))
    cfg = load_config("smoke", {"detector.validation_ood": [], "detector.mix_from_layer": [None],
                                "detector.lpips_net": ["alex"], "repair.train.kimg": 0.064},
                      experiment="celeba")
    torch.manual_seed(0)
    G = Generator(32, **{k: v for k, v in cfg["prior"]["generator"].items() if k != "mapping_lr_mul"}).eval()
    prior = pipeline.PriorInfo(_prior_file(G, tmp_path / "prior.pt"), "testprior@1kimg", "stored checkpoint")
    images = smooth_images(96, 0)
    train = ImageSet(images, np.full(96, -1), {"name": "celeba", "split": "train", "resolution": 32, "sha256": "t"}, "celeba", "train")
    return cfg, prior, train, tmp_path


def test_a_shipped_detector_with_matching_keys_is_used_instead_of_training(env):
    cfg, prior, train, tmp = env
    trained = pipeline.fit_detector(cfg, "sr", prior, train)
    assert trained.source == "trained by this run"
    path = pipeline.ship_detector(cfg, "sr", prior, train, mode="int8", device_note="cpu (test)")
    assert path == pipeline.shipped_detector_file(cfg, "sr", prior.prior_id) and path.exists()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["mode"] == "int8" and record["bytes"] == path.stat().st_size and record["variant"] == "sr"
    assert record["recipe"] == pipeline.repair_recipe(cfg, "sr", prior.prior_id) and record["data_hash"]
    assert path.with_suffix(".losses.csv").exists()

    shutil.rmtree(tmp / "checkpoints")                    # a fresh clone: nothing cached, the shipped file present
    used = pipeline.fit_detector(cfg, "sr", prior, train)
    assert used.source.startswith("shipped (") and not (tmp / "checkpoints").exists()
    assert (used.erosion_name, used.threshold) == (trained.erosion_name, trained.threshold)
    imgs = smooth_images(8, 3)
    assert np.allclose(used.score(imgs), trained.score(imgs), atol=5e-3)
    assert pipeline.repair_losses_csv(cfg, "sr", prior) == path.with_suffix(".losses.csv")


def test_a_shipped_detector_is_restored_in_another_mode_without_the_cache(env):
    cfg, prior, train, tmp = env
    trained = pipeline.fit_detector(cfg, "sr", prior, train)
    path = pipeline.ship_detector(cfg, "sr", prior, train, mode="mixed", device_note="cpu (test)")
    before = json.loads(path.with_suffix(".json").read_text())
    shutil.rmtree(tmp / "checkpoints")                    # a fresh clone: only the shipped file
    again = pipeline.ship_detector(cfg, "sr", prior, train, mode="int8")
    record = json.loads(again.with_suffix(".json").read_text())
    assert again == path and record["mode"] == "int8" and record["restored_from"] == "mixed"
    assert record["bytes"] == path.stat().st_size < before["bytes"]
    assert {k: record[k] for k in ("recipe", "commit", "train_seconds", "device", "threshold")} == \
        {k: before[k] for k in ("recipe", "commit", "train_seconds", "device", "threshold")}
    used = pipeline.fit_detector(cfg, "sr", prior, train)
    assert used.source.startswith("shipped (") and used.threshold == trained.threshold
    imgs = smooth_images(8, 3)
    assert np.allclose(used.score(imgs), trained.score(imgs), atol=1e-2)


def test_shipping_with_neither_cache_nor_shipped_file_names_the_notebook(env):
    cfg, prior, train, _ = env
    with pytest.raises(FileNotFoundError, match="02_train_repair"):
        pipeline.ship_detector(cfg, "sr", prior, train)


def test_a_shipped_detector_of_another_recipe_is_reported_stale_and_not_used(env):
    cfg, prior, train, tmp = env
    pipeline.fit_detector(cfg, "sr", prior, train)
    old = pipeline.ship_detector(cfg, "sr", prior, train)
    cfg["repair"]["train"]["lr"] = 2 * cfg["repair"]["train"]["lr"]   # another recipe: another key
    assert pipeline.shipped_detector_file(cfg, "sr", prior.prior_id) != old
    det = pipeline.fit_detector(cfg, "sr", prior, train)
    assert det.source.startswith("trained by this run") and old.name in det.source and "not used" in det.source
    assert shipped.stale_files("celeba", "sr", pipeline.shipped_detector_file(cfg, "sr", prior.prior_id)) == [old]


def test_only_a_stored_prior_can_back_a_shipped_detector(env):
    cfg, prior, train, _ = env
    pipeline.fit_detector(cfg, "sr", prior, train)
    trained_prior = pipeline.PriorInfo(prior.path, prior.prior_id, "trained by this run")
    with pytest.raises(ValueError, match="ship the prior first"):
        pipeline.ship_detector(cfg, "sr", trained_prior, train)


def test_a_shipped_detector_trained_on_other_images_is_stale(env):
    cfg, prior, train, tmp = env
    pipeline.fit_detector(cfg, "sr", prior, train)
    ship = pipeline.ship_detector(cfg, "sr", prior, train)
    shutil.rmtree(tmp / "checkpoints")
    other = ImageSet(smooth_images(96, 1), train.labels, train.manifest, "celeba", "train")  # same name and sizes
    det = pipeline.fit_detector(cfg, "sr", prior, other)
    assert det.source == f"trained by this run; shipped {ship.name} trained on another copy of these images, not used"


def test_the_cli_default_prefers_the_detector_calibrated_here(env, monkeypatch):
    cfg, prior, train, tmp = env
    monkeypatch.setattr(pipeline, "profile_prior_key", lambda c: prior.prior_id)
    monkeypatch.setattr("srood_lib.config.load_config", lambda *a, **k: cfg)
    with pytest.raises(FileNotFoundError, match="none calibrated here and none shipped"):
        pipeline.default_detector("celeba", "sr", "smoke")
    pipeline.fit_detector(cfg, "sr", prior, train)
    cached = pipeline.detector_path(cfg, "sr", prior.prior_id) / f"detector_{pipeline.calibration_key(cfg, 'sr')}.pt"
    assert pipeline.default_detector("celeba", "sr", "smoke") == cached


def test_recorded_train_seconds_sums_only_records_that_state_one(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"train_seconds": 60.5}))
    (tmp_path / "b.json").write_text(json.dumps({"train_seconds": None}))
    (tmp_path / "c.json").write_text(json.dumps({"other": 1}))
    (tmp_path / "d.txt").write_text("not a record")
    assert shipped.recorded_train_seconds([tmp_path]) == [("a.json", 60.5)]


def test_a_stored_prior_is_used_for_its_recipe_and_budget_and_says_when_trained_on_another_copy(tmp_path,
                                                                                              monkeypatch):
    from srood_lib.runtime import data_fingerprint
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    stored = tmp_path / "priors" / "p.pt"
    cfg = load_config("smoke", {"prior.kimg": 0.064, "prior.checkpoint": str(stored)}, experiment="celeba")
    images = smooth_images(64, 0)
    train = ImageSet(images, np.full(64, -1), {"name": "celeba", "split": "train", "resolution": 32, "sha256": "t"},
                     "celeba", "train")
    first = pipeline.ensure_prior(cfg, train, progress=False)
    assert first.source == "trained by this run" and "is missing; trained one here" in first.notes[0]
    pipeline.export_prior(cfg, stored, "cpu (test)")
    assert json.loads(stored.with_suffix(".json").read_text())["images_fingerprint"] == data_fingerprint(images)
    same = pipeline.ensure_prior(cfg, train, progress=False)
    assert (same.path, same.source, same.notes, same.prior_id) == (stored, "stored checkpoint", [], first.prior_id)

    # Another copy of the set: the stored prior is still used, like any pretrained one, and the notebook says so.
    other = ImageSet(smooth_images(64, 1), train.labels, train.manifest, "celeba", "train")
    borrowed = pipeline.ensure_prior(cfg, other, progress=False)
    assert (borrowed.path, borrowed.source, borrowed.prior_id) == (stored, "stored checkpoint", first.prior_id)
    assert "trained on another copy of these images" in borrowed.notes[0] and "--retrain" in borrowed.notes[0]

    more = load_config("smoke", {"prior.kimg": 0.128, "prior.checkpoint": str(stored)}, experiment="celeba")
    path, why_not = pipeline.stored_prior_check(more)
    assert path is None and "fewer than prior.kimg=0.128" in why_not
    recipe = load_config("smoke", {"prior.kimg": 0.064, "prior.r1_gamma": 1.0, "prior.checkpoint": str(stored)},
                         experiment="celeba")
    assert "made by another recipe" in pipeline.stored_prior_check(recipe)[1]


def test_each_committed_prior_record_names_the_images_its_detectors_were_trained_on():
    """The committed records agree: a stored prior and the shipped detectors on it saw the same training images."""
    records = sorted((pipeline.PROJECT_ROOT / "priors").glob("*_32px_*.json"))
    assert records, "no committed prior records"
    for record in records:
        id_set = record.name.split("_32px_")[0]
        prior_fp = json.loads(record.read_text())["images_fingerprint"]
        detector_fps = {json.loads(p.read_text())["images_fingerprint"]
                        for p in (pipeline.PROJECT_ROOT / "detectors").glob(f"{id_set}_*.json")}
        assert detector_fps == {prior_fp}, (record.name, prior_fp, detector_fps)
