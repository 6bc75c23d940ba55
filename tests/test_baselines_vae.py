"""The DCGAN VAE of the likelihood baselines: shapes, known answers for both decoders, IWAE, training, determinism."""
import math

import numpy as np
import pytest
import torch

from srood_lib.baselines.vae import (VAE, bits_per_dim, build_vae, elbo_terms, gaussian_kl, iwae_nll, iwae_samples,
                                     log_normal, logistic_mixture_log_prob, perturb, sample_images, train_vae,
                                     weights_fingerprint)
from srood_lib.runtime import uint8_to_tensor

RES = 16  # the trained models in these tests are 16 px (4x cheaper); the 32 px architecture is checked too
DIMS = RES * RES * 3


def vae_cfg(**kw):
    cfg = {"z_dim": 8, "width": 4, "decoder": "categorical", "batch_size": 32, "epochs": 12, "lr": 0.01, "adam_betas": [0.9, 0.999],
           "weight_decay": 0.0}
    cfg.update(kw)
    return cfg


def baselines_cfg(**kw):
    """A complete tiny ``baselines`` config (plus seed and device), shared by the baseline test files."""
    cfg = {"seed": 0, "device": "cpu", "n_holdout": 16, "score_batch": 32, "iwae_k": 4, "vae": vae_cfg(),
           "waic": {"n_models": 2}, "likelihood_ratio": {"mutation_rate": 0.2},
           "dose": {"kde_bandwidth": "scott", "svm_nu": 0.5, "svm_gamma": "scale"},
           "regret": {"n_images": 4, "n_steps": 10, "lr": 0.002, "adam_betas": [0.9, 0.999],
                      "weight_decay": 0.00005, "iwae_k": 4, "batch_images": 1},
           "glow": {"levels": 2, "steps": 2, "hidden": 16, "batch_size": 32, "epochs": 12, "lr": 0.01,
                    "adam_betas": [0.9, 0.999], "warmup_steps": 5, "grad_clip": 50.0, "sample_temperature": 0.7}}
    cfg.update(kw)
    return cfg


def smooth_images(n, seed, res=RES):
    """Smooth colour gradients with little variety: an ID set a tiny model learns in a few steps."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:res, 0:res] / (res - 1)
    out = [np.stack([a * x, b * y, c * (1 - x)], -1) * 0.5 + 0.25 for a, b, c in rng.random((n, 3))]
    return (np.stack(out) * 255).astype(np.uint8)


def noise_images(n, seed, res=RES):
    return np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8)


MIXTURE = {"decoder": "logistic_mixture", "mixture_components": 3}


def tiny_vae(res=RES, **kw):
    return VAE(res, z_dim=8, width=4, decoder=kw.get("decoder", "categorical"),
               mixture_components=kw.get("mixture_components", 0))


@pytest.fixture(scope="module")
def trained():
    return train_vae(smooth_images(64, 0), vae_cfg(), seed=0, device=torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def trained_mixture():
    return train_vae(smooth_images(64, 0), vae_cfg(**MIXTURE), seed=0, device=torch.device("cpu"), progress=False)


@pytest.mark.parametrize("res", [16, 32])
@pytest.mark.parametrize("decoder, per_subpixel", [({}, 256), (MIXTURE, 9)])
def test_shapes(res, decoder, per_subpixel):
    vae = tiny_vae(res, **decoder).eval()
    assert len(vae.encoder) == 3 * (int(math.log2(res)) - 2)  # halves down to 4x4
    x = uint8_to_tensor(noise_images(3, 0, res))
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 8)
    assert vae.decode(mu).shape == (3, 3, res, res, per_subpixel)
    assert vae.value_log_probs(vae.decode(mu[:1])).shape == (1, 3, res, res, 256)
    terms = elbo_terms(vae, x)
    assert terms["rate"].shape == terms["distortion"].shape == (3,)
    with pytest.raises(ValueError, match="power of two"):
        VAE(24, 8, 4, "categorical", 0)


def test_bad_decoder_settings_name_the_key():
    with pytest.raises(ValueError, match="baselines.vae.decoder"):
        VAE(16, 8, 4, "gaussian", 0)
    with pytest.raises(ValueError, match="mixture_components"):
        VAE(16, 8, 4, "logistic_mixture", 0)
    cfg = vae_cfg(decoder="logistic_mixture")  # no mixture_components
    with pytest.raises(KeyError, match="mixture_components"):
        build_vae(cfg, 16)


def random_mixture_params(shape, m, seed):
    """Mixture parameters spanning the hard cases: means beyond [-1, 1], scales from the floor to very wide."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, m, generator=g) * 2
    means = torch.rand(*shape, m, generator=g) * 2.4 - 1.2
    log_scales = torch.rand(*shape, m, generator=g) * 9 - 8  # -8 (clamped to the floor) .. 1
    return torch.cat([logits, means, log_scales], -1)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 5e-5)])
