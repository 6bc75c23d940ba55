"""The baselines' pipeline glue: fit (and cache) all nine detectors, score them into Table I rows, sanity views."""
import numpy as np
import pytest

from srood_lib.baselines import run
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
    cfg = load_config("smoke", {"device": "cpu", "eval.n_boot": 10})
    return cfg


TRAIN = image_set(smooth_images(96, 0), "cifar10")
ID_TEST = image_set(smooth_images(16, 3), "cifar10")
OOD = {"noise": image_set(noise_images(16, 3), "noise"), "dark": image_set(smooth_images(16, 4) // 4, "dark")}


def test_every_profile_has_the_same_baseline_keys():
    keys = [keys_of(load_config(p)["baselines"]) for p in ("smoke", "quick", "paper")]
    assert keys[0] == keys[1] == keys[2]


def test_fit_caches_models_and_a_rerun_loads_them(cfg, tmp_path, monkeypatch):
    dets = run.fit_baselines(cfg, TRAIN, progress=False)
    assert list(dets) == run.METHODS
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
    assert set(rows["method"]) == set(run.METHODS) and set(rows["table"]) == {"I"}
    assert set(rows["ood"]) == {"noise", "dark"}
    auroc = rows[rows["metric"] == "auroc"]
    assert auroc["value"].notna().all() and len(auroc) == 2 * len(run.METHODS)
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
