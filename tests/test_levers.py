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


def test_lever_scores_gives_every_lever_for_every_set():
    out = levers.lever_scores(FakeDetector(), {"id": _images([1, 2]), "ood": _images([200])}, _images([1, 5, 9]))
    assert set(out) == set(levers.LEVERS) and all(set(v) == {"id", "ood"} for v in out.values())


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


def test_a_trained_levers_row_label_says_what_it_is_and_that_it_is_beyond_the_paper():
    from srood_lib.config import load_config

    cfg = load_config("smoke", experiment="cifar10")
    label = levers.trained_lever_method(cfg, "wnorm", "SR-OOD_SR")
    assert label.startswith("SR-OOD_SR + W-norm") and label.endswith("(beyond the paper)")
    assert f"lambda_wnorm={cfg['trained_levers']['runs']['wnorm']['repair.train.lambda_wnorm']}" in label


def test_an_unknown_trained_lever_is_a_clear_error():
    from srood_lib.config import load_config

    with pytest.raises(KeyError, match="trained_levers.runs has wnorm, w_latent"):
        levers.trained_lever_config(load_config("smoke"), "wnrom")
