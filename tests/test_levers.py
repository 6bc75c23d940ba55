"""Levers beyond the paper: each is what its name says, computed from the detector's own scores."""
import numpy as np
import pytest

from srood_lib import levers


class FakeDetector:
    """Scores are a fixed function of (image mean, erosion, metric): enough to check the arithmetic."""
    config = {"candidate_erosions": ["a", "b", "c"]}

    def score(self, images, erosion=None, metric="lpips"):
        base = images.reshape(len(images), -1).mean(1) / 255.0
        shift = {"a": 0.0, "b": 1.0, "c": 5.0, None: 0.0}[erosion]
        return base * (2.0 if metric == "l2" else 1.0) + shift


def _images(values):
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values])


def test_median_over_erosions_is_the_middle_erosion_here():
    imgs = _images([0, 51, 255])
    assert np.allclose(levers.median_over_erosions(FakeDetector(), imgs), imgs[:, 0, 0, 0] / 255.0 + 1.0)


def test_zscore_is_zero_mean_on_the_validation_images_and_keeps_the_order():
    det, val = FakeDetector(), _images([10, 60, 110, 160])
    z = levers.ZScoredL2LPIPS(det, val)
    assert abs(z.score(val).mean()) < 1e-9
    far = z.score(_images([250]))[0]
    assert far > z.score(val).max()


class FakeScaledDetector(FakeDetector):
    """Validation ID images score 0 under every backbone; outliers score 1 under "vgg@x2" only (and vgg@x4 half
    of them), so the lever must choose vgg@x2; under the native backbone everything ties."""
    config = {**FakeDetector.config, "lpips_net": ["alex", "vgg"]}
    lpips_net = "vgg"

    def validation_sets(self, val_images, validation_ood=None):
        assert validation_ood == {"real": "images"}  # handed through to the protocol
        return val_images, {"noise": val_images + 100, "flip": val_images + 100}

    def score_nets(self, images, nets, metric=None, **kw):
        assert metric == "lpips"  # the lever compares LPIPS backbones, whatever the detector's own distance
        outlier = (images[:, 0, 0, 0] >= 100).astype(float)
        return {n: outlier * {"vgg@x2": 1.0, "vgg@x4": np.arange(len(images)) % 2}.get(n, 0.0) for n in nets}

    def score(self, images, erosion=None, metric="lpips", lpips_net=None):
        if lpips_net is not None:
            return self.score_nets(images, [lpips_net], metric=metric)[lpips_net] + 7.0
        return super().score(images, erosion, metric)


def test_the_rescaled_lever_takes_the_backbone_and_scale_that_validation_prefers():
    det, val = FakeScaledDetector(), _images([1, 5, 9, 13])
    lever = levers.RescaledLPIPS(det, val, {"real": "images"}, scales=[1, 2, 4])
    assert list(lever.selection["lpips_net"]) == ["alex", "vgg", "alex@x2", "vgg@x2", "alex@x4", "vgg@x4"]
    assert lever.lpips_net == "vgg@x2" and lever.selection.set_index("lpips_net")["chosen"].sum() == 1
    assert lever.selection.set_index("lpips_net").loc["vgg@x2", "mean"] == 100.0
    assert lever.note == "lever: lpips=vgg@x2, validation mean 100.00 (lpips=vgg: 50.00)"
    assert np.array_equal(lever.score(_images([3, 150])), [7.0, 8.0])  # the detector's score under the choice


def test_lever_scores_gives_every_lever_for_every_set():
    sets = {"id": _images([1, 2]), "ood": _images([200])}
    out = levers.lever_scores(FakeDetector(), sets, _images([1, 5, 9]))
    assert set(out) == set(levers.LEVERS) - {"rescaled_lpips"} and all(set(v) == {"id", "ood"} for v in out.values())
    out = levers.lever_scores(FakeScaledDetector(), sets, _images([1, 5, 9]), {"real": "images"}, lpips_scales=[1, 2])
    assert set(out) == set(levers.LEVERS) and np.array_equal(out["rescaled_lpips"]["ood"], [8.0])


# ------------------------------------------------------------------------------------ levers that retrain

def test_a_trained_lever_changes_only_its_own_networks_key():
    from srood_lib import pipeline
    from srood_lib.config import load_config

    cfg = load_config("smoke", experiment="cifar10")
    before = pipeline.detector_path(cfg, "sr", prior_key="p")
    lever = levers.trained_lever_config(cfg, "wnorm")
    assert lever["repair"]["train"]["lambda_wnorm"] > 0 and cfg["repair"]["train"]["lambda_wnorm"] == 0
    assert pipeline.detector_path(lever, "sr", prior_key="p") != before
    assert pipeline.detector_path(cfg, "sr", prior_key="p") == before          # the faithful network's key stays
    # test-time calibration is the faithful detector's, so the two are chosen by the same protocol
    assert pipeline.calibration_key(lever, "sr") == pipeline.calibration_key(cfg, "sr")


def test_the_w_latent_lever_trains_a_w_encoder_under_its_own_key():
    from srood_lib import pipeline
    from srood_lib.config import load_config

    cfg = load_config("smoke", experiment="cifar10")
    lever = levers.trained_lever_config(cfg, "w_latent")
    assert lever["repair"]["encoder"]["latent"] == "w" and cfg["repair"]["encoder"]["latent"] == "wplus"
    assert pipeline.detector_path(lever, "sr", prior_key="p") != pipeline.detector_path(cfg, "sr", prior_key="p")
    assert "encoder into W" in levers.trained_lever_method(cfg, "w_latent", "SR-OOD_SR")


def test_the_zplus_lever_trains_a_zplus_encoder_under_its_own_key():
    from srood_lib import pipeline
    from srood_lib.config import load_config

    cfg = load_config("smoke", experiment="cifar10")
    lever = levers.trained_lever_config(cfg, "zplus")
    assert lever["repair"]["encoder"]["latent"] == "zplus" and cfg["repair"]["encoder"]["latent"] == "wplus"
    keys = {pipeline.detector_path(c, "sr", prior_key="p") for c in (cfg, lever, levers.trained_lever_config(cfg, "w_latent"))}
    assert len(keys) == 3                                                 # three latent spaces, three networks
    assert "encoder into Z+" in levers.trained_lever_method(cfg, "zplus", "SR-OOD_SR")


def test_a_trained_levers_row_label_says_what_it_is_and_that_it_is_beyond_the_paper():
    from srood_lib.config import load_config

    cfg = load_config("smoke", experiment="cifar10")
    label = levers.trained_lever_method(cfg, "wnorm", "SR-OOD_SR")
    assert label.startswith("SR-OOD_SR + W-norm") and label.endswith("(beyond the paper)")
    assert f"lambda_wnorm={cfg['trained_levers']['runs']['wnorm']['repair.train.lambda_wnorm']}" in label


def test_an_unknown_trained_lever_is_a_clear_error():
    from srood_lib.config import load_config

    with pytest.raises(KeyError, match="trained_levers.runs has wnorm, w_latent, zplus"):
        levers.trained_lever_config(load_config("smoke"), "wnrom")
