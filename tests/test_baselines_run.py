"""The baselines' pipeline glue: fit (and cache) every family's detectors, score them into table rows (with stored
scores), sanity views."""
import json
import shutil

import numpy as np
import pytest
import torch

from srood_lib.baselines import run
from srood_lib.runtime import safe_torch_load
from srood_lib.config import load_config
from srood_lib.data import ImageSet

from test_baselines_vae import noise_images, smooth_images


def keys_of(section, prefix=""):
    out = set()
    for k, v in section.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys_of(v, prefix + k + ".")
    return out


def image_set(images, name):
    manifest = {"name": name, "split": "test", "resolution": images.shape[1], "sha256": f"fake-{name}"}
    return ImageSet(images, np.full(len(images), -1), manifest, name, "test")


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("SROOD_SHIPPED_DIR", str(tmp_path / "shipped"))  # never the project's detectors/
    cfg = load_config("smoke", {"device": "cpu", "eval.n_boot": 10, "baselines.families": ["likelihood"]})
    return cfg


TRAIN = image_set(smooth_images(96, 0), "cifar10")
ID_TEST = image_set(smooth_images(16, 3), "cifar10")
OOD = {"noise": image_set(noise_images(16, 3), "noise"), "dark": image_set(smooth_images(16, 4) // 4, "dark")}


def test_every_profile_has_the_same_baseline_keys():
    keys = [keys_of(load_config(p)["baselines"]) for p in ("smoke", "quick", "paper")]
    assert keys[0] == keys[1] == keys[2]


def test_fit_caches_models_and_a_rerun_loads_them(cfg, tmp_path, monkeypatch):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    assert list(dets) == run.LIKELIHOOD_METHODS
    files = sorted(p.parent.name.rsplit("_", 1)[0] for p in (tmp_path / "baselines").glob("*/model.pt"))
    assert files == ["glow", "vae_background", "vae_id", "vae_waic1"]  # smoke: 2 WAIC members, one is vae_id
    shared = dets["Likelihood"].vaes["id"]
    for name in ("Likelihood Regret", "Typicality Test", "Likelihood Ratio", "DoSE_KDE", "DoSE_SVM"):
        assert dets[name].vaes["id"] is shared
    assert dets["WAIC"].vaes["member0"] is shared
    assert dets["Glow (diff to None)"].flow is dets["Glow (diff to PNG)"].flow

    def refuse(*args, **kw):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(run, "train_vae", refuse)
    monkeypatch.setattr(run, "train_glow", refuse)
    again = run.fit_baselines(cfg, TRAIN, progress=False)
    for name in ("Likelihood", "WAIC", "Likelihood Ratio", "Glow (diff to PNG)"):
        np.testing.assert_array_equal(again[name].score(OOD["noise"].images), dets[name].score(OOD["noise"].images))
    # another recipe is another model: it is not found, so training is attempted
    other = {**cfg, "baselines": {**cfg["baselines"], "vae": {**cfg["baselines"]["vae"], "z_dim": 4}}}
    with pytest.raises(AssertionError, match="retrained"):
        run.fit_baselines(other, TRAIN, progress=False)


def test_score_rows_bits_per_dim_and_samples(cfg):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    raw = {}
    rows = run.score_baselines(cfg, dets, ID_TEST, OOD, progress=False, raw=raw)
    assert set(rows["method"]) == set(run.LIKELIHOOD_METHODS) and set(rows["table"]) == {"I"}
    assert set(rows["ood"]) == {"noise", "dark"}
    auroc = rows[rows["metric"] == "auroc"]
    assert auroc["value"].notna().all() and len(auroc) == 2 * len(run.LIKELIHOOD_METHODS)
    n_regret = cfg["baselines"]["regret"]["n_images"]
    regret = auroc[auroc["method"] == "Likelihood Regret"]
    assert set(regret["n_id"]) == {n_regret} and set(regret["n_ood"]) == {n_regret}
    assert set(auroc[auroc["method"] == "Likelihood"]["n_id"]) == {16}
    assert "s/image" in regret["note"].iloc[0]
    assert len(raw["Likelihood Regret"]["id"]) == n_regret and len(raw["WAIC"]["noise"]) == 16

    bpd = run.test_bits_per_dim(dets, ID_TEST)
    assert list(bpd["model"]) == ["VAE (ID)", "VAE (WAIC member1)", "VAE (background)", "Glow"]
    assert (bpd["bits_per_dim"] > 0).all() and (bpd["n"] == 16).all()
    np.testing.assert_allclose(bpd["bits_per_dim"].iloc[0], dets["Likelihood"].score(ID_TEST.images).mean(),
                               atol=1e-4)

    grid = run.sample_grid(dets, 3, seed=0)
    assert len(grid) == 3
    for images in grid.values():
        assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8


def test_missing_baselines_key_is_named(cfg):
    del cfg["baselines"]["waic"]
    with pytest.raises(KeyError, match="waic"):
        run.fit_baselines(cfg, TRAIN, progress=False)


def test_scores_are_stored_and_a_rerun_reads_them(cfg, tmp_path, monkeypatch):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    first = run.score_baselines(cfg, dets, ID_TEST, OOD, progress=False)
    stored = sorted((tmp_path / "baselines" / "scores").glob("*.npz"))
    # one file per (method, scored set): Regret scores its own subsets, which are the full sets here (16 < n)
    assert len(stored) == len(run.LIKELIHOOD_METHODS) * 3
    for det in dets.values():
        monkeypatch.setattr(det, "score", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-scored")))
    again = run.score_baselines(cfg, dets, ID_TEST, OOD, progress=False)
    cols = ["method", "ood", "metric", "value", "note"]
    assert first[cols].equals(again[cols])  # same values and notes (Regret's s/image is stored with its scores)
    # other images are scored, not read
    with pytest.raises(AssertionError, match="re-scored"):
        run.score_baselines(cfg, dets, ID_TEST, {"other": image_set(noise_images(16, 9), "other")}, progress=False)


def test_a_family_section_does_not_key_another_familys_scores(cfg):
    base = run._family_config(run.baseline_config(cfg), "likelihood")
    changed = {**cfg, "baselines": {**cfg["baselines"], "classifier": {**cfg["baselines"]["classifier"], "epochs": 9}}}
    assert run._family_config(run.baseline_config(changed), "likelihood") == base
    assert run._family_config(run.baseline_config(changed), "classifier") != \
        run._family_config(run.baseline_config(cfg), "classifier")
    assert run._family_of("KNN (VGG16 features)") == "features" and run._family_of("MSP") == "classifier"


def test_unknown_family_and_unlabelled_classifier_are_one_line_errors(cfg):
    with pytest.raises(ValueError, match="unknown \\['bogus'\\]"):
        run.fit_baselines({**cfg, "baselines": {**cfg["baselines"], "families": ["bogus"]}}, TRAIN, progress=False)
    with pytest.raises(ValueError, match="has no labels"):
        run.fit_baselines({**cfg, "baselines": {**cfg["baselines"], "families": ["classifier"]}}, TRAIN,
                          progress=False)


def test_classifier_and_feature_families_give_rows_and_the_accuracy(cfg, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 96)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
    images = np.clip(colours[labels][:, None, None, :] + rng.integers(-20, 20, (96, 32, 32, 3)), 0, 255)
    images = images.astype(np.uint8)
    manifest = {"name": "toy", "split": "train", "resolution": 32, "sha256": "toy", "labels": "toy colours"}
    train = ImageSet(images[:64], labels[:64], manifest, "toy", "train")
    test = ImageSet(images[64:], labels[64:], {**manifest, "split": "test"}, "toy", "test")
    ood = {"noise": image_set(noise_images(32, 3, res=32), "noise")}
    c = {**cfg, "baselines": {**cfg["baselines"], "families": ["classifier", "features"],
                              "classifier": {**cfg["baselines"]["classifier"], "epochs": 12}}}
    dets = run.fit_baselines(c, train, progress=False)
    assert list(dets) == ["MSP", "MaxLogit", "KNN (AlexNet features)", "Mahalanobis (AlexNet features)",
                          "KNN (VGG16 features)", "Mahalanobis (VGG16 features)"]
    assert len(list((tmp_path / "baselines").glob("classifier_*/model.pt"))) == 1
    assert not list((tmp_path / "baselines").glob("classifier_*/train_state.pt"))  # resume point removed
    rows = run.score_baselines(c, dets, test, ood, progress=False)
    auroc = rows[rows["metric"] == "auroc"].set_index("method")["value"]
    assert auroc["KNN (VGG16 features)"] > 90 and auroc["Mahalanobis (AlexNet features)"] > 90  # noise is far
    notes = rows.drop_duplicates("method").set_index("method")["note"]
    assert notes["KNN (AlexNet features)"].startswith("beyond the paper") and "labels: toy colours" in notes["MSP"]
    acc = run.classifier_accuracy(dets, test)
    assert acc["n_classes"].iloc[0] == 3 and acc["test_accuracy_%"].iloc[0] > 90  # colour is the class


def refuse_training(monkeypatch):
    def refuse(*args, **kw):
        raise AssertionError("a model was trained")

    for name in ("train_vae", "train_glow"):
        monkeypatch.setattr(run, name, refuse)


def test_shipped_models_are_used_when_the_cache_is_empty(cfg, tmp_path, monkeypatch):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    models = run.models_of(dets)
    assert sorted(models) == ["glow", "vae_background", "vae_id", "vae_waic1"]
    assert set(run.model_sources(dets)["source"]) == {"trained by this run"}
    full = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in models.items()}
    before = {name: dets[name].score(OOD["noise"].images) for name in ("Likelihood", "Glow (diff to PNG)")}
    modes = {"vae_id": "int8", "vae_waic1": "int8", "vae_background": "fp16", "glow": "fp16"}
    for name, m in models.items():
        path = run.ship_model(m, "cifar10", modes[name], {"device_note": "cpu (test)"})
        assert path.name == f"cifar10_{name}_{m.cache_key[1]}.pt" and path.parent == tmp_path / "shipped" / "baselines"
        blob = safe_torch_load(path)  # tensors and plain data only
        assert blob["mode"] == modes[name] and blob["recipe_hash"] == m.cache_key[1]
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["bytes"] == path.stat().st_size and record["train_seconds"] >= 0 and record["id"] == "cifar10"
        stored = [e for e in blob["state"].values() if "raw" not in e]
        assert stored and all(("int8" in e) == (modes[name] == "int8") for e in stored)

    shutil.rmtree(tmp_path / "baselines")  # a fresh clone: no cache, only the shipped files
    refuse_training(monkeypatch)
    again = run.fit_baselines(cfg, TRAIN, progress=False)
    sources = run.model_sources(again).set_index("model")
    assert all(sources.loc[n, "source"] == f"shipped cifar10_{n}_{models[n].cache_key[1]}.pt" for n in models)
    assert sources["weights"].to_dict() == modes
    for name, m in run.models_of(again).items():
        for k, v in m.state_dict().items():  # the stored weights, within their storage's rounding
            ref = full[name][k]
            if not ref.is_floating_point():
                assert torch.equal(v, ref)
                continue
            torch.testing.assert_close(v, ref, atol=1e-2 * float(ref.abs().max()) + 1e-6, rtol=0)
    # the compact weights score a little differently: their scores are keyed apart from the float32 ones
    assert again["Likelihood"].score_key["weights"] == {"vae_id": "int8"}
    assert "weights" not in dets["Likelihood"].score_key
    for name, s in before.items():
        after = again[name].score(OOD["noise"].images)
        assert np.corrcoef(after, s)[0, 1] > 0.99


def test_a_shipped_model_of_another_recipe_is_reported_and_retrained(cfg, tmp_path, capsys):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    glow = run.models_of(dets)["glow"]
    shipped_file = run.ship_model(glow, "cifar10", "fp16", {})
    shutil.rmtree(tmp_path / "baselines")
    other = {**cfg, "baselines": {**cfg["baselines"], "glow": {**cfg["baselines"]["glow"], "hidden": 6}}}
    capsys.readouterr()
    again = run.fit_baselines(other, TRAIN, progress=False)
    out = capsys.readouterr().out
    assert f"glow: shipped {shipped_file.name} was made by another recipe; training it here" in out
    assert run.model_sources(again).set_index("model").loc["glow", "source"] == "trained by this run"
    assert shipped_file.exists()  # reported, not deleted: it is the committed artefact of the other recipe
