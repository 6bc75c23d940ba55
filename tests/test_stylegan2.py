"""Tests for the pure-PyTorch StyleGAN2 generator and discriminator (tiny widths, CPU)."""
import math

import pytest
import torch

from srood_lib.models.stylegan2 import (Discriminator, Generator, ModulatedConv2d, default_channels,
                                        minibatch_stddev, n_latent_for)


def tiny_generator(resolution=32, fused=False, seed=0):
    torch.manual_seed(seed)
    return Generator(resolution, z_dim=16, w_dim=16, n_mlp=2, channels=default_channels(resolution, 256, 16),
                     fused_modconv=fused)


@pytest.mark.parametrize("resolution", [32, 64])
def test_generator_and_discriminator_shapes(resolution):
    G = tiny_generator(resolution)
    D = Discriminator(resolution, channels=default_channels(resolution, 256, 16), mbstd_group=4)
    z = torch.randn(3, 16)
    img, wplus = G(z=z, noise_mode="const", return_wplus=True)
    assert img.shape == (3, 3, resolution, resolution)
    assert wplus.shape == (3, G.n_latent, 16)
    assert D(img).shape == (3,)


def test_n_latent_matches_layer_count():
    assert n_latent_for(32) == 8 and n_latent_for(64) == 10
    G = tiny_generator(32)
    # one style per conv (the up-conv shares its style with the previous toRGB) plus the last toRGB
    n_convs = 1 + 2 * len(G.synthesis.convs)
    assert G.n_latent == n_convs + 1 == 2 * int(math.log2(32)) - 2


def test_default_channels_and_string_keys():
    ch = default_channels(32, base=2048, max_channels=128)
    assert ch == {4: 128, 8: 128, 16: 128, 32: 64}
    G = Generator(32, 16, 16, 1, channels={str(k): v for k, v in default_channels(32, 256, 16).items()})
    assert G.init_kwargs["channels"] == default_channels(32, 256, 16)
    with pytest.raises(ValueError, match="missing widths"):
        Generator(32, 16, 16, 1, channels={4: 16, 8: 16})


def test_wplus_path_equals_z_path():
    G = tiny_generator().eval()
    z = torch.randn(4, 16)
    w = G.mapping(z)
    wplus = w.unsqueeze(1).repeat(1, G.n_latent, 1)
    assert torch.allclose(G(z=z, noise_mode="const"), G(wplus=wplus, noise_mode="const"), atol=1e-6)
    assert torch.allclose(G(z=z, noise_mode="none"), G.synthesis(wplus, noise_mode="none"), atol=1e-6)


def test_fused_and_unfused_modconv_agree():
    G1, G2 = tiny_generator(fused=False), tiny_generator(fused=True)
    G2.load_state_dict(G1.state_dict())
    z = torch.randn(3, 16)
    assert torch.allclose(G1(z=z, noise_mode="const"), G2(z=z, noise_mode="const"), atol=1e-5)


def test_noise_modes():
    G = tiny_generator()
    for block in [G.synthesis.conv1, *G.synthesis.convs, *G.synthesis.up_convs]:
        block.noise.strength.data.fill_(0.5)  # noise strength starts at 0; make noise visible
    z = torch.randn(2, 16)
    for mode in ("const", "none"):
        assert torch.equal(G(z=z, noise_mode=mode), G(z=z, noise_mode=mode))
    assert not torch.allclose(G(z=z, noise_mode="const"), G(z=z, noise_mode="none"))
    assert not torch.allclose(G(z=z, noise_mode="random"), G(z=z, noise_mode="random"))
    G.eval()  # "auto" is const in eval mode
    assert torch.equal(G(z=z), G(z=z, noise_mode="const"))
    with pytest.raises(ValueError):
        G(z=z, noise_mode="bogus")


def test_demodulation_keeps_activations_bounded():
    torch.manual_seed(0)
    conv = ModulatedConv2d(32, 32, 3, w_dim=8, demodulate=True)
    x = torch.randn(4, 32, 8, 8)
    small = conv(x, torch.randn(4, 8) * 0.01).std().item()
    large = conv(x, torch.randn(4, 8) * 100.0).std().item()
    assert 0.3 < small < 3 and 0.3 < large < 3  # style scale is normalised away
    conv.demodulate = False
    assert conv(x, torch.randn(4, 8) * 100.0).std().item() > 10 * large  # without demodulation it is not


def test_truncation_and_w_avg():
    G = tiny_generator().eval()
    G.update_w_avg(torch.ones(5, 16), beta=0.0)
    assert torch.allclose(G.w_avg, torch.ones(16))
    w = torch.randn(3, 16)
    assert torch.allclose(G.truncate(w, 0.0), torch.ones(3, 16))
    G.update_w_avg(torch.zeros(5, 16), beta=0.9)
    assert torch.allclose(G.w_avg, torch.full((16,), 0.9))


def test_style_mixing_crossover():
    G = tiny_generator()
    w1, w2 = torch.zeros(2, 16), torch.ones(2, 16)
    mixed = G.mixed_wplus(w1, w2, crossover=3)
    assert mixed.shape == (2, G.n_latent, 16)
    assert mixed[:, :3].abs().sum() == 0 and (mixed[:, 3:] == 1).all()
    z, z2 = torch.randn(2, 16), torch.randn(2, 16)
    _, wplus = G(z=z, z2=z2, crossover=5, noise_mode="none", return_wplus=True)
    assert torch.allclose(wplus[:, 0], G.mapping(z)) and torch.allclose(wplus[:, 5], G.mapping(z2))


def test_minibatch_stddev_group_handling():
    x = torch.randn(6, 4, 4, 4)
    out = minibatch_stddev(x, group_size=4)  # 6 is not divisible by 4: falls back to groups of 3
    assert out.shape == (6, 5, 4, 4)
    assert torch.allclose(out[:, :4], x)


def test_gradients_reach_all_generator_parameters():
    G = tiny_generator()
    for block in [G.synthesis.conv1, *G.synthesis.convs, *G.synthesis.up_convs]:
        block.noise.strength.data.fill_(0.1)
    G(z=torch.randn(2, 16), noise_mode="random").square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_rebuild_from_init_kwargs():
    G = tiny_generator()
    G2 = Generator(**G.init_kwargs)
    G2.load_state_dict(G.state_dict())
    z = torch.randn(2, 16)
    assert torch.equal(G.eval()(z=z), G2.eval()(z=z))


def test_downsample_paths_agree():
    from srood_lib.models.stylegan2 import downsample2x
    x = torch.randn(2, 4, 8, 8)
    ref = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(downsample2x(x), ref)
    assert torch.allclose(downsample2x(x.bfloat16()).float(), ref, atol=2e-2)
