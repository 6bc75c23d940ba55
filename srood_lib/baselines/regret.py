"""Likelihood Regret (Xiao, Yan & Amit, NeurIPS 2020): how much the NLL of one image drops when the encoder is
optimised for that image alone.

score(x) = NLL(x) - NLL_after(x), where NLL_after uses a copy of the encoder trained on x only for
``regret.n_steps`` Adam steps (reference: 100, lr 2e-4, betas (0.9, 0.999), weight decay 5e-5) on the
single-sample ELBO loss, with BatchNorm frozen (eval mode, running statistics) and the decoder fixed. Both NLLs
are the importance-weighted bound with K = ``regret.iwae_k`` samples (reference: 200 x 5 = 1000) drawn from the
same noise before and after (common random numbers), so the difference is not swamped by estimator noise.

Speed: ``regret.batch_images`` > 1 optimises that many images at once, each with its own encoder copy: the B
copies run as one network of grouped convolutions (groups = B) and the shared decoder sees a batch of B. This is
exact: with BatchNorm in eval mode an image's loss depends only on its own copy, the gradient of the summed loss
w.r.t. copy i is the gradient of image i's loss, and Adam is element-wise, so one Adam over the stacked weights is
B independent Adams (equal to the loop up to float rounding). ``batch_images: 1`` runs the
reference's one-image-at-a-time loop (the tests check both agree).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from srood_lib.baselines.common import STREAM_IWAE, STREAM_REGRET, per_image_noise
from srood_lib.baselines.likelihood import _VAEDetector
from srood_lib.baselines.vae import VAE, gaussian_kl, iwae_nll_from_log_w, iwae_samples
from srood_lib.config import require_keys
from srood_lib.runtime import uint8_to_tensor

REGRET_KEYS = ("n_images", "n_steps", "lr", "adam_betas", "weight_decay", "iwae_k", "batch_images")
DECODE_CHUNK = 64


class _Encoder(nn.Module):
    """The VAE's encoder as one module (shares the VAE's layers): float x in [0, 1] -> (mu, logvar)."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.features, self.to_mu, self.to_logvar = vae.encoder, vae.to_mu, vae.to_logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.to_mu(h).flatten(1), self.to_logvar(h).flatten(1)


def _elbo_loss(vae: VAE, x_u8: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """Sum over images of distortion + rate with one posterior sample (the reference's per-image loss)."""
    z = mu + torch.exp(0.5 * logvar) * eps
    return (-vae.log_px(vae.decode(z), x_u8) + gaussian_kl(mu, logvar)).sum()


def _adam(params, rcfg: dict) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=float(rcfg["lr"]), betas=tuple(map(float, rcfg["adam_betas"])),
                            weight_decay=float(rcfg["weight_decay"]), fused=True)


