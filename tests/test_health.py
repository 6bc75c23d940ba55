"""Repair health: a network that repairs every input into one template must be flagged; one that repairs each
input into itself must pass."""
import numpy as np
import pytest
import torch

from srood_lib import health


class FakeDetector:
    """The SROOD interface that health needs: ``repair`` -> (eroded, repaired, x) and ``score``."""

    def __init__(self, repair_fn):
        self.repair_fn = repair_fn
        self.erosion_name, self.mix_from_layer = "identity", None
        self.config = {}

    def repair(self, images, **kw):
        x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x, self.repair_fn(x), x

    def score(self, images, metric="lpips", lpips_net="alex", **kw):
        from srood_lib.perceptual import distance
        _, rep, x = self.repair(images)
        return distance(rep, x, metric, net=lpips_net).numpy()


def _images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    out = [np.stack([a * x, b * y, c * (1 - x * y)], -1) for a, b, c in rng.random((n, 3))]
    return (np.stack(out) * 255).astype(np.uint8)


def test_a_collapsed_repair_network_is_flagged():
    template = torch.zeros(1, 3, 32, 32)                     # the "mean-latent image" for every input
    det = FakeDetector(lambda x: template.expand_as(x).clone())
    h = health.repair_health(det, _images(), {"noise": _images(seed=1)[:, ::-1].copy()}, n_specificity=12)
    assert abs(h["specificity"]) < 0.05
    assert not health.passes(h, 0.5)


def test_a_faithful_repair_network_passes():
    det = FakeDetector(lambda x: (x + 0.02 * torch.randn_like(x)).clamp(-1, 1))
    h = health.repair_health(det, _images(), {"far": _images(seed=2)}, n_specificity=12)
    assert h["specificity"] > 0.5 and health.passes(h, 0.5)
    assert h["repair_distance_id"] < 0.1 and set(h) >= {"repair_distance_far", "ood_id_ratio_far"}


def test_specificity_needs_two_images():
    with pytest.raises(ValueError, match=">= 2"):
        health.specificity_from_repairs(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_specificity_equals_its_definition_pair_by_pair():
    """The matrix form (one backbone pass per image) against the definition computed one pair at a time."""
    from srood_lib.perceptual import distance
    x = torch.from_numpy(_images(9)).permute(0, 3, 1, 2).float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    repaired = (0.6 * x + 0.4 * torch.rand(x.shape, generator=g) * 2 - 0.4).clamp(-1, 1)
    want = []
    for i in range(len(x)):
        own = float(distance(repaired[i:i + 1], x[i:i + 1], "lpips"))
        others = [float(distance(repaired[i:i + 1], x[j:j + 1], "lpips")) for j in range(len(x)) if j != i]
        want.append(1 - own / sorted(others)[(len(others) - 1) // 2])  # lower median of 8 values, as torch's
    got = health.specificity_from_repairs(repaired, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.ptp(got) > 0.01  # the images differ, so do their specificities


class _MemorisingDetector:
    """Repairs its training images perfectly (score 0) and everything else badly (score 1)."""

    def __init__(self, seen):
        self.seen = {x.tobytes() for x in seen}

    def score(self, images, metric=None, lpips_net=None):
        return np.array([0.01 if x.tobytes() in self.seen else 1.0 for x in images])


def test_train_test_gap_flags_a_memorising_network():
    rng = np.random.default_rng(0)
    fit = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    gap = health.train_test_gap(_MemorisingDetector(fit), fit, test, n=5, seed=0)
    assert gap["repair_distance_train"] == 0.01 and gap["repair_distance_test"] == 1.0
    assert gap["test_train_ratio"] == 100.0
    even = health.train_test_gap(_MemorisingDetector(np.concatenate([fit, test])), fit, test, n=5, seed=0)
    assert even["test_train_ratio"] == 1.0


def _tiny_repair_network(scale: float):
    """A 16-px repair network whose codes are w_avg + ``scale`` x (an untrained encoder's small offsets)."""
    from srood_lib.models.psp import PSPEncoder, RepairNetwork
    from srood_lib.models.stylegan2 import Generator, default_channels
    torch.manual_seed(0)
    generator = Generator(16, z_dim=16, w_dim=16, n_mlp=2, channels=default_channels(16, 64, 16))
    generator.w_avg.normal_()  # not the zeros of an untrained generator: offsets must be measured from it
    encoder = PSPEncoder(16, 16, stem_channels=8, stage_channels=(8, 8, 8), blocks_per_stage=(1, 1, 1),
                         fpn_channels=8).eval()
    with torch.no_grad():
        for head in encoder.heads:
            for p in head.linear.parameters():
                p.mul_(scale)
    return RepairNetwork(encoder, generator)


@pytest.mark.parametrize("scale, inside", [(0.0, True), (1e4, False)])
def test_code_offsets_tell_codes_inside_w_from_codes_far_outside(scale, inside):
    net = _tiny_repair_network(scale)
    eroded = torch.rand(6, 3, 16, 16) * 2 - 1
    table = health.code_offsets(net, eroded, quantile=0.99, n_w=512)
    assert list(table["style"]) == list(range(net.generator.n_latent))
    assert (table["w_offset_q0.99"] >= table["w_offset_median"]).all() and (table["w_offset_median"] > 0).all()
    if inside:   # every code is w_avg itself
        assert (table["share_outside"] == 0).all() and (table["code_offset_max"] < 1e-5).all()
    else:        # offsets ~1e4 x the encoder's initial ones dwarf the mapping's spread
        assert (table["share_outside"] == 1).all() and (table["offset_ratio"] > 10).all()


def test_code_offsets_refuse_a_quantile_outside_0_1():
    with pytest.raises(ValueError, match="quantile"):
        health.code_offsets(_tiny_repair_network(1.0), torch.zeros(2, 3, 16, 16), quantile=99)
