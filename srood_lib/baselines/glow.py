"""A small multi-scale Glow (Kingma & Dhariwal 2018) and the "Glow (diff to None / PNG)" baselines of Table I
(Serrà et al. 2020, "Input complexity and out-of-distribution detection with likelihood-based generative models").

Flow: uniform dequantisation y = (x + u) / 256 - 0.5; then L levels of [squeeze 2x2 -> K steps of (actnorm with
data-dependent init, invertible 1x1 convolution in LU form, affine coupling with sigmoid scale) -> split half the
channels off under a Gaussian prior conditioned on the other half]; the last level's output has a learned
diagonal Gaussian prior ("learntop"). NLL(x) in bits/dim = (-log p(y) + D log 256) / (D log 2).

Reference (CIFAR-10): L = 3, K = 32, coupling width 512, Adam lr 1e-3 with warm-up. Levels, steps, width,
batch, epochs, lr, warm-up and gradient clipping come from ``baselines.glow``. Deviations: no additive-coupling
option and no class conditioning; the coupling network is conv3x3-actnorm-ReLU-conv1x1-actnorm-ReLU-zero conv3x3
as in the reference, without its "logscale_factor" of 3 on the zero convolutions (a plain learned scale instead).

Scores (higher = more OOD): "none": NLL bits/dim; "png": NLL bits/dim - PNG bits/dim, Serra et al.'s
S(x) = -l_M(x) - L(x) with l_M(x) = log2 p(x) the model's log-likelihood and L(x) the compressed length, both per
dimension.
"""
from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from srood_lib.baselines.common import (LOG_2PI, STREAM_GLOW_DEQUANT, bits_per_dim, load_detector_blob,
                                        module_blob, module_from_blob, per_image_noise, save_detector,
                                        split_holdout)
from srood_lib.config import require_keys
from srood_lib.runtime import EpochOrder, resolve_device, step_seed, uint8_to_tensor

GLOW_KEYS = ("levels", "steps", "hidden", "batch_size", "epochs", "lr", "adam_betas", "warmup_steps",
             "grad_clip", "sample_temperature")


