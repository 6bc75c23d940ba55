"""The DCGAN-style VAE of Likelihood Regret (Xiao, Yan & Amit, NeurIPS 2020), shared by the VAE baselines.

Architecture as the reference (``DCGAN_VAE_pixel.py``): the encoder halves 32 -> 16 -> 8 -> 4 with 4x4 stride-2
convolutions (BatchNorm + ReLU; widths w, 2w, 4w), then two 4x4 convolutions give the mean and log-variance of a
``z_dim`` Gaussian posterior; the decoder mirrors it with transposed convolutions 1 -> 4 -> 8 -> 16 -> 32 and ends
in 3 * 256 logits: a 256-way categorical distribution for every sub-pixel, so log p(x|z) is a true discrete
likelihood and bits/dim are comparable to other models. Inputs are x / 255 in [0, 1] as in the reference.

Reference settings: z_dim 100, w (``ngf``) 32, batch 128, Adam lr 3e-4 with weight decay 3e-5, 200 epochs,
beta 1, N(0, 0.02) init. Here every one is read from the config; the budget is ``epochs`` (fractions allowed).

Decoder (``decoder`` in the config): ``categorical`` is the reference's. ``logistic_mixture`` is a labelled
deviation for CPU budgets: each sub-pixel gets a discretised mixture of ``mixture_components`` logistics (Salimans
et al. 2017, PixelCNN++, without its channel coupling, so sub-pixels stay conditionally independent given z as
in the reference). It knows that neighbouring values are close, so it learns in a few epochs what the 256-way
categorical needs tens of epochs for (``benchmarks/bench_vae_decoders.py`` measures both). Both are exact
discrete likelihoods over 0..255, so bits/dim mean the same thing.

Deviation: the reference draws the reparameterisation noise from the global RNG; here each step's noise comes
from a generator seeded by (seed, step), so a run is a function of its seed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from srood_lib.baselines.common import LOG_2PI, bits_per_dim
from srood_lib.config import require_keys
from srood_lib.runtime import EpochOrder, step_seed, uint8_to_tensor

VAE_KEYS = ("z_dim", "width", "decoder", "batch_size", "epochs", "lr", "adam_betas", "weight_decay")
DECODERS = ("categorical", "logistic_mixture")
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor: a logistic narrower than this puts all mass on one value anyway


class VAE(nn.Module):
    """Gaussian encoder q(z|x), N(0, I) prior, and a discrete decoder p(x|z) per sub-pixel (see ``decoder``).

    ``decode(z)`` returns the decoder's raw output; ``log_px(out, x)`` and ``value_log_probs(out)`` read it, so
    callers never depend on which decoder is used.
    """

    def __init__(self, resolution: int, z_dim: int, width: int, decoder: str, mixture_components: int):
        super().__init__()
        n = int(round(math.log2(resolution)))
        if 2 ** n != resolution or resolution < 16:
            raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
        if decoder not in DECODERS:
            raise ValueError(f"baselines.vae.decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "logistic_mixture" and mixture_components < 1:
            raise ValueError("baselines.vae.mixture_components must be >= 1 for the logistic_mixture decoder")
        self.init_kwargs = {"resolution": resolution, "z_dim": z_dim, "width": width, "decoder": decoder,
                            "mixture_components": mixture_components}
        self.resolution, self.z_dim, self.decoder_kind = resolution, z_dim, decoder
        # per sub-pixel: 256 logits, or (weight logit, mean, log-scale) for each mixture component
        self.out_per_subpixel = 256 if decoder == "categorical" else 3 * mixture_components
        enc = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for i in range(n - 3):  # down to 4x4
            cin, cout = width * 2 ** i, width * 2 ** (i + 1)
            enc += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.encoder = nn.Sequential(*enc)
        top = width * 2 ** (n - 3)
        self.to_mu, self.to_logvar = nn.Conv2d(top, z_dim, 4), nn.Conv2d(top, z_dim, 4)
        dec = [nn.ConvTranspose2d(z_dim, top, 4, 1, 0, bias=False), nn.BatchNorm2d(top), nn.ReLU(True)]
        ch = top
        for _ in range(n - 3):  # 4 -> resolution / 2
            dec += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        # The reference's last layer has no bias; the mixture keeps one so scales and weights have an offset.
        dec.append(nn.ConvTranspose2d(ch, 3 * self.out_per_subpixel, 4, 2, 1, bias=decoder != "categorical"))
        self.decoder = nn.Sequential(*dec)
        self.apply(_dcgan_init)

    def encode(self, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, H, W) -> posterior (mu, logvar), each (B, z_dim)."""
        h = self.encoder(x_u8.float() / 255.0)
        return self.to_mu(h).flatten(1), self.to_logvar(h).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, 3, H, W, P): P = 256 logits, or 3 * mixture_components mixture parameters.

        Channel c's P outputs are output maps c*P .. c*P+P-1, as in the reference's view. The last layer runs
        channels-last (about 2x faster on the CPU), so the P dimension comes out contiguous and the permutes
        below are free views."""
        h = self.decoder[:-1](z[:, :, None, None]).contiguous(memory_format=torch.channels_last)
        out = self.decoder[-1](h).permute(0, 2, 3, 1)  # (B, H, W, 3 * P)
        p = self.out_per_subpixel
        return out.reshape(len(z), self.resolution, self.resolution, 3, p).permute(0, 3, 1, 2, 4)

    def log_px(self, out: torch.Tensor, x_u8: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per image for the decoder output ``out`` of ``decode``."""
        if self.decoder_kind == "categorical":
            return categorical_log_px(out, x_u8)
        return logistic_mixture_log_px(out, x_u8)

    def value_log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W, 256): log p(value | z) for every sub-pixel and every value 0..255 (each row sums to 1)."""
        if self.decoder_kind == "categorical":
            return F.log_softmax(out, -1)
        return logistic_mixture_log_prob(out.unsqueeze(-2), torch.arange(256, device=out.device))


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_vae(cfg: dict, resolution: int) -> VAE:
    """The VAE a ``baselines.vae`` config describes (``mixture_components`` is read only for that decoder)."""
    require_keys(cfg, VAE_KEYS, "baselines.vae")
    mixture = cfg["decoder"] == "logistic_mixture"
    if mixture:
        require_keys(cfg, ("mixture_components",), "baselines.vae")
    return VAE(resolution, int(cfg["z_dim"]), int(cfg["width"]), str(cfg["decoder"]),
               int(cfg["mixture_components"]) if mixture else 0)


# ------------------------------------------------------------------------------------------------ densities

def categorical_log_px(logits: torch.Tensor, x_u8: torch.Tensor) -> torch.Tensor:
    """log p(x|z) in nats per image: sum over sub-pixels of the categorical log-probability of the true value.

    ``logits`` (B, 3, H, W, 256), ``x_u8`` (B, 3, H, W) uint8.
    """
    b = len(logits)
    flat = logits.permute(0, 2, 3, 1, 4).reshape(-1, 256)  # a view when decode ran channels-last
    target = x_u8.permute(0, 2, 3, 1).reshape(-1).long()
    return -F.cross_entropy(flat, target, reduction="none").view(b, -1).sum(1)


def logistic_mixture_log_prob(params: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """log P(value) per sub-pixel under a discretised logistic mixture; ``params`` (..., 3M), ``values`` an
    integer tensor broadcastable with ``params[..., 0]``.

    Values 0..255 map to bin centres c = 2v/255 - 1 in [-1, 1]; bin v covers c +- 1/255, and the two end bins
    extend to -inf and +inf, so the 256 probabilities sum to exactly 1. With a = (c + 1/255 - m)/s and
    b = (c - 1/255 - m)/s, sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)); its log is computed
    in that form, which is finite even when both sigmoids round to the same float.
    """
    m = params.shape[-1] // 3
    weight_logits, means, log_scales = params[..., :m], params[..., m:2 * m], params[..., 2 * m:]
    log_scales = log_scales.clamp_min(MIN_LOG_SCALE)
    centre = (values.to(params.dtype) * (2.0 / 255.0) - 1.0).unsqueeze(-1)
    inv_s = torch.exp(-log_scales)
    a = inv_s * (centre - means + 1.0 / 255.0)
    b = inv_s * (centre - means - 1.0 / 255.0)
    first = values.unsqueeze(-1) == 0
    last = values.unsqueeze(-1) == 255
    upper = torch.where(last, torch.zeros_like(a), F.logsigmoid(a))  # log P(X <= c + 1/255); 0 at the top bin
    lower_tail = torch.where(first, torch.zeros_like(b), F.logsigmoid(-b))  # log P(X > c - 1/255); 0 at bin 0
    width = torch.where(first | last, torch.zeros_like(a), torch.log(-torch.expm1(b - a)))
    log_bin = upper + lower_tail + width
    return torch.logsumexp(F.log_softmax(weight_logits, -1) + log_bin, -1)


def logistic_mixture_log_px(params: torch.Tensor, x_u8: torch.Tensor) -> torch.Tensor:
    """log p(x|z) in nats per image: ``params`` (B, 3, H, W, 3M) from ``decode``, ``x_u8`` (B, 3, H, W)."""
    return logistic_mixture_log_prob(params, x_u8).flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in nats (the rate)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar)).sum(-1)


def elbo_terms(vae: VAE, x_u8: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image ``rate`` (analytic KL to the prior) and ``distortion`` (-log p(x|z), one z ~ q, nats).

    ELBO = -(rate + distortion). ``generator`` seeds the single posterior sample (CPU generator).
    """
    mu, logvar = vae.encode(x_u8)
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    return {"rate": gaussian_kl(mu, logvar), "distortion": -vae.log_px(vae.decode(z), x_u8)}


