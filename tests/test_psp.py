"""Tests for the pSp encoder, test-time style mixing and the RepairNetwork wrapper."""
import pytest
import torch

from srood_lib.models.psp import PSPEncoder, RepairNetwork, mix_with_mean
from srood_lib.models.stylegan2 import Generator, default_channels

W_DIM = 16


def tiny_parts(resolution=32, block="ir_se", norm="batch", seed=0):
    torch.manual_seed(seed)
    G = Generator(resolution, z_dim=W_DIM, w_dim=W_DIM, n_mlp=2, channels=default_channels(resolution, 256, 16))
    with torch.no_grad():  # a non-trivial latent mean, as after training
        G.update_w_avg(G.mapping(torch.randn(256, W_DIM)), beta=0.0)
    E = PSPEncoder(resolution, W_DIM, stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1],
                   fpn_channels=16, block=block, norm=norm, head_init_scale=0.01)
    return E, G


@pytest.mark.parametrize("resolution,block,norm", [(32, "ir_se", "batch"), (64, "basic", "group")])
def test_encoder_output_shape(resolution, block, norm):
    E, G = tiny_parts(resolution, block, norm)
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    assert E(x).shape == (2, G.n_latent, W_DIM)
    net = RepairNetwork(E, G)
    out, wplus = net(x, return_wplus=True)
    assert out.shape == x.shape and wplus.shape == (2, G.n_latent, W_DIM)


def test_offsets_start_near_w_avg():
    E, G = tiny_parts()
    net = RepairNetwork(E, G).eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    wplus = net.encode(x)
    offset = (wplus - G.w_avg).norm(dim=-1).mean()
    assert offset < 0.05 * G.w_avg.norm()


def test_mix_with_mean_replaces_exactly_layers_from_k():
    wplus = torch.randn(3, 8, W_DIM)
    w_avg = torch.randn(W_DIM)
    assert mix_with_mean(wplus, w_avg, None) is wplus
    for k in (0, 3, 8):
        mixed = mix_with_mean(wplus, w_avg, k)
        assert torch.equal(mixed[:, :k], wplus[:, :k])
        assert torch.equal(mixed[:, k:], w_avg.expand(3, 8 - k, W_DIM))
    with pytest.raises(ValueError):
        mix_with_mean(wplus, w_avg, 9)


def test_forward_mixing_uses_w_avg():
    E, G = tiny_parts()
    net = RepairNetwork(E, G).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    _, wplus = net(x, mix_from_layer=5, return_wplus=True)
    assert torch.allclose(wplus[:, 5:], G.w_avg.expand(2, 3, W_DIM))
    assert torch.allclose(wplus[:, :5], net.encode(x)[:, :5])


def test_generator_frozen_unless_train_decoder():
    E, G = tiny_parts()
    net = RepairNetwork(E, G).train()
    assert not G.training and all(not p.requires_grad for p in G.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net(x).square().mean().backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in E.parameters() if p.requires_grad)  # gradients pass through G

    E2, G2 = tiny_parts()
    net2 = RepairNetwork(E2, G2, train_decoder=True).train()
    assert G2.training
    net2(x).square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G2.parameters())


def test_repair_is_deterministic_in_eval():
    E, G = tiny_parts()
    net = RepairNetwork(E, G).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x), net(x))


def test_mismatched_encoder_rejected():
    E, _ = tiny_parts(32)
    _, G64 = tiny_parts(64)
    with pytest.raises(ValueError, match="styles"):
        RepairNetwork(E, G64)


