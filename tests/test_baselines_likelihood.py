"""VAE likelihood baselines: Likelihood, Typicality Test, WAIC, Likelihood Ratio, DoSE (KDE and SVM)."""
import numpy as np
import pytest
import torch

from srood_lib.baselines.common import split_holdout
from srood_lib.baselines.likelihood import (WAIC, DoSE_KDE, DoSE_SVM, LikelihoodRatio, TypicalityTest, VAELikelihood,
                                            gaussian_cross_entropy, moment_matched_gaussian, vae_statistics)
from srood_lib.baselines.vae import bits_per_dim, weights_fingerprint

from test_baselines_vae import DIMS, baselines_cfg, noise_images, smooth_images

TRAIN = smooth_images(80, 0)
ID_TEST, NOISE = smooth_images(16, 7), noise_images(16, 7)


@pytest.fixture(scope="module")
def likelihood():
    return VAELikelihood(baselines_cfg()).fit(TRAIN, progress=False)


@pytest.fixture(scope="module")
def shared_vae(likelihood):
    return likelihood.vaes["id"]


def test_likelihood_scores_are_nll_bits_per_dim_and_noise_scores_higher(likelihood):
    s_id, s_noise = likelihood.score(ID_TEST), likelihood.score(NOISE)
    assert s_id.shape == (16,) and s_id.dtype == np.float64
    stats = vae_statistics(likelihood.vaes["id"], ID_TEST, k=4, seed=0, batch=32)
    np.testing.assert_allclose(s_id, bits_per_dim(stats["nll"], DIMS))
    assert s_noise.min() > s_id.max()


def test_statistics_do_not_depend_on_the_batch_size(shared_vae):
    a = vae_statistics(shared_vae, ID_TEST, k=3, seed=5, batch=5)
    b = vae_statistics(shared_vae, ID_TEST, k=3, seed=5, batch=16)
    np.testing.assert_allclose(a["nll"], b["nll"], rtol=1e-5)
    np.testing.assert_allclose(a["rate"], b["rate"], rtol=1e-5)


def test_the_vae_trains_on_the_non_held_out_part(likelihood):
    from srood_lib.baselines.vae import train_vae

    train, _ = split_holdout(TRAIN, 16, 0)
    direct = train_vae(train, baselines_cfg()["vae"], 0, torch.device("cpu"), progress=False)
    assert weights_fingerprint(direct) == weights_fingerprint(likelihood.vaes["id"])


def test_save_load_round_trip(likelihood, tmp_path):
    path = likelihood.save(tmp_path / "lik.pt")
    again = VAELikelihood.load(path)
    np.testing.assert_array_equal(again.score(NOISE), likelihood.score(NOISE))
    with pytest.raises(ValueError, match="VAELikelihood"):
        TypicalityTest.load(path)


def test_typicality_test_is_distance_to_the_held_out_mean(shared_vae, tmp_path):
    tt = TypicalityTest(baselines_cfg(), shared_vae).fit(TRAIN, progress=False)
    _, holdout = split_holdout(TRAIN, 16, 0)
    nll = lambda imgs: bits_per_dim(vae_statistics(shared_vae, imgs, 4, 0, 32)["nll"], DIMS)  # noqa: E731
    assert tt.holdout_mean == pytest.approx(float(np.mean(nll(holdout))))
    np.testing.assert_allclose(tt.score(ID_TEST), np.abs(nll(ID_TEST) - tt.holdout_mean))
    assert tt.score(NOISE).mean() > tt.score(ID_TEST).mean()
    again = TypicalityTest.load(tt.save(tmp_path / "tt.pt"))
    np.testing.assert_array_equal(again.score(ID_TEST), tt.score(ID_TEST))