@torch.no_grad()
def iwae_samples(vae: VAE, x_u8: torch.Tensor, k: int, generator: torch.Generator | None = None,
                 chunk: int = 256, posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
                 eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """K importance samples z ~ q(z|x) per image and their log-weights, decoded ``chunk`` at a time.

    Returns ``log_w`` (B, K) = log p(x|z) + log p(z) - log q(z|x), ``log_px_z`` (B, K), ``mu``, ``logvar``.
    ``eps`` (B, K, z_dim) replaces the drawn noise (common random numbers, e.g. before/after in Regret).
    """
    mu, logvar = posterior if posterior is not None else vae.encode(x_u8)
    b, d = mu.shape
    if eps is None:
        eps = torch.randn((b, k, d), generator=generator)
    eps = eps.to(mu.device)
    z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps  # (B, K, d)
    log_pz = -0.5 * (LOG_2PI + z.square()).sum(-1)
    log_qz = log_normal(z, mu[:, None], logvar[:, None])
    flat_z = z.reshape(b * k, d)
    owner = torch.arange(b * k, device=x_u8.device) // k  # image of each flattened sample (no B*K image copy)
    log_px_z = torch.cat([vae.log_px(vae.decode(flat_z[i:i + chunk]), x_u8[owner[i:i + chunk]])
                          for i in range(0, b * k, chunk)]).view(b, k)
    return {"log_w": log_px_z + log_pz - log_qz, "log_px_z": log_px_z, "mu": mu, "logvar": logvar}


def iwae_nll_from_log_w(log_w: torch.Tensor) -> torch.Tensor:
    """-log (1/K sum_k exp(log_w_k)) per row: the importance-weighted bound (Burda et al. 2016) as NLL."""
    return -(torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1]))


