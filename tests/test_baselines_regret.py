"""Likelihood Regret: the batched (grouped-conv) optimisation equals the per-image loop, known answers, direction."""
import numpy as np
import pytest
import torch

from srood_lib.baselines.likelihood import VAELikelihood
from srood_lib.baselines.regret import LikelihoodRegret, optimise_posteriors_batched, optimise_posteriors_loop
from srood_lib.runtime import uint8_to_tensor

from test_baselines_vae import baselines_cfg, noise_images, smooth_images

ID_TEST, NOISE = smooth_images(8, 7), noise_images(8, 7)


def regret_cfg(**kw):
    cfg = baselines_cfg()
    cfg["regret"].update(kw)
    return cfg


@pytest.fixture(scope="module")
def likelihood():
    return VAELikelihood(baselines_cfg()).fit(smooth_images(80, 0), progress=False)


@pytest.fixture(scope="module")
def regret(likelihood):
    return LikelihoodRegret(regret_cfg(), likelihood.vaes["id"])


def test_batched_optimisation_equals_the_per_image_loop(likelihood):
    vae = likelihood.vaes["id"]
    x = uint8_to_tensor(np.concatenate([ID_TEST[:2], NOISE[:2]]))
    eps = torch.randn(4, 5, vae.z_dim, generator=torch.Generator().manual_seed(0))
    rcfg = regret_cfg(n_steps=5)["regret"]
    mu_b, lv_b = optimise_posteriors_batched(vae, x, eps, rcfg)
    mu_l, lv_l = optimise_posteriors_loop(vae, x, eps, rcfg)
    mu0, _ = vae.encode(x)
    assert (mu_l - mu0).abs().max() > 1e-3  # the optimisation moved the posterior
    torch.testing.assert_close(mu_b, mu_l, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lv_b, lv_l, rtol=1e-4, atol=1e-4)
    loop = LikelihoodRegret(regret_cfg(batch_images=1), vae).score(NOISE[:3])
    batched = LikelihoodRegret(regret_cfg(batch_images=3), vae).score(NOISE[:3])
    np.testing.assert_allclose(batched, loop, rtol=1e-3, atol=1e-2)


def test_zero_steps_give_zero_regret_and_nll_before_is_the_likelihood_nll(likelihood):
    det = LikelihoodRegret(regret_cfg(n_steps=0), likelihood.vaes["id"])
    terms = det.regret_terms(NOISE[:4])
    np.testing.assert_array_equal(terms["regret"], 0.0)
    nll = likelihood.statistics(NOISE[:4])["nll"]  # the same IWAE noise stream and K
    np.testing.assert_allclose(terms["nll_before"], nll, rtol=1e-6)


def test_regret_is_positive_higher_for_noise_deterministic_and_timed(regret):
    s_id, s_noise = regret.score(ID_TEST), regret.score(NOISE)
    assert s_id.shape == (8,) and s_id.dtype == np.float64
    assert regret.seconds_per_image > 0
    assert np.mean(s_noise) > np.mean(s_id)
    assert np.mean(s_noise) > 0  # optimising the encoder for one image lowers its NLL
    np.testing.assert_array_equal(regret.score(NOISE), s_noise)


def test_save_load_round_trip(regret, tmp_path):
    again = LikelihoodRegret.load(regret.save(tmp_path / "regret.pt"))
    np.testing.assert_array_equal(again.score(NOISE[:2]), regret.score(NOISE[:2]))


def test_missing_regret_keys_are_named():
    cfg = regret_cfg()
    del cfg["regret"]["n_steps"]
    with pytest.raises(KeyError, match="n_steps"):
        LikelihoodRegret(cfg)
