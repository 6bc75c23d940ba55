"""The SROOD detector: T* selection, threshold, score direction, save/load, style mixing."""
import numpy as np
import pytest
import torch

from srood_lib.detector import SROOD, mixing_sweep, split_validation
from srood_lib.models.stylegan2 import Generator

from test_train_repair import CH, ENCODER, train_cfg


def config(**kw):
    cfg = {"variant": "sr", "seed": 0, "device": "cpu", "encoder": ENCODER, "train": train_cfg(kimg=0.128, lr=3e-3),
           "train_erosions": ["bicubic_x2", "bicubic_x4"], "candidate_erosions": ["bicubic_x2", "bicubic_x4"],
           "mix_from_layer": [None, 4], "distance": "lpips", "lpips_net": ["alex", "vgg"], "id_acceptance": 0.95,
           "n_val": 16, "synthetic_outliers": ["patch_shuffle", "invert", "noise"], "selection_images": 16,
           "min_specificity": 0.0, "batch_size": 16}
    cfg.update(kw)
    return cfg


def smooth_images(n, seed):
    """Smooth colour gradients: an ID set that a tiny model can learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    out = []
    for _ in range(n):
        a, b, c = rng.random(3)
        out.append(np.stack([a * x, b * y, c * (1 - x)], -1))
    return (np.stack(out) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    det = SROOD(config(), G)
    far = np.random.default_rng(9).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    det.fit(smooth_images(64, 0), tmp_path_factory.mktemp("det"), progress=False, validation_ood={"far": far})
    return det


def test_split_validation_is_disjoint_and_seeded():
    imgs = np.arange(20)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    train, val = split_validation(imgs, 5, seed=1)
    assert len(train) == 15 and len(val) == 5
    assert not set(train[:, 0, 0, 0]) & set(val[:, 0, 0, 0])
    assert np.array_equal(val, split_validation(imgs, 5, seed=1)[1])
    with pytest.raises(ValueError, match="n_val"):
        split_validation(imgs, 20, seed=0)


def test_fit_chooses_among_every_candidate_setting_and_sets_a_threshold(fitted):
    sel = fitted.selection
    assert len(sel) == 2 * 2 * 2  # erosions x mixing layers x backbones
    assert set(sel["lpips_net"]) == {"alex", "vgg"} and set(sel["mix_from_layer"]) == {"none", 4}
    chosen = sel[sel["chosen"]]
    assert len(chosen) == 1 and chosen["mean"].iloc[0] == sel[sel["passes_gate"]]["mean"].max()
    assert (fitted.erosion_name, fitted.lpips_net) == (chosen["erosion"].iloc[0], chosen["lpips_net"].iloc[0])
    assert "real:far" in sel and fitted.passes_health
    val_scores = fitted.score(split_validation(smooth_images(64, 0), 16, 0)[1])
    assert np.mean(val_scores <= fitted.threshold) >= 0.95


def test_no_setting_passing_the_gate_is_said(fitted):
    det = SROOD(config(min_specificity=2.0), fitted.generator)
    det.net = fitted.net
    det.select_settings(smooth_images(16, 7))
    assert det.passes_health is False and det.selection["chosen"].sum() == 1
    assert det.selection.loc[det.selection["chosen"], "specificity"].iloc[0] == det.selection["specificity"].max()


def test_scores_are_deterministic_and_noise_scores_higher(fitted):
    id_imgs = smooth_images(16, 1)
    noise = np.random.default_rng(2).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    s1, s2 = fitted.score(id_imgs), fitted.score(id_imgs)
    assert np.array_equal(s1, s2) and s1.shape == (16,)
    assert fitted.score(noise).mean() > s1.mean()
    assert fitted.predict(noise).mean() > fitted.predict(id_imgs).mean()


def test_style_mixing_changes_the_repair(fitted):
    imgs = smooth_images(4, 3)
    assert not np.allclose(fitted.score(imgs, mix_from_layer=None), fitted.score(imgs, mix_from_layer=2))
    sweep = mixing_sweep(fitted, imgs, {"noise": imgs[::-1]}, [None, 2])
    assert list(sweep["mix_from_layer"]) == ["none", 2]


def test_save_load_round_trip_keeps_scores(fitted, tmp_path):
    path = fitted.save(tmp_path / "d.pt")
    loaded = SROOD.load(path)
    imgs = smooth_images(8, 4)
    assert loaded.erosion_name == fitted.erosion_name and loaded.threshold == fitted.threshold
    assert (loaded.mix_from_layer, loaded.lpips_net, loaded.passes_health) == (
        fitted.mix_from_layer, fitted.lpips_net, fitted.passes_health)
    assert np.allclose(loaded.score(imgs), fitted.score(imgs))
    with pytest.raises(FileNotFoundError, match="no detector"):
        SROOD.load(tmp_path / "missing.pt")


def test_unfitted_detector_says_what_to_do():
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    with pytest.raises(RuntimeError, match="fit"):
        SROOD(config(), G).score(smooth_images(2, 0))


def test_cli_score_and_evaluate_on_image_folders(fitted, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from srood_lib.__main__ import main

    monkeypatch.setenv("SROOD_CACHE_DIR", str(tmp_path / "cache"))
    for name, imgs in {"id": smooth_images(6, 5), "noise": np.random.default_rng(0).integers(
            0, 256, (6, 32, 32, 3), dtype=np.uint8)}.items():
        (tmp_path / name).mkdir()
        for i, img in enumerate(imgs):
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    ckpt = fitted.save(tmp_path / "d.pt")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(tmp_path / "id"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    import pandas as pd
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == 6 and np.allclose(scores["score"], fitted.score(smooth_images(6, 5)), atol=1e-6)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--id", str(tmp_path / "id"), "--ood",
                 str(tmp_path / "noise"), "--n-boot", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ood,n_id,n_ood,auroc") and lines[1].split(",")[1:3] == ["6", "6"]
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(tmp_path / "nowhere")]) == 2
    # a checkpoint that is not a detector (here: an image) and one that is missing: one line each, exit 2
    capsys.readouterr()
    for bad in (tmp_path / "id" / "0.png", tmp_path / "missing.pt"):
        assert main(["score", "--checkpoint", str(bad), "--images", str(tmp_path / "id")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and str(bad) in err