@torch.no_grad()
def iwae_nll(vae: VAE, x_u8: torch.Tensor, k: int, generator: torch.Generator | None = None,
             chunk: int = 256) -> torch.Tensor:
    """NLL per image in nats from the K-sample importance-weighted ELBO (an upper bound, tight as K grows)."""
    return iwae_nll_from_log_w(iwae_samples(vae, x_u8, k, generator, chunk)["log_w"])


@torch.no_grad()
def sample_images(vae: VAE, n: int, seed: int, mode: bool = False) -> np.ndarray:
    """uint8 (n, H, W, 3) decoded from z ~ N(0, I): each sub-pixel drawn from p(value | z), or its mode."""
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    z = torch.randn((n, vae.z_dim), generator=gen).to(device)
    logits = torch.cat([vae.value_log_probs(vae.decode(z[i:i + 1])).cpu() for i in range(n)])  # (n, 3, H, W, 256)
    if mode:
        values = logits.argmax(-1)
    else:
        u = torch.rand(logits.shape, generator=gen).clamp_min(1e-20)
        values = (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max: an exact categorical draw
    return values.permute(0, 2, 3, 1).to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------------ training

def perturb(x_u8: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Ren et al. (2019) background data: each sub-pixel replaced by a uniform value in 0..255 with prob ``rate``."""
    mask = torch.rand(x_u8.shape, generator=generator) < rate
    noise = torch.randint(0, 256, x_u8.shape, generator=generator, dtype=torch.uint8)
    return torch.where(mask, noise, x_u8)


def train_vae(images: np.ndarray, cfg: dict, seed: int, device: torch.device, progress: bool = True,
              mutation_rate: float = 0.0) -> VAE:
    """Train a VAE on uint8 ``images`` (N, H, W, 3) for ``cfg["epochs"]`` epochs; returns it in eval mode.

    Loss per batch: mean over images of distortion + rate (beta = 1), one posterior sample, as the reference.
    ``mutation_rate`` > 0 trains on perturbed inputs (the background model of the likelihood ratio).
    """
    from srood_lib.progress import tqdm

    data = uint8_to_tensor(images)
    torch.manual_seed(seed)  # initial weights are a function of the seed
    vae = build_vae(cfg, data.shape[-1]).to(device)  # checks the config's keys first
    opt = torch.optim.Adam(vae.parameters(), lr=float(cfg["lr"]), betas=tuple(map(float, cfg["adam_betas"])),
                           weight_decay=float(cfg["weight_decay"]))
    batch = int(cfg["batch_size"])
    total = max(1, int(math.ceil(float(cfg["epochs"]) * len(data) / batch)))
    order = EpochOrder(len(data), batch, seed)
    vae.train()
    bar = tqdm(range(total), disable=not progress, desc="VAE" + (" (background)" if mutation_rate else ""),
               unit="step")
    for step in bar:
        gen = torch.Generator().manual_seed(step_seed(seed, step, stream=11))
        x = data[order.indices(step)]
        if mutation_rate:
            x = perturb(x, mutation_rate, gen)
        x = x.to(device)
        terms = elbo_terms(vae, x, gen)
        rate, dist = terms["rate"].mean(), terms["distortion"].mean()
        loss = dist + rate
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == total - 1:
            bar.set_postfix(bpd=f"{bits_per_dim(loss.item(), x[0].numel()):.3f}", rate=f"{rate.item():.1f}",
                            refresh=False)
    return vae.eval().requires_grad_(False)


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's state (names, shapes, bytes): identifies a trained model for memoised scores."""
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
