"""pixel2style2pixel (pSp) repair network: a feature-pyramid encoder into W+ of a frozen StyleGAN2 generator.

After Richardson et al., "Encoding in Style" (2021): a residual (IR-SE or basic-block) backbone gives three
feature levels; an FPN-style top-down path merges them; one "map2style" head per style vector reduces its level's
feature map with strided convs to a ``w_dim`` vector. Styles for the coarse layers read the lowest-resolution
level, the middle layers the middle level, the fine layers the highest-resolution level. The encoder predicts
OFFSETS from the generator's ``w_avg`` (heads start with a small init, so an untrained encoder outputs ~w_avg).

``latent="w"`` (BEYOND THE PAPER) restricts the code to W: one head on the coarse level gives one style, broadcast
to every layer (a single-code encoder, as the original StyleGAN inversions use), so an image is repaired from what
one latent of the prior can draw rather than from a per-layer combination that can reach almost any image.
``latent="zplus"`` (BEYOND THE PAPER) keeps one style per layer but makes each one a point of W: the heads give one
z per style and the prior's own frozen mapping network turns each into w, so no style can leave the range of the
mapping (the CIFAR-10 encoders' layout styles do, ``health.code_offsets``).
``latent="w_coarse"`` (BEYOND THE PAPER) is W for the coarse styles and W+ for the rest: one head gives one code
shared by the styles ``k < coarse_end`` (the 4-8 px layers, which set layout), and each finer style keeps its own
head, so layout must be one the prior draws while detail stays free.

SR-OOD's test-time style mixing replaces styles ``k, k+1, ...`` of the encoded W+ with ``w_avg``
(``mix_with_mean``), which moves OOD reconstructions further from their inputs than ID ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from srood_lib.models.stylegan2 import EqualLinear, Generator, n_latent_for

NORMS = ("batch", "group", "none")
BLOCKS = ("ir_se", "basic")
# the paper's W+ (one style per layer) | W (one style for all layers) | Z+ (one z per layer, mapped into W) |
# W for the coarse layers and W+ for the rest; all but the first are beyond the paper
LATENTS = ("wplus", "w", "zplus", "w_coarse")


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (as in pSp), GroupNorm (batch-independent) or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class SqueezeExcite(nn.Module):
    """Channel attention: global average -> bottleneck MLP -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class IRSEBlock(nn.Module):
    """Improved-residual block with squeeze-excitation (pSp's backbone unit): BN-conv-PReLU-conv-BN-SE + skip."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.residual = nn.Sequential(
            make_norm(norm, in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            make_norm(norm, out_ch),
            SqueezeExcite(out_ch),
        )
        if in_ch == out_ch and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-norm-ReLU-conv-norm + skip, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_ch)
        if in_ch == out_ch and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class Map2Style(nn.Module):
    """A (N, C, s, s) feature map -> one (N, w_dim) style: log2(s) stride-2 convs, then a linear layer."""

    def __init__(self, in_ch: int, w_dim: int, spatial: int, head_init_scale: float):
        super().__init__()
        layers, ch = [], in_ch
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(ch, w_dim, 3, 2, 1), nn.LeakyReLU(0.2)]
            ch = w_dim
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(ch, w_dim, init_scale=head_init_scale)  # small init: offsets start ~0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class PSPEncoder(nn.Module):
    """Eroded image (N, 3, R, R) in [-1, 1] -> W+ offsets from w_avg, shape (N, n_styles, w_dim) (with
    ``latent="w"`` the same offset repeated for every style, with ``latent="w_coarse"`` for the coarse styles; with
    ``latent="zplus"`` one z per style instead of an offset, so ``w_dim`` is then the generator's z_dim:
    ``RepairNetwork.encode`` maps each z into W).

    Backbone: a stem at full resolution and three stages, each halving the resolution (R/2, R/4, R/8), giving the
    fine, medium and coarse levels. Styles ``k < coarse_end`` read the coarse level, ``k < middle_end`` the medium
    one, the rest the fine one (defaults: styles of the 4-8 px layers are coarse, 16 px medium, >= 32 px fine).
    """

    def __init__(self, resolution: int, w_dim: int, stem_channels: int = 32,
                 stage_channels: tuple | list = (64, 128, 256), blocks_per_stage: tuple | list = (2, 2, 2),
                 fpn_channels: int = 128, block: str = "ir_se", norm: str = "batch", head_init_scale: float = 0.1,
                 coarse_end: int = 4, middle_end: int = 6, latent: str = "wplus"):
        super().__init__()
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
        if len(stage_channels) != 3 or len(blocks_per_stage) != 3:
            raise ValueError("stage_channels and blocks_per_stage need exactly 3 entries (fine, medium, coarse)")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        n_styles = n_latent_for(resolution)
        if resolution < 16:
            raise ValueError(f"the encoder needs resolution >= 16 (coarse level at R/8), got {resolution}")
        self.init_kwargs = dict(resolution=int(resolution), w_dim=int(w_dim), stem_channels=int(stem_channels),
                                stage_channels=[int(c) for c in stage_channels],
                                blocks_per_stage=[int(b) for b in blocks_per_stage], fpn_channels=int(fpn_channels),
                                block=block, norm=norm, head_init_scale=float(head_init_scale),
                                coarse_end=int(coarse_end), middle_end=int(middle_end), latent=latent)
        self.resolution, self.w_dim, self.n_styles, self.latent = resolution, w_dim, n_styles, latent
        self.coarse_end = min(coarse_end, n_styles)
        self.middle_end = min(max(middle_end, self.coarse_end), n_styles)
        block_cls = IRSEBlock if block == "ir_se" else BasicBlock

        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False), make_norm(norm, stem_channels),
                                  nn.PReLU(stem_channels))
        self.stages = nn.ModuleList()
        in_ch = stem_channels
        for out_ch, n_blocks in zip(stage_channels, blocks_per_stage):
            blocks = [block_cls(in_ch, out_ch, 2, norm)]
            blocks += [block_cls(out_ch, out_ch, 1, norm) for _ in range(n_blocks - 1)]
            self.stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        c_fine, c_mid, c_coarse = stage_channels
        self.lateral_coarse = nn.Conv2d(c_coarse, fpn_channels, 1)
        self.lateral_mid = nn.Conv2d(c_mid, fpn_channels, 1)
        self.lateral_fine = nn.Conv2d(c_fine, fpn_channels, 1)
        spatial = {"coarse": resolution // 8, "mid": resolution // 4, "fine": resolution // 2}
        # Each head gives the code of a run of consecutive styles and reads the level of the first of them. Only the
        # first run may be longer than one style (with w_coarse and coarse_end 0 it is style 0 alone: plain W+).
        shared = {"w": n_styles, "w_coarse": max(self.coarse_end, 1)}.get(latent, 1)
        self.head_styles = [(0, shared)] + [(k, 1) for k in range(shared, n_styles)]  # (first style, how many)
        self.heads = nn.ModuleList(Map2Style(fpn_channels, w_dim, spatial[self.level_of(first)], head_init_scale)
                                   for first, _ in self.head_styles)

    def level_of(self, k: int) -> str:
        """Which pyramid level style ``k`` reads: "coarse", "mid" or "fine"."""
        return "coarse" if k < self.coarse_end else "mid" if k < self.middle_end else "fine"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"encoder expects {self.resolution}x{self.resolution} inputs, got {tuple(x.shape)}")
        x = self.stem(x)
        c_fine = self.stages[0](x)
        c_mid = self.stages[1](c_fine)
        c_coarse = self.stages[2](c_mid)
        # FPN top-down path: coarse semantics are added into the higher-resolution levels.
        p_coarse = self.lateral_coarse(c_coarse)
        p_mid = self.lateral_mid(c_mid) + F.interpolate(p_coarse, size=c_mid.shape[-2:], mode="bilinear",
                                                        align_corners=False)
        p_fine = self.lateral_fine(c_fine) + F.interpolate(p_mid, size=c_fine.shape[-2:], mode="bilinear",
                                                           align_corners=False)
        levels = {"coarse": p_coarse, "mid": p_mid, "fine": p_fine}
        return torch.cat([head(levels[self.level_of(first)]).unsqueeze(1).expand(-1, n, -1)
                          for head, (first, n) in zip(self.heads, self.head_styles)], dim=1)


def mix_label(k: int | None) -> str | int:
    """A mixing layer as tables spell it: ``"none"`` for no mixing."""
    return "none" if k is None else k


def mix_with_mean(wplus: torch.Tensor, w_avg: torch.Tensor, from_layer: int | None) -> torch.Tensor:
    """Style mixing with the latent mean: styles ``>= from_layer`` replaced by ``w_avg`` (None: unchanged)."""
    if from_layer is None:
        return wplus
    n_latent = wplus.shape[1]
    if not 0 <= from_layer <= n_latent:
        raise ValueError(f"from_layer must be in [0, {n_latent}] or None, got {from_layer}")
    keep = (torch.arange(n_latent, device=wplus.device) < from_layer).reshape(1, -1, 1)
    return torch.where(keep, wplus, w_avg.to(wplus.dtype).reshape(1, 1, -1))


class RepairNetwork(nn.Module):
    """R_theta: eroded image -> repaired image, through ``encoder`` into W+ of ``generator``.

    The generator is frozen (no gradients, kept in eval mode) unless ``train_decoder``; gradients still flow
    through it into the encoder. Decoding uses fixed ("const") noise by default, so repairs are deterministic.
    """

    def __init__(self, encoder: PSPEncoder, generator: Generator, train_decoder: bool = False):
        super().__init__()
        code_dim = generator.z_dim if encoder.latent == "zplus" else generator.w_dim
        if encoder.n_styles != generator.n_latent or encoder.w_dim != code_dim:
            raise ValueError(f"encoder outputs ({encoder.n_styles}, {encoder.w_dim}) styles but the generator needs "
                             f"({generator.n_latent}, {code_dim}); build the encoder with the generator's "
                             f"resolution and {'z_dim' if encoder.latent == 'zplus' else 'w_dim'}")
        self.encoder = encoder
        self.generator = generator
        self.train_decoder = train_decoder
        generator.requires_grad_(train_decoder)
        if not train_decoder:
            generator.eval()

    def train(self, mode: bool = True) -> "RepairNetwork":
        super().train(mode)
        if not self.train_decoder:
            self.generator.eval()  # a frozen decoder never switches to training behaviour
        return self

    def encode(self, eroded: torch.Tensor) -> torch.Tensor:
        """W+ codes (N, n_latent, w_dim) = encoder offsets + the generator's w_avg (``latent="zplus"``: the
        generator's mapping of the encoder's z, style by style)."""
        out = self.encoder(eroded)
        if self.encoder.latent == "zplus":
            n, n_styles, z_dim = out.shape
            return self.generator.mapping(out.reshape(n * n_styles, z_dim)).reshape(n, n_styles, -1)
        return out + self.generator.w_avg.reshape(1, 1, -1)

    def decode(self, wplus: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        return self.generator.synthesis(wplus, noise_mode=noise_mode)

    def forward(self, eroded: torch.Tensor, mix_from_layer: int | None = None, noise_mode: str = "const",
                return_wplus: bool = False):
        """Repair ``eroded`` (N, 3, R, R) in [-1, 1]; with ``mix_from_layer=k`` styles >= k become w_avg."""
        wplus = mix_with_mean(self.encode(eroded), self.generator.w_avg, mix_from_layer)
        img = self.decode(wplus, noise_mode=noise_mode)
        return (img, wplus) if return_wplus else img
