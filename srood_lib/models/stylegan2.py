"""A small StyleGAN2 (generator + residual discriminator) in pure PyTorch.

Follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (2020): equalized learning rate,
a mapping network z -> w with a reduced learning rate, a synthesis network that starts from a learned 4x4
constant and applies modulated/demodulated 3x3 convolutions, per-layer noise, and skip-connected toRGB outputs.
No custom CUDA ops: up/down-sampling uses ``F.interpolate`` / ``F.avg_pool2d`` instead of upfirdn2d.

All constructors take plain data (ints, floats, dicts of ints), and each model keeps those arguments in
``init_kwargs`` so it can be rebuilt from a saved config with ``Generator(**init_kwargs)``.

Style indexing (W+): ``n_latent = 2 * log2(resolution) - 2``. Style ``k`` drives the layers at resolution
``4 * 2 ** (k // 2)``: 0 -> 4x4 conv, 1 -> 4x4 toRGB and the 8x8 up-conv, 2 -> 8x8 conv, 3 -> 8x8 toRGB and the
16x16 up-conv, ... , n_latent - 1 -> the last toRGB.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none", "auto")


# ----------------------------------------------------------------------------------------------- helpers

def default_channels(resolution: int, base: int = 4096, max_channels: int = 256) -> dict[int, int]:
    """Feature-map width per resolution, ``min(max_channels, base // res)``, for 4, 8, ..., resolution."""
    check_resolution(resolution)
    return {4 * 2 ** i: int(min(max_channels, base // (4 * 2 ** i))) for i in range(int(math.log2(resolution)) - 1)}


def check_resolution(resolution: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")


def normalize_channels(channels: Mapping, resolution: int) -> dict[int, int]:
    """Channels dict with int keys (YAML/JSON may give str keys); checks every needed resolution is present."""
    out = {int(k): int(v) for k, v in dict(channels).items()}
    needed = [4 * 2 ** i for i in range(int(math.log2(resolution)) - 1)]
    missing = [r for r in needed if r not in out]
    if missing:
        raise ValueError(f"channels is missing widths for resolutions {missing} (has {sorted(out)}); "
                         f"use default_channels({resolution}) or add them to the config")
    return out


def n_latent_for(resolution: int) -> int:
    """Number of W+ style vectors for a generator of this resolution."""
    check_resolution(resolution)
    return 2 * int(math.log2(resolution)) - 2


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the StyleGAN gain sqrt(2), which keeps activation variance at ~1."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    # Bilinear x2 is the separable [1,3,3,1]/4 filter StyleGAN2 uses for up-sampling (up to border handling).
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 box average. On CPU in bf16 the strided-slice sum is faster than avg_pool2d (measured ~6 % of a
    bf16 prior training step); elsewhere avg_pool2d."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) * 0.25
    return F.avg_pool2d(x, 2)


# ----------------------------------------------------------------------------------- equalized-lr layers

class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: weights stored ~N(0, 1/lr_mul), scaled at runtime."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False, init_scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) * (init_scale / lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, bias)
        return lrelu(x) if self.activation else x


class EqualConv2d(nn.Module):
    """Conv layer with equalized learning rate; optional 2x average-pool down-sampling before the conv."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activation: bool = False,
                 down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.activation = activation
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            # Pool first, then convolve at the low resolution: same receptive field as blur + strided conv,
            # a quarter of the multiply-adds of convolving at full resolution.
            x = downsample2x(x)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.activation else x


# ------------------------------------------------------------------------------------------------ mapping

class MappingNetwork(nn.Module):
    """z -> w: pixel-norm of z, then ``n_mlp`` equalized-lr linear layers with a reduced learning rate."""

    def __init__(self, z_dim: int, w_dim: int, n_mlp: int, lr_mul: float = 0.01):
        super().__init__()
        layers = []
        for i in range(n_mlp):
            layers.append(EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activation=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.layers(z)


# -------------------------------------------------------------------------------------------- synthesis

class ModulatedConv2d(nn.Module):
    """Style-modulated conv (weight demodulation), optionally with 2x up-sampling of the input.

    Two mathematically equivalent implementations:
    * ``fused=True``: per-sample weights, one grouped conv with ``groups=batch`` (the StyleGAN2 paper's way);
    * ``fused=False``: scale the input channels by the style, one ordinary batched conv with the shared weight,
      then scale the output channels by the demodulation coefficients (StyleGAN2-ADA's training path).
    Which one is faster depends on the device and batch; ``Generator(fused_modconv=...)`` picks it.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False, fused: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1: plain conv at init
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.demodulate = demodulate
        self.up = up
        self.fused = fused

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, in_ch, _, _ = x.shape
        styles = self.affine(w)  # (N, in_ch)
        weight = self.weight * self.weight_gain  # (out, in, k, k)
        if self.up:
            x = upsample2x(x)
        if self.demodulate:
            # sum_{i,k} (w_oik * s_i)^2 = sum_i s_i^2 * sum_k w_oik^2: no per-sample weight tensor needed.
            # Kept in fp32 even under autocast (a bf16 matmul here would make the normalisation noisy).
            with torch.autocast(device_type=x.device.type, enabled=False):
                w_sq = weight.float().square().sum(dim=(2, 3))  # (out, in)
                dcoefs = torch.rsqrt(styles.float().square() @ w_sq.t() + 1e-8)  # (N, out)
        if self.fused:
            wmod = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # (N, out, in, k, k)
            if self.demodulate:
                wmod = wmod * dcoefs.to(wmod.dtype).reshape(n, -1, 1, 1, 1)
            out_ch = wmod.shape[1]
            h, wd = x.shape[2], x.shape[3]
            x = x.reshape(1, n * in_ch, h, wd)
            x = F.conv2d(x, wmod.reshape(n * out_ch, in_ch, *weight.shape[2:]), padding=self.padding, groups=n)
            return x.reshape(n, out_ch, h, wd)
        x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned strength (initialised to zero, as in StyleGAN2).

    ``noise_mode``: "random" draws fresh noise from the global torch RNG (training); "const" uses a fixed buffer
    (deterministic scoring); "none" adds nothing.
    """

    def __init__(self, resolution: int, seed: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        gen = torch.Generator().manual_seed(seed)  # fixed buffer independent of the global RNG state
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution, generator=gen))

    def forward(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        else:
            raise ValueError(f"noise_mode must be one of 'random', 'const', 'none', got {noise_mode!r}")
        return x + noise * self.strength.to(x.dtype)


class StyledConv(nn.Module):
    """Modulated conv + noise + bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool, noise_seed: int,
                 fused: bool):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, demodulate=True, up=up, fused=fused)
        self.noise = NoiseInjection(resolution, noise_seed)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = self.conv(x, w)
        x = self.noise(x, noise_mode)
        return lrelu(x + self.bias.to(x.dtype).reshape(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the up-sampled RGB of the previous resolution."""

    def __init__(self, in_ch: int, w_dim: int, fused: bool):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False, fused=fused)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        rgb = self.conv(x, w) + self.bias.to(x.dtype).reshape(1, 3, 1, 1)
        if skip is not None:
            rgb = rgb + upsample2x(skip)
        return rgb


class SynthesisNetwork(nn.Module):
    """W+ (N, n_latent, w_dim) -> image (N, 3, R, R), roughly in [-1, 1]."""

    def __init__(self, resolution: int, w_dim: int, channels: Mapping[int, int], fused_modconv: bool = False):
        super().__init__()
        check_resolution(resolution)
        self.resolution = resolution
        self.n_latent = n_latent_for(resolution)
        self.const = nn.Parameter(torch.randn(1, channels[4], 4, 4))
        self.conv1 = StyledConv(channels[4], channels[4], w_dim, 4, up=False, noise_seed=0, fused=fused_modconv)
        self.to_rgb1 = ToRGB(channels[4], w_dim, fused=fused_modconv)
        self.up_convs = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = channels[4]
        for i in range(1, int(math.log2(resolution)) - 1):
            res = 4 * 2 ** i
            out_ch = channels[res]
            self.up_convs.append(StyledConv(in_ch, out_ch, w_dim, res, up=True, noise_seed=2 * i - 1,
                                            fused=fused_modconv))
            self.convs.append(StyledConv(out_ch, out_ch, w_dim, res, up=False, noise_seed=2 * i,
                                         fused=fused_modconv))
            self.to_rgbs.append(ToRGB(out_ch, w_dim, fused=fused_modconv))
            in_ch = out_ch

    def forward(self, wplus: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if wplus.ndim != 3 or wplus.shape[1] != self.n_latent:
            raise ValueError(f"wplus must have shape (N, {self.n_latent}, w_dim), got {tuple(wplus.shape)}")
        n = wplus.shape[0]
        x = self.const.expand(n, -1, -1, -1)
        wplus = wplus.to(x.dtype)  # e.g. bf16 codes from an autocast encoder; autocast re-casts where it applies
        x = self.conv1(x, wplus[:, 0], noise_mode)
        img = self.to_rgb1(x, wplus[:, 1], None)
        k = 1
        for up_conv, conv, to_rgb in zip(self.up_convs, self.convs, self.to_rgbs):
            x = up_conv(x, wplus[:, k], noise_mode)
            x = conv(x, wplus[:, k + 1], noise_mode)
            img = to_rgb(x, wplus[:, k + 2], img)
            k += 2
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w), ``synthesis`` (W+ -> image) and a tracked ``w_avg``.

    ``forward(z=...)`` maps z, optionally truncates, broadcasts w to all ``n_latent`` styles and synthesises;
    ``forward(wplus=...)`` synthesises from given W+ codes. ``noise_mode="auto"`` means "random" in train mode
    and "const" in eval mode, so scores computed in eval mode are deterministic.
    """

    def __init__(self, resolution: int, z_dim: int = 128, w_dim: int = 128, n_mlp: int = 2,
                 channels: Mapping | None = None, mapping_lr_mul: float = 0.01, fused_modconv: bool = False):
        super().__init__()
        check_resolution(resolution)
        channels = normalize_channels(channels if channels is not None else default_channels(resolution),
                                      resolution)
        self.init_kwargs = dict(resolution=int(resolution), z_dim=int(z_dim), w_dim=int(w_dim), n_mlp=int(n_mlp),
                                channels={int(k): int(v) for k, v in channels.items()},
                                mapping_lr_mul=float(mapping_lr_mul), fused_modconv=bool(fused_modconv))
        self.resolution = resolution
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.n_latent = n_latent_for(resolution)
        self.mapping = MappingNetwork(z_dim, w_dim, n_mlp, lr_mul=mapping_lr_mul)
        self.synthesis = SynthesisNetwork(resolution, w_dim, channels, fused_modconv=fused_modconv)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    # -- latents
    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor, beta: float) -> None:
        """Track the mean of w: ``w_avg <- beta * w_avg + (1 - beta) * mean(w)`` (call during training)."""
        self.w_avg.lerp_(w.detach().float().mean(dim=0), 1.0 - beta)

    def truncate(self, w: torch.Tensor, truncation: float) -> torch.Tensor:
        """Pull w (or W+) towards ``w_avg`` by ``truncation`` (1 = unchanged)."""
        if truncation == 1:
            return w
        return self.w_avg.to(w.dtype) + truncation * (w - self.w_avg.to(w.dtype))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) -> (N, n_latent, w_dim): the same style for every layer."""
        return w.unsqueeze(1).expand(-1, self.n_latent, -1)

    def mixed_wplus(self, w1: torch.Tensor, w2: torch.Tensor, crossover: int) -> torch.Tensor:
        """Style mixing: styles ``< crossover`` from w1, styles ``>= crossover`` from w2 (both (N, w_dim))."""
        if not 0 <= crossover <= self.n_latent:
            raise ValueError(f"crossover must be in [0, {self.n_latent}], got {crossover}")
        idx = torch.arange(self.n_latent, device=w1.device).reshape(1, -1, 1)
        return torch.where(idx < crossover, w1.unsqueeze(1), w2.unsqueeze(1))

    def forward(self, z: torch.Tensor | None = None, wplus: torch.Tensor | None = None, truncation: float = 1.0,
                noise_mode: str = "auto", z2: torch.Tensor | None = None, crossover: int | None = None,
                return_wplus: bool = False):
        """Generate images from ``z`` (N, z_dim) or from ``wplus`` (N, n_latent, w_dim).

        With ``z2`` and ``crossover`` (training-time mixing regularisation) styles ``>= crossover`` come from
        ``z2``. Returns the image (N, 3, R, R), and the W+ used when ``return_wplus``.
        """
        if (z is None) == (wplus is None):
            raise ValueError("pass exactly one of z or wplus")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise_mode == "auto":
            noise_mode = "random" if self.training else "const"
        if z is not None:
            w = self.truncate(self.mapping(z), truncation)
            if z2 is not None and crossover is not None:
                w2 = self.truncate(self.mapping(z2), truncation)
                wplus = self.mixed_wplus(w, w2, crossover)
            else:
                wplus = self.broadcast(w)
        else:
            wplus = self.truncate(wplus, truncation)
        img = self.synthesis(wplus, noise_mode=noise_mode)
        return (img, wplus) if return_wplus else img


# -------------------------------------------------------------------------------------------- discriminator

class DiscriminatorBlock(nn.Module):
    """Residual block: conv3x3, down-sample + conv3x3, plus a down-sampled 1x1 skip; sum scaled by 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3, activation=True)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, activation=True, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv2(self.conv1(x))) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the std of features across a group of samples, averaged (StyleGAN's mbstd)."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)  # largest divisor of n <= group_size
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (n/g, c, h, w)
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # (n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: fromRGB, residual blocks down to 4x4, minibatch-stddev, conv, 2 FC."""

    def __init__(self, resolution: int, channels: Mapping | None = None, mbstd_group: int = 4):
        super().__init__()
        check_resolution(resolution)
        channels = normalize_channels(channels if channels is not None else default_channels(resolution),
                                      resolution)
        self.init_kwargs = dict(resolution=int(resolution), channels={int(k): int(v) for k, v in channels.items()},
                                mbstd_group=int(mbstd_group))
        self.resolution = resolution
        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(3, channels[resolution], 1, activation=True)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(channels[res], channels[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = channels[4]
        self.final_conv = EqualConv2d(c4 + 1, c4, 3, activation=True)
        self.final_fc = EqualLinear(c4 * 16, c4, activation=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for images (N, 3, R, R) in [-1, 1]."""
        if img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            raise ValueError(f"discriminator expects {self.resolution}x{self.resolution} images, "
                             f"got {tuple(img.shape)}")
        x = self.blocks(self.from_rgb(img))
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.final_conv(x)
        x = self.final_fc(x.flatten(1))
        return self.out(x).squeeze(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable-or-not parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