class ActNorm(nn.Module):
    """Per-channel affine y = (x + loc) * exp(logs), initialised from the first batch to zero mean, unit var."""

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        mean = x.mean((0, 2, 3), keepdim=True)
        std = x.std((0, 2, 3), keepdim=True, unbiased=False)
        self.loc.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._init(x)
        return (x + self.loc) * torch.exp(self.logs), self.logs.sum() * x.shape[2] * x.shape[3]

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.loc


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, W = P L (U + diag(sign * exp(log_s))) (the reference's LU form):
    log|det| = H * W * sum(log_s). Initialised from a random rotation."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self) -> torch.Tensor:
        eye = torch.eye(len(self.log_s), device=self.log_s.device)
        lower = self.lower * self.l_mask + eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight()
        return F.conv2d(x, w[:, :, None, None]), self.log_s.sum() * x.shape[2] * x.shape[3]

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class ZeroConv(nn.Module):
    """3x3 convolution initialised to zero with a learned per-channel output scale: a flow starts as identity."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs)


class CouplingNet(nn.Module):
    def __init__(self, cin: int, cout: int, hidden: int):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(cin, hidden, 3, padding=1, bias=False), ActNorm(hidden)
        self.conv2, self.norm2 = nn.Conv2d(hidden, hidden, 1, bias=False), ActNorm(hidden)
        self.out = ZeroConv(hidden, cout)
        nn.init.normal_(self.conv1.weight, 0, 0.05)
        nn.init.normal_(self.conv2.weight, 0, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x))[0])
        h = F.relu(self.norm2(self.conv2(h))[0])
        return self.out(h)


class AffineCoupling(nn.Module):
    """x = [xa, xb]: yb = (xb + shift(xa)) * sigmoid(raw(xa) + 2), ya = xa."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = CouplingNet(channels // 2, channels, hidden)

    def _shift_scale(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(xa)
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x.chunk(2, 1)
        shift, scale = self._shift_scale(xa)
        return torch.cat([xa, (xb + shift) * scale], 1), torch.log(scale).flatten(1).sum(1)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y.chunk(2, 1)
        shift, scale = self._shift_scale(ya)
        return torch.cat([ya, yb / scale - shift], 1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvConv1x1(channels), AffineCoupling(channels, hidden)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(len(x), device=x.device)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.reverse(y)
        return y


def squeeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logs: torch.Tensor) -> torch.Tensor:
    """sum over all but the batch dimension of log N(z; mean, exp(logs)^2)."""
    return (-0.5 * (LOG_2PI + 2 * logs + (z - mean).square() * torch.exp(-2 * logs))).flatten(1).sum(1)


class Glow(nn.Module):
    """Multi-scale Glow on (B, 3, R, R) inputs in [-0.5, 0.5]."""

    def __init__(self, resolution: int, levels: int, steps: int, hidden: int):
        super().__init__()
        if resolution % (2 ** levels):
            raise ValueError(f"resolution {resolution} is not divisible by 2^levels = {2 ** levels}")
        self.init_kwargs = {"resolution": resolution, "levels": levels, "steps": steps, "hidden": hidden}
        self.levels = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        c, r = 3, resolution
        for level in range(levels):
            c, r = c * 4, r // 2
            self.levels.append(nn.ModuleList([FlowStep(c, hidden) for _ in range(steps)]))
            if level < levels - 1:
                self.split_priors.append(ZeroConv(c // 2, c))  # mean and log-std of the factored-out half
                c //= 2
        self.top_shape = (c, r, r)
        self.top_mean = nn.Parameter(torch.zeros(1, *self.top_shape))
        self.top_logs = nn.Parameter(torch.zeros(1, *self.top_shape))

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(latents from each level, log|det dz/dy| per image, log prior of the latents per image)."""
        logdet = torch.zeros(len(y), device=y.device)
        log_prior = torch.zeros(len(y), device=y.device)
        zs, h = [], y
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < len(self.levels) - 1:
                h, z = h.chunk(2, 1)
                p = self.split_priors[i](h)
                log_prior = log_prior + gaussian_log_density(z, p[:, 0::2], p[:, 1::2])
                zs.append(z)
        log_prior = log_prior + gaussian_log_density(h, self.top_mean, self.top_logs)
        zs.append(h)
        return zs, logdet, log_prior

    def reverse(self, zs: list[torch.Tensor]) -> torch.Tensor:
        h = zs[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                h = torch.cat([h, zs[i]], 1)
            for step in reversed(self.levels[i]):
                h = step.reverse(h)
            h = unsqueeze(h)
        return h

    @torch.no_grad()
    def sample(self, n: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
        """n samples y in data space, latents drawn at ``temperature`` x the prior's standard deviation."""
        device = self.top_mean.device
        noise = lambda shape: torch.randn(shape, generator=generator).to(device)  # noqa: E731
        h = self.top_mean + torch.exp(self.top_logs) * temperature * noise((n, *self.top_shape))
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                p = self.split_priors[i](h)
                z = p[:, 0::2] + torch.exp(p[:, 1::2]) * temperature * noise(p[:, 0::2].shape)
                h = torch.cat([h, z], 1)
            for step in reversed(self.levels[i]):
                h = step.reverse(h)
            h = unsqueeze(h)
        return h


def dequantise(x_u8: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """uint8 -> continuous y = (x + u) / 256 - 0.5 with u in [0, 1)."""
    return (x_u8.float() + u) / 256.0 - 0.5


def nll_bits_per_dim(flow: Glow, y: torch.Tensor) -> torch.Tensor:
    """Discrete NLL bound per image in bits/dim from the dequantised density: -log p(y) + D log 256."""
    _, logdet, log_prior = flow(y)
    dims = y[0].numel()
    return bits_per_dim(-(log_prior + logdet) + dims * math.log(256.0), dims)


def train_glow(images: np.ndarray, cfg: dict, seed: int, device: torch.device, progress: bool = True) -> Glow:
    """Train on uint8 ``images`` for ``cfg["epochs"]`` epochs (fresh uniform dequantisation noise every step);
    actnorm layers initialise from the first batch. Returns the flow in eval mode."""
    from srood_lib.progress import tqdm

    require_keys(cfg, GLOW_KEYS, "baselines.glow")
    data = uint8_to_tensor(images)
    torch.manual_seed(seed)
    flow = Glow(data.shape[-1], int(cfg["levels"]), int(cfg["steps"]), int(cfg["hidden"])).to(device)
    opt = torch.optim.Adam(flow.parameters(), lr=float(cfg["lr"]), betas=tuple(map(float, cfg["adam_betas"])))
    warmup = max(1, int(cfg["warmup_steps"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    batch = int(cfg["batch_size"])
    total = max(1, int(math.ceil(float(cfg["epochs"]) * len(data) / batch)))
    order = EpochOrder(len(data), batch, seed)
    flow.train()
    bar = tqdm(range(total), disable=not progress, desc="Glow", unit="step")
    for step in bar:
        gen = torch.Generator().manual_seed(step_seed(seed, step, stream=12))
        x = data[order.indices(step)]
        y = dequantise(x, torch.rand(x.shape, generator=gen)).to(device)
        loss = nll_bits_per_dim(flow, y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), float(cfg["grad_clip"]))
        opt.step()
        sched.step()
        if step % 10 == 0 or step == total - 1:
            bar.set_postfix(bpd=f"{loss.item():.3f}", refresh=False)
    return flow.eval().requires_grad_(False)


class GlowNLL:
    """"Glow (diff to None)" (``diff="none"``: score = NLL bits/dim) or "Glow (diff to PNG)" (``diff="png"``:
    score = NLL bits/dim - PNG bits/dim). A trained ``flow`` can be shared by both.

    Scoring draws one dequantisation sample per image, seeded by (seed, image index).
    """

    METHODS = {"none": "Glow (diff to None)", "png": "Glow (diff to PNG)"}

    def __init__(self, config: dict, diff: str, flow: Glow | None = None):
        require_keys(config, ["glow", "n_holdout", "score_batch", "seed", "device"], "baselines")
        require_keys(config["glow"], GLOW_KEYS, "baselines.glow")
        if diff not in self.METHODS:
            raise ValueError(f"diff must be one of {sorted(self.METHODS)}, got {diff!r}")
        self.config, self.diff = copy.deepcopy(config), diff
        self.method = self.METHODS[diff]
        self.device = resolve_device(config["device"])
        self.flow = None if flow is None else flow.to(self.device)
        self.seconds_per_image: float | None = None

    def fit(self, images: np.ndarray, progress: bool = True) -> "GlowNLL":
        """Train the flow (unless given) on the ID images minus the same held-out split as the VAE baselines."""
        if self.flow is None:
            train, _ = split_holdout(images, int(self.config["n_holdout"]), int(self.config["seed"]))
            self.flow = train_glow(train, self.config["glow"], int(self.config["seed"]), self.device, progress)
        return self

    def _require_flow(self) -> Glow:
        if self.flow is None:
            raise RuntimeError("GlowNLL has no trained flow: call fit(...) or load(path)")
        return self.flow

    @torch.no_grad()
    def nll_bits_per_dim(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        from srood_lib.progress import tqdm

        flow = self._require_flow()
        data = uint8_to_tensor(images)
        batch, seed = int(self.config["score_batch"]), int(self.config["seed"])
        out = []
        t0 = time.perf_counter()
        for start in tqdm(range(0, len(data), batch), disable=not progress, desc="Glow log p(x)", unit="batch"):
            x = data[start:start + batch]
            u = per_image_noise(seed, start, len(x), tuple(x.shape[1:]), STREAM_GLOW_DEQUANT, kind="uniform")
            out.append(nll_bits_per_dim(flow, dequantise(x, u).to(self.device)).double().cpu())
        self.seconds_per_image = (time.perf_counter() - t0) / max(1, len(data))
        return torch.cat(out).numpy() if out else np.zeros(0)

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        nll = self.nll_bits_per_dim(images, progress)
        if self.diff == "png":
            from srood_lib.compression import png_bits_per_dim

            return nll - png_bits_per_dim(images)
        return nll

    @torch.no_grad()
    def sample_images(self, n: int, seed: int) -> np.ndarray:
        """uint8 (n, H, W, 3) samples at the configured temperature."""
        gen = torch.Generator().manual_seed(seed)
        y = self._require_flow().sample(n, float(self.config["glow"]["sample_temperature"]), gen).cpu()
        x = torch.floor((y + 0.5) * 256).clamp(0, 255)
        return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()

    def save(self, path: str | os.PathLike) -> Path:
        return save_detector(self, path, {"flow": module_blob(self._require_flow())}, {"diff": self.diff})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "GlowNLL":
        blob = load_detector_blob(path, cls.__name__)
        config = blob["config"] if device is None else {**blob["config"], "device": device}
        det = cls(config, blob["state"]["diff"])
        det.flow = module_from_blob(Glow, blob["models"]["flow"], det.device)
        return det
