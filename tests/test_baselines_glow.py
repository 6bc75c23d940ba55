"""Glow: invertibility, log-determinant against a brute-force Jacobian, training, the two Table I scores."""
import numpy as np
import pytest
import torch

from srood_lib.baselines.glow import Glow, GlowNLL, InvConv1x1, dequantise, squeeze, unsqueeze
from srood_lib.compression import png_bits_per_dim

from test_baselines_vae import baselines_cfg, noise_images, smooth_images

ID_TEST, NOISE = smooth_images(16, 7), noise_images(16, 7)


def random_flow(res=8, levels=2, steps=2, hidden=8) -> Glow:
    """A flow with actnorm initialised from data and every weight perturbed (zero convs would make it trivial)."""
    torch.manual_seed(0)
    flow = Glow(res, levels, steps, hidden)
    flow(torch.rand(4, 3, res, res) - 0.5)  # data-dependent actnorm init
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return flow.eval()


@pytest.fixture(scope="module")
def glow():
    return GlowNLL(baselines_cfg(), "none").fit(smooth_images(80, 0), progress=False)


def test_squeeze_is_inverted_by_unsqueeze():
    x = torch.randn(2, 3, 8, 8)
    assert squeeze(x).shape == (2, 12, 4, 4)
    assert torch.equal(unsqueeze(squeeze(x)), x)


def test_inverse_of_forward_is_identity():
    flow = random_flow()
    x = torch.rand(3, 3, 8, 8) - 0.5
    zs, _, _ = flow(x)
    assert sum(z[0].numel() for z in zs) == 3 * 8 * 8
    torch.testing.assert_close(flow.reverse(zs), x, rtol=1e-4, atol=1e-5)


def test_logdet_matches_a_brute_force_jacobian():
    flow = random_flow(res=4, levels=2, steps=2, hidden=4)
    x = torch.rand(1, 3, 4, 4) - 0.5
    with torch.no_grad():
        _, logdet, _ = flow(x)
    latents = lambda v: torch.cat([z.flatten() for z in flow(v.view(1, 3, 4, 4))[0]])  # noqa: E731
    jac = torch.autograd.functional.jacobian(latents, x.flatten())
    assert jac.shape == (48, 48)
    assert float(logdet[0]) == pytest.approx(float(torch.linalg.slogdet(jac.double())[1]), rel=1e-4, abs=1e-3)


def test_invconv_logdet_is_the_weights_log_abs_det():
    conv = InvConv1x1(6)
    with torch.no_grad():
        conv.lower.add_(torch.randn(6, 6) * 0.1)
        conv.log_s.add_(torch.randn(6) * 0.1)
    conv.requires_grad_(False)
    _, logdet = conv(torch.randn(1, 6, 3, 5))
    assert float(logdet) == pytest.approx(15 * float(torch.linalg.slogdet(conv.weight())[1]), rel=1e-5)
    x = torch.randn(2, 6, 3, 5)
    torch.testing.assert_close(conv.reverse(conv(x)[0]), x, rtol=1e-4, atol=1e-5)


def test_dequantisation_stays_inside_each_values_bin():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    for u in (torch.zeros(x.shape), torch.full(x.shape, 0.999), torch.rand(x.shape)):
        y = dequantise(x, u)
        assert float(y.min()) >= -0.5 and float(y.max()) < 0.5
        assert torch.equal(torch.floor((y + 0.5) * 256).to(torch.uint8), x)


def test_nll_of_uniform_noise_is_just_above_8_bits_per_dim():
    """A units check with a known answer: uniform 8-bit noise has entropy exactly 8 bits/dim, so any model's NLL
    is >= 8; a flow with actnorm fitted to the data is about a Gaussian of the right variance, whose excess over
    the uniform is 0.5 log2(2 pi e / 12) = 0.25 bits/dim. (Nats, or a missing log 256 term, would be far off.)"""
    cfg = baselines_cfg()
    cfg["glow"].update(levels=1, steps=1, hidden=4, epochs=2)
    flow = GlowNLL(cfg, "none").fit(noise_images(96, 3, res=8), progress=False)
    bpd = flow.score(noise_images(64, 4, res=8)).mean()
    assert 8.0 < bpd < 8.5


def test_training_learns_id_data_and_noise_scores_higher(glow):
    s_id, s_noise = glow.score(ID_TEST), glow.score(NOISE)
    assert s_id.shape == (16,) and s_id.dtype == np.float64
    assert s_id.mean() < 8.0  # better than a uniform model of the 256 values
    assert s_noise.min() > s_id.max()
    np.testing.assert_array_equal(glow.score(ID_TEST), s_id)  # seeded dequantisation


def test_png_difference_is_nll_minus_png_bits(glow):
    png = GlowNLL(baselines_cfg(), "png", glow.flow)
    np.testing.assert_allclose(png.score(NOISE), glow.score(NOISE) - png_bits_per_dim(NOISE))
    assert png.method == "Glow (diff to PNG)" and glow.method == "Glow (diff to None)"
    with pytest.raises(ValueError, match="diff"):
        GlowNLL(baselines_cfg(), "jpeg")


def test_training_is_deterministic_and_save_load_round_trips(glow, tmp_path):
    again = GlowNLL(baselines_cfg(), "none").fit(smooth_images(80, 0), progress=False)
    np.testing.assert_array_equal(again.score(NOISE), glow.score(NOISE))
    loaded = GlowNLL.load(glow.save(tmp_path / "glow.pt"))
    np.testing.assert_array_equal(loaded.score(NOISE), glow.score(NOISE))


def test_samples_are_seeded_uint8_images(glow):
    a = glow.sample_images(3, seed=1)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, glow.sample_images(3, seed=1))