def test_mixture_probabilities_over_the_256_values_sum_to_one(dtype, atol):
    params = random_mixture_params((500,), 4, seed=0).to(dtype)
    values = torch.arange(256).expand(500, 256)
    log_p = logistic_mixture_log_prob(params[:, None].expand(500, 256, 12), values)
    assert torch.isfinite(log_p).all()
    np.testing.assert_allclose(torch.logsumexp(log_p, 1).numpy(), 0.0, atol=atol)


def test_mixture_log_prob_matches_cdf_differences_in_float64():
    """The known answer: P(v) = sum_k pi_k [F_k(c + 1/255) - F_k(c - 1/255)], with F = 0 / 1 beyond the end bins."""
    m = 3
    params = random_mixture_params((2000,), m, seed=1)
    values = torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(2))
    values[:50], values[50:100] = 0, 255  # the open end bins
    p64 = params.double()
    pi = torch.softmax(p64[:, :m], -1)
    means, scales = p64[:, m:2 * m], torch.exp(p64[:, 2 * m:].clamp_min(-7.0))
    c = (values.double() * 2 / 255 - 1)[:, None]
    cdf = lambda t: torch.sigmoid((t - means) / scales)  # noqa: E731
    upper = torch.where(values[:, None] == 255, torch.ones_like(means), cdf(c + 1 / 255))
    lower = torch.where(values[:, None] == 0, torch.zeros_like(means), cdf(c - 1 / 255))
    expected = torch.log((pi * (upper - lower)).sum(1))
    got = logistic_mixture_log_prob(params, values).double()
    ok = expected > -30  # float64 differences of two sigmoids lose everything below ~1e-13 anyway
    assert ok.float().mean() > 0.9
    np.testing.assert_allclose(got[ok].numpy(), expected[ok].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("decoder", [{}, MIXTURE])
def test_log_px_is_the_sum_of_the_true_values_log_probs(decoder):
    torch.manual_seed(0)
    vae = tiny_vae(**decoder).eval().requires_grad_(False)
    x = uint8_to_tensor(noise_images(2, 3))
    out = vae.decode(torch.randn(2, 8))
    table = vae.value_log_probs(out)
    np.testing.assert_allclose(torch.logsumexp(table, -1).numpy(), 0.0, atol=1e-5)
    gathered = table.gather(-1, x.long()[..., None]).flatten(1).sum(1)
    np.testing.assert_allclose(vae.log_px(out, x).numpy(), gathered.numpy(), rtol=1e-5)


def test_equal_logits_give_exactly_8_bits_per_dim():
    """A decoder whose 256 logits are all equal is uniform over 0..255: -log p(x|z) = D log 256 = 8 bits/dim.
    With a posterior equal to the prior (mu = 0, logvar = 0) the IWAE weights are that constant too."""
    vae = tiny_vae(32).eval()
    with torch.no_grad():
        vae.decoder[-1].weight.zero_()
        for layer in (vae.to_mu, vae.to_logvar):
            layer.weight.zero_()
            layer.bias.zero_()
    x = uint8_to_tensor(noise_images(4, 1, res=32))
    with torch.no_grad():
        terms = elbo_terms(vae, x, torch.Generator().manual_seed(0))
    dims = 32 * 32 * 3
    np.testing.assert_allclose(bits_per_dim(terms["distortion"], dims).numpy(), 8.0, rtol=1e-6)
    np.testing.assert_allclose(terms["rate"].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(bits_per_dim(iwae_nll(vae, x, k=5), dims).numpy(), 8.0, rtol=1e-6)


def test_iwae_weights_match_their_definition_and_bound_the_elbo():
    torch.manual_seed(0)
    vae = tiny_vae().eval().requires_grad_(False)
    x = uint8_to_tensor(noise_images(2, 2))
    eps = torch.randn(2, 3, 8)
    out = iwae_samples(vae, x, 3, eps=eps)
    mu, logvar = vae.encode(x)
    for i in range(2):
        for k in range(3):
            z = mu[i] + torch.exp(0.5 * logvar[i]) * eps[i, k]
            logits = vae.decode(z[None])[0]  # (3, H, W, 256)
            log_px = torch.log_softmax(logits, -1).gather(-1, x[i].long()[..., None]).sum()
            log_pz = -0.5 * (math.log(2 * math.pi) + z.square()).sum()
            log_qz = log_normal(z, mu[i], logvar[i])
            assert float(out["log_w"][i, k]) == pytest.approx(float(log_px + log_pz - log_qz), rel=1e-5)
    nll = -(torch.logsumexp(out["log_w"], 1) - math.log(3))
    assert torch.all(nll <= -out["log_w"].mean(1) + 1e-4)  # Jensen: the K-sample bound is at least the ELBO's


def test_analytic_kl_matches_monte_carlo():
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, -0.7, 0.1]])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0))
    mc = (log_normal(z, mu, logvar) + 0.5 * (math.log(2 * math.pi) + z.square()).sum(1)).mean()
    assert float(gaussian_kl(mu, logvar)) == pytest.approx(float(mc), abs=0.02)


