"""Algorithm 1: loss, determinism, kill-and-resume equality, refusal to resume a different recipe."""
import csv

import numpy as np
import pytest
import torch

from srood_lib.models.stylegan2 import Generator
from srood_lib.train_repair import load_repair, repair_loss, train_repair

CH = {4: 16, 8: 16, 16: 8, 32: 8}
ENCODER = dict(stem_channels=8, stage_channels=[8, 16, 16], blocks_per_stage=[1, 1, 1], fpn_channels=16,
               block="basic", norm="batch", head_init_scale=0.1, coarse_end=4, middle_end=6)


def train_cfg(**kw):
    cfg = dict(batch_size=8, kimg=0.048, lr=1e-3, adam_betas=[0.9, 0.999], lambda_l2=1.0, lambda_lpips=0.8,
               lambda_delta=0.0, lambda_wnorm=0.0, lr_decay_fraction=0.0, lpips_net="alex", train_decoder=False, decoder_lr=1e-4, checkpoint_kimg=0.016, bf16=True,
               channels_last=True)
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)


def generator(seed=0):
    torch.manual_seed(seed)
    return Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_is_l2_plus_0_8_lpips():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    loss, l2, lp = repair_loss(y, x, train_cfg())
    assert torch.isclose(loss, l2 + 0.8 * lp)
    assert l2 > 0 and lp > 0
    assert torch.isclose(l2, ((y - x) ** 2).mean())


def test_training_writes_losses_and_leaves_generator_untouched(images, tmp_path):
    G = generator()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    net = train_repair(images, G, train_cfg(), ENCODER, ["bicubic_x2", "bicubic_x4"], tmp_path, seed=0,
                       device="cpu", progress=False)
    assert states_equal(before, net.generator.state_dict())
    with open(tmp_path / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [6]  # 48 images / batch 8, logged every 10 steps and at the end
    assert not net.training


def test_encoder_learns_to_lower_the_loss(images, tmp_path):
    cfg = train_cfg(kimg=0.32, lr=3e-3)
    train_repair(images, generator(), cfg, ENCODER, ["identity"], tmp_path, seed=0, device="cpu", progress=False)
    with open(tmp_path / "losses.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]


def test_killed_run_resumes_to_the_same_weights(images, tmp_path):
    args = dict(train_erosions=["blackout_random_8-16", "bicubic_x2"], seed=3, device="cpu", progress=False)
    full = train_repair(images, generator(), train_cfg(), ENCODER, out_dir=tmp_path / "full", **args)
    train_repair(images, generator(), train_cfg(), ENCODER, out_dir=tmp_path / "killed", stop_after_steps=2, **args)
    resumed = train_repair(images, generator(), train_cfg(), ENCODER, out_dir=tmp_path / "killed", **args)
    assert states_equal(full.state_dict(), resumed.state_dict())
    assert states_equal(full.state_dict(), load_repair(tmp_path / "killed").state_dict())


def test_resume_with_another_recipe_is_refused(images, tmp_path):
    train_repair(images, generator(), train_cfg(), ENCODER, ["identity"], tmp_path, seed=0, device="cpu",
                 progress=False, stop_after_steps=2)
    with pytest.raises(ValueError, match="another recipe"):
        train_repair(images, generator(), train_cfg(lr=5e-4), ENCODER, ["identity"], tmp_path, seed=0,
                     device="cpu", progress=False)


def test_train_decoder_changes_the_generator(images, tmp_path):
    G = generator()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    net = train_repair(images, G, train_cfg(train_decoder=True, decoder_lr=1e-2), ENCODER, ["identity"], tmp_path,
                       seed=0, device="cpu", progress=False)
    assert not states_equal(before, net.generator.state_dict())


def test_delta_penalty_is_zero_for_a_code_in_w_and_grows_with_the_spread():
    import torch

    from srood_lib.train_repair import delta_penalty

    w = torch.randn(3, 1, 16).repeat(1, 6, 1)            # one style for every layer: a code in W
    assert delta_penalty(w).item() == 0.0
    spread = w.clone()
    spread[:, 2] += 3.0 / 4.0                            # one style moved by 0.75 in each of 16 dims: norm 3
    assert abs(delta_penalty(spread).item() - 3.0) < 1e-5


def test_a_setting_at_its_off_value_is_not_part_of_the_recipe():
    from srood_lib.train_repair import weights_recipe

    for key in ("lambda_delta", "lambda_wnorm", "lr_decay_fraction"):
        assert key not in weights_recipe(train_cfg(**{key: 0.0}))
        assert weights_recipe(train_cfg(**{key: 0.1}))[key] == 0.1


def test_the_papers_latent_space_is_not_part_of_the_encoder_recipe_and_w_is():
    from srood_lib.train_repair import encoder_recipe

    enc = {"stem_channels": 8, "latent": "wplus"}
    assert encoder_recipe(enc) == {"stem_channels": 8}            # networks trained before the key existed keep theirs
    assert encoder_recipe({**enc, "latent": "w"})["latent"] == "w"


def test_wnorm_penalty_is_the_mean_frobenius_distance_to_w_avg():
    from srood_lib.train_repair import wnorm_penalty

    w_avg = torch.randn(16)
    w = w_avg.reshape(1, 1, -1).repeat(2, 6, 1)
    assert wnorm_penalty(w, w_avg).item() == 0.0
    w[0] += 0.5                                           # 6 x 16 entries moved by 0.5: norm sqrt(96) / 2
    assert abs(wnorm_penalty(w, w_avg).item() - (96 ** 0.5 / 2) / 2) < 1e-5


def test_lr_decays_linearly_to_zero_over_the_last_fraction_only():
    from srood_lib.train_repair import lr_factor

    assert [lr_factor(s, 10, 0.0) for s in (0, 9)] == [1.0, 1.0]
    assert [round(lr_factor(s, 10, 0.5), 6) for s in (0, 4, 5, 6, 8, 10)] == [1.0, 1.0, 1.0, 0.8, 0.4, 0.0]


def test_with_a_decaying_lr_a_longer_budget_is_another_recipe(images, tmp_path):
    # the schedule depends on the total length, so kimg=0.064 resumed from kimg=0.048 would not equal a fresh run
    decay = dict(lr_decay_fraction=0.5)
    train_repair(images, generator(), train_cfg(**decay), ENCODER, ["identity"], tmp_path, seed=0, device="cpu",
                 progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        train_repair(images, generator(), train_cfg(kimg=0.064, **decay), ENCODER, ["identity"], tmp_path, seed=0,
                     device="cpu", progress=False)
    # constant lr: the same folder resumes to the longer budget
    train_repair(images, generator(), train_cfg(), ENCODER, ["identity"], tmp_path / "c", seed=0, device="cpu",
                 progress=False)
    train_repair(images, generator(), train_cfg(kimg=0.064), ENCODER, ["identity"], tmp_path / "c", seed=0,
                 device="cpu", progress=False)