def test_waic_trains_the_missing_members_with_other_seeds(shared_vae, tmp_path):
    waic = WAIC(baselines_cfg(), [shared_vae]).fit(TRAIN, progress=False)
    assert list(waic.vaes) == ["member0", "member1"]
    assert waic.vaes["member0"] is shared_vae
    assert weights_fingerprint(waic.vaes["member1"]) != weights_fingerprint(shared_vae)
    log_p = waic.member_log_px(NOISE)
    assert log_p.shape == (2, 16)
    s = waic.score(NOISE)
    np.testing.assert_allclose(s, -(log_p.mean(0) - log_p.var(0)))
    assert s.min() > waic.score(ID_TEST).max()
    np.testing.assert_array_equal(WAIC.load(waic.save(tmp_path / "w.pt")).score(NOISE), s)


def test_likelihood_ratio_against_a_background_model(shared_vae, tmp_path):
    lr = LikelihoodRatio(baselines_cfg(), shared_vae).fit(TRAIN, progress=False)
    bg = lr.vaes["background"]
    assert weights_fingerprint(bg) != weights_fingerprint(shared_vae)
    nll = lambda vae, imgs: vae_statistics(vae, imgs, 4, 0, 32)["nll"]  # noqa: E731
    np.testing.assert_allclose(lr.score(ID_TEST), nll(shared_vae, ID_TEST) - nll(bg, ID_TEST))
    # the background model saw noisy inputs, so noise costs it less than it costs the ID model
    assert nll(bg, NOISE).mean() < nll(shared_vae, NOISE).mean()
    np.testing.assert_array_equal(LikelihoodRatio.load(lr.save(tmp_path / "lr.pt")).score(NOISE), lr.score(NOISE))


def test_cross_entropy_to_a_gaussian_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(2, 3)), rng.normal(scale=0.3, size=(2, 3))
    mean, cov = moment_matched_gaussian(rng.normal(size=(50, 3)), rng.normal(scale=0.3, size=(50, 3)))
    inv, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]
    for i in range(2):
        z = mu[i] + np.exp(0.5 * logvar[i]) * rng.normal(size=(200_000, 3))
        d = z - mean
        log_r = -0.5 * (3 * np.log(2 * np.pi) + logdet + np.einsum("ni,ij,nj->n", d, inv, d))
        assert gaussian_cross_entropy(mu[i:i + 1], logvar[i:i + 1], mean, cov)[0] == pytest.approx(-log_r.mean(),
                                                                                                   abs=0.02)


def test_moment_matched_gaussian_has_the_mixtures_moments():
    rng = np.random.default_rng(1)
    mu, logvar = rng.normal(size=(4, 2)), rng.normal(scale=0.5, size=(4, 2))
    comp = rng.integers(0, 4, 400_000)
    z = mu[comp] + np.exp(0.5 * logvar[comp]) * rng.normal(size=(400_000, 2))
    mean, cov = moment_matched_gaussian(mu, logvar)
    np.testing.assert_allclose(mean, z.mean(0), atol=0.01)
    np.testing.assert_allclose(cov, np.cov(z, rowvar=False), atol=0.02)


@pytest.mark.parametrize("cls", [DoSE_KDE, DoSE_SVM])
def test_dose_fits_on_held_out_statistics_and_flags_noise(cls, shared_vae, tmp_path):
    det = cls(baselines_cfg(), shared_vae).fit(TRAIN, progress=False)
    assert det.holdout_features.shape == (16, 5)
    assert np.isfinite(det.features(NOISE)).all()
    s_id, s_noise = det.score(ID_TEST), det.score(NOISE)
    assert s_id.shape == (16,) and s_id.dtype == np.float64
    assert np.isfinite(s_noise).all()  # far-away statistics get large, finite -log densities
    assert s_noise.min() > s_id.max()
    np.testing.assert_allclose(cls.load(det.save(tmp_path / "d.pt")).score(NOISE), s_noise)


def test_unfitted_detectors_say_what_to_do():
    with pytest.raises(RuntimeError, match="fit"):
        VAELikelihood(baselines_cfg()).score(ID_TEST)
    cfg = baselines_cfg()
    del cfg["iwae_k"]
    with pytest.raises(KeyError, match="iwae_k"):
        VAELikelihood(cfg)