@pytest.mark.parametrize("model", ["trained", "trained_mixture"])
def test_training_lowers_nll_and_noise_scores_higher(model, request):
    trained = request.getfixturevalue(model)
    fresh = VAE(**trained.init_kwargs).eval()
    smooth = uint8_to_tensor(smooth_images(16, 5))
    noise = uint8_to_tensor(noise_images(16, 5))
    before = bits_per_dim(iwae_nll(fresh, smooth, k=4), DIMS)
    after = bits_per_dim(iwae_nll(trained, smooth, k=4), DIMS)
    assert after.mean() < before.mean() - 1.0
    assert iwae_nll(trained, noise, k=4).min() > iwae_nll(trained, smooth, k=4).max()


def test_training_is_deterministic_under_a_seed(trained):
    cfg = vae_cfg()
    again = train_vae(smooth_images(64, 0), cfg, seed=0, device=torch.device("cpu"), progress=False)
    other = train_vae(smooth_images(64, 0), cfg, seed=1, device=torch.device("cpu"), progress=False)
    assert weights_fingerprint(again) == weights_fingerprint(trained)
    assert weights_fingerprint(other) != weights_fingerprint(trained)


def test_missing_config_key_is_named():
    cfg = vae_cfg()
    del cfg["lr"]
    with pytest.raises(KeyError, match="lr"):
        train_vae(smooth_images(8, 0), cfg, seed=0, device=torch.device("cpu"), progress=False)


def test_perturb_replaces_the_stated_share_of_subpixels():
    x = uint8_to_tensor(smooth_images(8, 0))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(perturb(x, 0.0, gen()), x)
    changed = (perturb(x, 0.2, gen()) != x).float().mean().item()
    assert changed == pytest.approx(0.2 * 255 / 256, abs=0.01)  # a replacement equal to the old value is no change
    assert torch.equal(perturb(x, 0.2, gen()), perturb(x, 0.2, gen()))


@pytest.mark.parametrize("model", ["trained", "trained_mixture"])
def test_samples_are_uint8_images_and_seeded(model, request):
    trained = request.getfixturevalue(model)
    a, b = sample_images(trained, 3, seed=4), sample_images(trained, 3, seed=4)
    assert a.shape == (3, RES, RES, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    mode = sample_images(trained, 3, seed=4, mode=True)
    roughness = lambda im: np.abs(np.diff(im.astype(float), axis=2)).mean()  # noqa: E731
    assert roughness(mode) < roughness(a)  # the mode is smoother than independent per-sub-pixel draws