def _grouped_encode(vae: VAE, params: dict[str, torch.Tensor], xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of B images, image i through its own encoder copy ``params[name][i]``: B copies as one network
    of grouped convolutions (groups = B), BatchNorm in eval mode (running statistics, per-copy affine)."""
    b = len(xf)
    h = xf.reshape(1, b * xf.shape[1], *xf.shape[2:])
    for i, layer in enumerate(vae.encoder):
        if isinstance(layer, nn.Conv2d):
            w = params[f"features.{i}.weight"]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None, layer.stride, layer.padding, groups=b)
        elif isinstance(layer, nn.BatchNorm2d):
            h = F.batch_norm(h, layer.running_mean.repeat(b), layer.running_var.repeat(b),
                             params[f"features.{i}.weight"].reshape(-1), params[f"features.{i}.bias"].reshape(-1),
                             training=False, eps=layer.eps)
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)
        else:
            raise TypeError(f"Likelihood Regret's batched path does not know the VAE encoder layer {layer}")
    out = []
    for name in ("to_mu", "to_logvar"):
        w, bias = params[f"{name}.weight"], params[f"{name}.bias"]
        out.append(F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), groups=b).reshape(b, -1))
    return out[0], out[1]


def optimise_posteriors_batched(vae: VAE, x_u8: torch.Tensor, eps: torch.Tensor,
                                rcfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of B images after optimising B encoder copies at once; ``eps`` (B, n_steps, z)."""
    enc = _Encoder(vae).eval()
    b = len(x_u8)
    params = {n: p.detach().unsqueeze(0).repeat(b, *[1] * p.dim()).clone().requires_grad_(True)
              for n, p in enc.named_parameters()}
    xf = x_u8.float() / 255.0
    opt = _adam(list(params.values()), rcfg)
    for step in range(int(rcfg["n_steps"])):
        mu, logvar = _grouped_encode(vae, params, xf)
        loss = _elbo_loss(vae, x_u8, mu, logvar, eps[:, step])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return _grouped_encode(vae, params, xf)


def optimise_posteriors_loop(vae: VAE, x_u8: torch.Tensor, eps: torch.Tensor,
                             rcfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's way: one deep-copied encoder per image, optimised alone."""
    mus, logvars = [], []
    xf = x_u8.float() / 255.0
    for i in range(len(x_u8)):
        enc = copy.deepcopy(_Encoder(vae)).eval().requires_grad_(True)
        opt = _adam(list(enc.parameters()), rcfg)
        for step in range(int(rcfg["n_steps"])):
            mu, logvar = enc(xf[i:i + 1])
            loss = _elbo_loss(vae, x_u8[i:i + 1], mu, logvar, eps[i:i + 1, step])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            mu, logvar = enc(xf[i:i + 1])
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)


class LikelihoodRegret(_VAEDetector):
    """score(x) = NLL(x) - NLL after per-image encoder optimisation (nats; higher = more OOD).

    ``regret.n_images`` is how many images per set the pipeline scores (a seeded subset: the per-image
    optimisation is the expensive part); ``score`` itself scores every image it is given.
    """

    method = "Likelihood Regret"
    seconds_per_image: float | None = None  # wall time per image of the last score() call

    def __init__(self, config: dict, vae: VAE | None = None):
        require_keys(config, ["regret"], "baselines")
        require_keys(config["regret"], REGRET_KEYS, "baselines.regret")
        super().__init__(config, id=vae)

    def regret_terms(self, images: np.ndarray, progress: bool = False) -> dict[str, np.ndarray]:
        """Per-image ``nll_before``, ``nll_after`` (nats) and ``regret`` = their difference."""
        from srood_lib.progress import tqdm

        vae = self._vae("id").eval().requires_grad_(False)
        rcfg = self.config["regret"]
        seed, k, n_steps = int(self.config["seed"]), int(rcfg["iwae_k"]), int(rcfg["n_steps"])
        batch = int(rcfg["batch_images"])
        optimise = optimise_posteriors_batched if batch > 1 else optimise_posteriors_loop
        data = uint8_to_tensor(images)
        before, after = [], []
        t0 = time.perf_counter()
        with tqdm(total=len(data), disable=not progress, desc="Likelihood Regret", unit="img") as bar:
            for start in range(0, len(data), batch):
                x = data[start:start + batch].to(self.device)
                # the NLL noise is the same stream as vae_statistics', so nll_before equals the Likelihood NLL
                eps_iwae = per_image_noise(seed, start, len(x), (k, vae.z_dim), STREAM_IWAE)
                eps_opt = per_image_noise(seed, start, len(x), (n_steps, vae.z_dim), STREAM_REGRET).to(self.device)
                with torch.no_grad():
                    before.append(iwae_nll_from_log_w(iwae_samples(vae, x, k, eps=eps_iwae,
                                                                   chunk=DECODE_CHUNK)["log_w"]))
                posterior = optimise(vae, x, eps_opt, rcfg)
                with torch.no_grad():
                    after.append(iwae_nll_from_log_w(iwae_samples(vae, x, k, posterior=posterior, eps=eps_iwae,
                                                                  chunk=DECODE_CHUNK)["log_w"]))
                bar.update(len(x))
        self.seconds_per_image = (time.perf_counter() - t0) / max(1, len(data))
        nll_before = torch.cat(before).double().cpu().numpy() if before else np.zeros(0)
        nll_after = torch.cat(after).double().cpu().numpy() if after else np.zeros(0)
        return {"nll_before": nll_before, "nll_after": nll_after, "regret": nll_before - nll_after}

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        return self.regret_terms(images, progress)["regret"]
