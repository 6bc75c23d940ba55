"""The SROOD detector: T* selection, threshold, score direction, save/load, style mixing."""
import numpy as np
import pytest
import torch

from srood_lib.detector import SROOD, mixing_sweep, split_validation
from srood_lib.models.psp import RepairNetwork
from srood_lib.models.stylegan2 import Generator

from test_train_repair import CH, ENCODER, train_cfg


def config(**kw):
    cfg = {"variant": "sr", "seed": 0, "device": "cpu", "encoder": ENCODER, "train": train_cfg(kimg=0.128, lr=3e-3),
           "train_erosions": ["bicubic_x2", "bicubic_x4"], "candidate_erosions": ["bicubic_x2", "bicubic_x4"],
           "mix_from_layer": [None, 4], "distance": "lpips", "lpips_net": ["alex", "vgg"], "id_acceptance": 0.95,
           "n_val": 16, "synthetic_outliers": ["patch_shuffle", "invert", "noise"], "selection_images": 16,
           "min_specificity": 0.0, "batch_size": 16}
    cfg.update(kw)
    return cfg


def smooth_images(n, seed):
    """Smooth colour gradients: an ID set that a tiny model can learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    out = []
    for _ in range(n):
        a, b, c = rng.random(3)
        out.append(np.stack([a * x, b * y, c * (1 - x)], -1))
    return (np.stack(out) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    det = SROOD(config(), G)
    far = np.random.default_rng(9).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    det.fit(smooth_images(64, 0), tmp_path_factory.mktemp("det"), progress=False, validation_ood={"far": far})
    return det


def test_split_validation_is_disjoint_and_seeded():
    imgs = np.arange(20)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    train, val = split_validation(imgs, 5, seed=1)
    assert len(train) == 15 and len(val) == 5
    assert not set(train[:, 0, 0, 0]) & set(val[:, 0, 0, 0])
    assert np.array_equal(val, split_validation(imgs, 5, seed=1)[1])
    with pytest.raises(ValueError, match="n_val"):
        split_validation(imgs, 20, seed=0)


def test_fit_chooses_among_every_candidate_setting_and_sets_a_threshold(fitted):
    sel = fitted.selection
    assert len(sel) == 2 * 2 * 2  # erosions x mixing layers x backbones
    assert set(sel["lpips_net"]) == {"alex", "vgg"} and set(sel["mix_from_layer"]) == {"none", 4}
    chosen = sel[sel["chosen"]]
    assert len(chosen) == 1 and chosen["mean"].iloc[0] == sel[sel["passes_gate"]]["mean"].max()
    assert (fitted.erosion_name, fitted.lpips_net) == (chosen["erosion"].iloc[0], chosen["lpips_net"].iloc[0])
    assert "real:far" in sel and fitted.passes_health
    val_scores = fitted.score(split_validation(smooth_images(64, 0), 16, 0)[1])
    assert np.mean(val_scores <= fitted.threshold) >= 0.95


def test_no_setting_passing_the_gate_is_said(fitted):
    det = SROOD(config(min_specificity=2.0), fitted.generator)
    det.net = fitted.net
    det.select_settings(smooth_images(16, 7))
    assert det.passes_health is False and det.selection["chosen"].sum() == 1
    assert det.selection.loc[det.selection["chosen"], "specificity"].iloc[0] == det.selection["specificity"].max()


def test_scores_are_deterministic_and_noise_scores_higher(fitted):
    id_imgs = smooth_images(16, 1)
    noise = np.random.default_rng(2).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    s1, s2 = fitted.score(id_imgs), fitted.score(id_imgs)
    assert np.array_equal(s1, s2) and s1.shape == (16,)
    assert fitted.score(noise).mean() > s1.mean()
    assert fitted.predict(noise).mean() > fitted.predict(id_imgs).mean()


def test_style_mixing_changes_the_repair(fitted):
    imgs = smooth_images(4, 3)
    assert not np.allclose(fitted.score(imgs, mix_from_layer=None), fitted.score(imgs, mix_from_layer=2))
    sweep = mixing_sweep(fitted, imgs, {"noise": imgs[::-1]}, [None, 2])
    assert list(sweep["mix_from_layer"]) == ["none", 2]


def test_save_load_round_trip_keeps_scores(fitted, tmp_path):
    path = fitted.save(tmp_path / "d.pt")
    loaded = SROOD.load(path)
    imgs = smooth_images(8, 4)
    assert loaded.erosion_name == fitted.erosion_name and loaded.threshold == fitted.threshold
    assert (loaded.mix_from_layer, loaded.lpips_net, loaded.passes_health) == (
        fitted.mix_from_layer, fitted.lpips_net, fitted.passes_health)
    assert np.allclose(loaded.score(imgs), fitted.score(imgs))
    with pytest.raises(FileNotFoundError, match="no detector"):
        SROOD.load(tmp_path / "missing.pt")


def test_unfitted_detector_says_what_to_do():
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    with pytest.raises(RuntimeError, match="fit"):
        SROOD(config(), G).score(smooth_images(2, 0))


def _prior_file(generator, path):
    """A prior checkpoint holding ``generator`` as its EMA generator (what priors/ files are)."""
    from srood_lib.runtime import atomic_torch_save
    from srood_lib.train_prior import CHECKPOINT_FORMAT

    atomic_torch_save({"format": CHECKPOINT_FORMAT, "G_kwargs": generator.init_kwargs,
                       "G_ema": generator.state_dict()}, path)
    return path


@pytest.mark.parametrize("mode, tol", [("fp16", 2e-3), ("int8", 2e-2), ("mixed", 2e-2)])
def test_compact_detector_is_smaller_and_scores_like_the_full_one(fitted, tmp_path, mode, tol):
    prior = _prior_file(fitted.generator, tmp_path / "prior.pt")
    full = fitted.save(tmp_path / "full.pt")
    small = fitted.save_compact(tmp_path / f"{mode}.pt", prior, mode=mode)
    half = fitted.save_compact(tmp_path / "half.pt", prior, mode="fp16")
    assert small.stat().st_size < full.stat().st_size * {"fp16": 0.75, "int8": 0.5, "mixed": 0.75}[mode]
    assert mode == "fp16" or small.stat().st_size < 0.8 * half.stat().st_size   # int8 where asked
    loaded = SROOD.load(small)
    assert (loaded.erosion_name, loaded.mix_from_layer, loaded.lpips_net, loaded.threshold) == (
        fitted.erosion_name, fitted.mix_from_layer, fitted.lpips_net, fitted.threshold)
    imgs = np.concatenate([smooth_images(8, 11), np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3),
                                                                                       dtype=np.uint8)])
    ref, got = fitted.score(imgs), loaded.score(imgs)
    assert 0 < np.max(np.abs(got - ref)) <= tol * np.max(np.abs(ref))  # rounded, not copied, and close


def test_compact_detector_refuses_a_missing_or_changed_prior(fitted, tmp_path):
    prior = _prior_file(fitted.generator, tmp_path / "prior.pt")
    small = fitted.save_compact(tmp_path / "d.pt", prior)
    with open(prior, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="needs the prior"):
        SROOD.load(small)
    with pytest.raises(ValueError, match="compact mode"):
        fitted.save_compact(tmp_path / "e.pt", prior, mode="int4")


def test_several_settings_at_once_equal_each_setting_alone_with_one_encoder_pass_per_erosion(fitted, monkeypatch):
    imgs = smooth_images(20, 6)  # batch_size 16: two batches
    settings = [("bicubic_x2", None), ("bicubic_x2", 2), ("bicubic_x4", None), ("bicubic_x4", 2)]
    alone = {}
    for t, k in settings:
        fitted.net = fitted.net  # empty memo: each setting from its own pass
        alone[(t, k)] = fitted.score_nets(imgs, ["alex", "vgg"], erosion=t, mix_from_layer=k)
    fitted.net = fitted.net
    calls = []
    real_encode = RepairNetwork.encode
    monkeypatch.setattr(RepairNetwork, "encode", lambda self, *a, **k: calls.append(1) or real_encode(self, *a, **k))
    together = fitted.score_settings(imgs, ["alex", "vgg"], settings)
    assert len(calls) == 2 * 2  # two erosions x two batches, not four settings x two batches
    for s in settings:
        for net in ("alex", "vgg"):
            assert np.array_equal(together[s][net], alone[s][net]), (s, net)
    assert not np.array_equal(together[settings[0]]["vgg"], together[settings[1]]["vgg"])  # k changes the repair


def test_a_setting_scored_again_is_read_from_the_memo_and_equals_a_fresh_pass(fitted, monkeypatch):
    imgs = smooth_images(8, 5)
    first = fitted.score(imgs, erosion="bicubic_x4", mix_from_layer=None, lpips_net="vgg")
    calls = []  # encoder passes: every repair starts with one
    real_encode = RepairNetwork.encode
    monkeypatch.setattr(RepairNetwork, "encode", lambda self, *a, **k: calls.append(1) or real_encode(self, *a, **k))
    again = fitted.score(imgs.copy(), erosion="bicubic_x4", mix_from_layer=None, lpips_net="vgg")
    assert calls == [] and np.array_equal(first, again)               # same content, no repair pass
    again[:] = -1                                                      # a caller's copy: the memo is untouched
    assert np.array_equal(fitted.score(imgs, erosion="bicubic_x4", mix_from_layer=None, lpips_net="vgg"), first)
    other = fitted.score(imgs, erosion="bicubic_x2", mix_from_layer=None, lpips_net="vgg")
    assert calls and not np.array_equal(other, first)                  # another setting is repaired anew
    fitted.net = fitted.net                                            # a replaced network empties the memo
    n = len(calls)
    assert np.allclose(fitted.score(imgs, erosion="bicubic_x4", mix_from_layer=None, lpips_net="vgg"), first)
    assert len(calls) > n


def test_scoring_runs_a_channels_last_copy_with_the_same_numbers_and_leaves_the_network_as_it_is(fitted, monkeypatch):
    import srood_lib.detector as detector_module

    imgs = smooth_images(20, 7)
    fitted.net = fitted.net.to(memory_format=torch.contiguous_format)  # NCHW, as a loaded detector is
    weights = {k: (v.clone(), v.stride()) for k, v in fitted.net.state_dict().items()}
    fast = fitted.score(imgs)
    assert fitted.scoring_net is not fitted.net
    assert fitted.scoring_net.generator.synthesis.const.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(detector_module, "SCORING_CHANNELS_LAST", False)
    fitted.net = fitted.net
    plain = fitted.score(imgs)
    assert fitted.scoring_net is fitted.net
    assert np.allclose(fast, plain, rtol=1e-4, atol=1e-6) and not np.array_equal(fast, np.zeros_like(fast))
    for k, v in fitted.net.state_dict().items():  # the network's weights and their layout are untouched
        assert torch.equal(v, weights[k][0]) and v.stride() == weights[k][1], k


def test_prefetch_scores_every_asked_metric_from_one_repair_and_later_calls_read_the_memo(fitted, monkeypatch):
    from srood_lib.detector import prefetch_scores

    imgs = smooth_images(20, 8)  # batch_size 16: two batches
    other = SROOD(fitted.config, fitted.generator)
    other.net, other.erosion_name, other.mix_from_layer, other.lpips_net = (
        fitted.net, "bicubic_x2", None, "alex")
    asks = {("bicubic_x4", None): [("lpips", "vgg"), ("lpips", "alex"), ("l2", None)], ("bicubic_x4", 2): [("lpips", "alex")]}
    alone = {}
    for (t, k), what in asks.items():
        for metric, net in what:
            fitted.net = fitted.net
            alone[(t, k, metric, net)] = fitted.score(imgs, erosion=t, mix_from_layer=k, metric=metric,
                                                      lpips_net=net or "alex")
    fitted.net, other.net = fitted.net, other.net
    decodes = []
    real_decode = RepairNetwork.decode
    monkeypatch.setattr(RepairNetwork, "decode", lambda self, *a, **k: decodes.append(1) or real_decode(self, *a, **k))
    prefetch_scores([(fitted, asks), (other, {("bicubic_x2", None): [("lpips", "alex")]})], imgs)
    assert len(decodes) == (2 + 1) * 2  # one repair per (detector, setting) and batch, whatever metrics are asked
    decodes.clear()
    for (t, k, metric, net), expected in alone.items():
        got = fitted.score(imgs, erosion=t, mix_from_layer=k, metric=metric, lpips_net=net or "alex")
        assert np.array_equal(got, expected), (t, k, metric, net)
    assert np.array_equal(other.score(imgs), fitted.score(imgs, erosion="bicubic_x2", mix_from_layer=None,
                                                          lpips_net="alex"))
    assert decodes == [] or len(decodes) == 2  # the last line's fitted setting was not prefetched: one pass
    prefetch_scores([(fitted, asks)], imgs)  # asked again: nothing to do
    assert len(decodes) <= 2


def test_a_scaled_lpips_backbone_is_refused_as_a_setting_of_the_method():
    from srood_lib.config import apply_overrides, load_config
    from srood_lib.detector import detector_config

    cfg = load_config("smoke")
    assert detector_config(cfg, "sr")["lpips_net"] == cfg["detector"]["lpips_net"]
    for key in ("detector.lpips_net=[alex,vgg@x4]", "repair.train.lpips_net=alex@x2"):
        with pytest.raises(ValueError, match="a lever beyond the paper"):
            detector_config(apply_overrides(cfg, [key]), "sr")