def test_rebuild_encoder_from_init_kwargs():
    E, _ = tiny_parts()
    E2 = PSPEncoder(**E.init_kwargs)
    E2.load_state_dict(E.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(E.eval()(x), E2.eval()(x))


def test_a_w_encoder_gives_one_code_for_every_layer_and_rebuilds_from_its_kwargs():
    torch.manual_seed(0)
    E = PSPEncoder(32, W_DIM, stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1],
                   fpn_channels=16, head_init_scale=1.0, latent="w").eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    codes = E(x)
    _, G = tiny_parts()
    assert codes.shape == (3, G.n_latent, W_DIM) and len(E.heads) == 1
    assert torch.equal(codes, codes[:, :1].expand_as(codes))            # the same style at every layer
    assert not torch.allclose(codes[0], codes[1])                        # but it depends on the image
    E2 = PSPEncoder(**E.init_kwargs).eval()
    E2.load_state_dict(E.state_dict())
    assert torch.equal(E2(x), codes)


def test_a_w_coarse_encoder_shares_one_code_over_the_coarse_styles_and_keeps_the_fine_ones_free():
    torch.manual_seed(0)
    E = PSPEncoder(32, W_DIM, stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1],
                   fpn_channels=16, head_init_scale=1.0, coarse_end=4, latent="w_coarse").eval()
    _, G = tiny_parts()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    codes = E(x)
    assert codes.shape == (3, G.n_latent, W_DIM) and len(E.heads) == 1 + G.n_latent - 4
    assert torch.equal(codes[:, :4], codes[:, :1].expand(-1, 4, -1))    # one code for styles 0-3
    assert not torch.allclose(codes[:, 3], codes[:, 4])                  # the finer styles have their own
    assert not torch.allclose(codes[:, 4], codes[:, 5])
    assert not torch.allclose(codes[0], codes[1])                        # and all depend on the image
    assert E.level_of(E.head_styles[0][0]) == "coarse" and E.level_of(E.head_styles[-1][0]) == "fine"
    net = RepairNetwork(E, G).train()
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in E.heads.parameters())         # every head is used
    E2 = PSPEncoder(**E.init_kwargs).eval()
    E2.load_state_dict(E.state_dict())
    assert torch.equal(E2(x), E.eval()(x))


def test_an_unknown_latent_space_is_a_clear_error():
    with pytest.raises(ValueError, match="latent must be one of"):
        PSPEncoder(32, W_DIM, latent="z")


def test_a_zplus_encoder_maps_each_style_through_the_priors_mapping_network():
    torch.manual_seed(0)
    E = PSPEncoder(32, W_DIM, stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1],
                   fpn_channels=16, head_init_scale=1.0, latent="zplus")
    _, G = tiny_parts()
    net = RepairNetwork(E, G).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = E(x)
    codes = net.encode(x)
    assert codes.shape == (3, G.n_latent, W_DIM) and len(E.heads) == G.n_latent
    for k in range(G.n_latent):  # every style is a point of W: the mapping of the encoder's k-th z
        assert torch.allclose(codes[:, k], G.mapping(z[:, k]), atol=1e-6)
    assert not torch.allclose(codes[:, 0], codes[:, -1])                 # styles differ (Z+, not Z)
    net.train()
    net(x).square().mean().backward()                                    # the frozen mapping passes gradients on
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in E.parameters() if p.requires_grad)


def test_a_zplus_encoder_needs_the_generators_z_dim():
    torch.manual_seed(0)
    G = Generator(32, z_dim=8, w_dim=W_DIM, n_mlp=2, channels=default_channels(32, 256, 16))
    E = PSPEncoder(32, W_DIM, stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1],
                   fpn_channels=16, latent="zplus")
    with pytest.raises(ValueError, match="z_dim"):
        RepairNetwork(E, G)
    from srood_lib.train_repair import build_repair_network
    net = build_repair_network(G, {"stem_channels": 8, "stage_channels": [8, 16, 16], "blocks_per_stage": [1, 1, 1],
                                   "fpn_channels": 16, "latent": "zplus"}, train_decoder=False)
    assert net.encoder.w_dim == 8 and net.encode(torch.zeros(1, 3, 32, 32)).shape == (1, G.n_latent, W_DIM)
