"""Tests for prior training: checkpoint/losses output, kill-and-resume equality, load_prior, sampling."""
import csv

import numpy as np
import pytest
import torch

from srood_lib.runtime import EpochOrder
from srood_lib.train_prior import diff_augment, load_checkpoint, load_prior, sample_images, train_prior

CH = {4: 16, 8: 16, 16: 8, 32: 8}


def tiny_cfg(**overrides):
    cfg = dict(resolution=32,
               generator=dict(z_dim=16, w_dim=16, n_mlp=2, mapping_lr_mul=0.01, channels=dict(CH)),
               discriminator=dict(channels=dict(CH), mbstd_group=4),
               batch_size=16, kimg=0.16, g_lr=0.0025, d_lr=0.0025, adam_betas=[0.0, 0.99], r1_gamma=0.1,
               r1_interval=4, ema_kimg=0.05, ema_rampup=0.05, mixing_prob=0.9, w_avg_beta=0.995,
               diffaug="color,translation,cutout", checkpoint_kimg=0.064, bf16=True, channels_last=True)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)


def read_losses(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_checkpoint_and_losses(images, tmp_path):
    path = train_prior(images, tiny_cfg(), tmp_path, seed=0, device="cpu", progress=False)
    assert path == tmp_path / "prior.pt" and path.exists()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 10 and ckpt["nimg"] == 160
    for key in ("G", "D", "G_ema", "G_opt", "D_opt", "cfg", "history", "seed"):
        assert key in ckpt
    rows = read_losses(tmp_path / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(np.isfinite(float(r["d_loss"])) and np.isfinite(float(r["g_loss"])) for r in rows)
    r1_steps = [int(r["step"]) for r in rows if r["r1_penalty"] != "nan"]
    assert r1_steps == [1, 5, 9]  # lazy R1: steps 0, 4, 8 (0-based)
    assert not torch.equal(ckpt["G"]["synthesis.const"], ckpt["G_ema"]["synthesis.const"])  # EMA lags G
    assert ckpt["G_ema"]["w_avg"].abs().sum() > 0  # latent mean is tracked


def test_killed_run_resumes_to_same_weights(images, tmp_path):
    cfg = tiny_cfg()
    full = load_checkpoint(train_prior(images, cfg, tmp_path / "full", seed=3, device="cpu", progress=False))

    class Killed(Exception):
        pass

    def kill_at_step_7(steps_done):
        if steps_done == 7:  # checkpoints were written at steps 4 (64 img) and 8: the last one is step 4
            raise Killed

    with pytest.raises(Killed):
        train_prior(images, cfg, tmp_path / "resumed", seed=3, device="cpu", progress=False,
                    callback=kill_at_step_7)
    assert load_checkpoint(tmp_path / "resumed")["step"] == 4
    assert len(read_losses(tmp_path / "resumed" / "losses.csv")) == 7  # rows past the checkpoint exist...
    resumed = load_checkpoint(train_prior(images, cfg, tmp_path / "resumed", seed=3, device="cpu",
                                          progress=False))
    assert resumed["step"] == full["step"] == 10
    for key in ("G", "D", "G_ema"):
        assert state_equal(full[key], resumed[key]), key
    rows = read_losses(tmp_path / "resumed" / "losses.csv")  # ...and are replaced, not duplicated
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert [r["g_loss"] for r in rows] == [r["g_loss"] for r in read_losses(tmp_path / "full" / "losses.csv")]


def test_resume_refuses_other_seed_or_recipe(images, tmp_path):
    train_prior(images, tiny_cfg(kimg=0.032), tmp_path, seed=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="different seed"):
        train_prior(images, tiny_cfg(kimg=0.032), tmp_path, seed=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="recipe"):
        train_prior(images, tiny_cfg(kimg=0.032, g_lr=0.001), tmp_path, seed=0, device="cpu", progress=False)
    # a larger budget is a valid resume
    path = train_prior(images, tiny_cfg(kimg=0.064), tmp_path, seed=0, device="cpu", progress=False)
    assert load_checkpoint(path)["step"] == 4


def test_different_seeds_give_different_weights(images, tmp_path):
    a = load_checkpoint(train_prior(images, tiny_cfg(kimg=0.032), tmp_path / "a", seed=0, device="cpu",
                                    progress=False))
    b = load_checkpoint(train_prior(images, tiny_cfg(kimg=0.032), tmp_path / "b", seed=1, device="cpu",
                                    progress=False))
    assert not state_equal(a["G"], b["G"])


def test_missing_config_key_is_named(images, tmp_path):
    cfg = tiny_cfg()
    del cfg["r1_gamma"]
    with pytest.raises(KeyError, match="r1_gamma"):
        train_prior(images, cfg, tmp_path, seed=0, device="cpu", progress=False)


def test_load_prior_round_trip_and_sampling(images, tmp_path):
    path = train_prior(images, tiny_cfg(kimg=0.032), tmp_path, seed=0, device="cpu", progress=False)
    G = load_prior(path, device="cpu")
    assert not G.training and all(not p.requires_grad for p in G.parameters())
    ckpt = load_checkpoint(path)
    assert state_equal(G.state_dict(), ckpt["G_ema"])
    samples = sample_images(G, 5, seed=7)
    assert samples.shape == (5, 32, 32, 3) and samples.dtype == np.uint8
    assert np.array_equal(samples, sample_images(G, 5, seed=7))
    assert not np.array_equal(samples, sample_images(G, 5, seed=8))


def test_epoch_order_covers_each_image_once_per_epoch():
    order = EpochOrder(n_images=10, batch_size=4, seed=0)
    first_epochs = torch.cat([order.indices(s) for s in range(5)])  # 20 indices = two epochs
    assert sorted(first_epochs[:10].tolist()) == list(range(10))
    assert sorted(first_epochs[10:].tolist()) == list(range(10))
    assert torch.equal(EpochOrder(10, 4, 0).indices(3), order.indices(3))  # function of (seed, step)


def test_diff_augment_is_differentiable_and_shape_preserving():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, "") is x
    cut = diff_augment(torch.ones(2, 3, 32, 32), "cutout")
    hole = (cut == 0).float().mean(dim=(1, 2, 3))  # one 16x16 hole per image, clipped at the borders
    assert ((hole >= 1 / 16) & (hole <= 1 / 4)).all()
    with pytest.raises(ValueError):
        diff_augment(x, "rotate")


def test_bf16_cpu_option_trains_with_finite_losses(images, tmp_path):
    train_prior(images, tiny_cfg(kimg=0.064, bf16_cpu=True), tmp_path, seed=0, device="cpu", progress=False)
    rows = read_losses(tmp_path / "losses.csv")
    assert len(rows) == 4
    assert all(np.isfinite(float(r["d_loss"])) and np.isfinite(float(r["g_loss"])) for r in rows)
    assert np.isfinite(float(rows[0]["r1_penalty"]))  # the R1 step runs in fp32 even under bf16 autocast


def test_snapshots_keep_the_ema_generator_at_given_budgets(images, tmp_path):
    cfg = tiny_cfg(kimg=0.16, snapshot_kimg=[0.064, 0.16])
    final = load_checkpoint(train_prior(images, cfg, tmp_path, seed=0, device="cpu", progress=False))
    early = load_checkpoint(tmp_path / "snapshots" / "prior_0.064kimg.pt")
    last = load_checkpoint(tmp_path / "snapshots" / "prior_0.16kimg.pt")
    assert early["nimg"] == 64 and last["nimg"] == 160
    assert all(torch.equal(last["G_ema"][k], final["G_ema"][k]) for k in final["G_ema"])
    assert not torch.equal(early["G_ema"]["synthesis.const"], final["G_ema"]["synthesis.const"])
    G = load_prior(tmp_path / "snapshots" / "prior_0.064kimg.pt")
    assert not G.training


def test_a_snapshot_equals_a_run_stopped_at_that_budget(images, tmp_path):
    """Why the budget curve may take its early points from a shorter rerun: the budget does not change the path."""
    train_prior(images, tiny_cfg(kimg=0.128, snapshot_kimg=[0.064]), tmp_path / "long", seed=0, device="cpu",
                progress=False)
    short = load_checkpoint(train_prior(images, tiny_cfg(kimg=0.064), tmp_path / "short", seed=0, device="cpu",
                                        progress=False))
    snap = load_checkpoint(tmp_path / "long" / "snapshots" / "prior_0.064kimg.pt")
    assert all(torch.equal(snap["G_ema"][k], short["G_ema"][k]) for k in short["G_ema"])
