"""Training the StyleGAN2 prior (the frozen decoder of the repair network) on in-distribution images.

Recipe (StyleGAN2 / StyleGAN2-ADA): non-saturating logistic loss, lazy R1 on reals, EMA generator, mixing
regularisation, equalized learning rate with a slower mapping network, Adam(0, 0.99), optional DiffAugment
(colour / translation / cutout, applied to real and fake images before D). The budget is in images shown (kimg).

Determinism and resume: the data order comes from per-epoch permutations seeded by (seed, epoch), and every
random draw of step ``s`` comes from RNGs seeded by (seed, s) (inside ``torch.random.fork_rng``, so the caller's
global RNG is untouched). A checkpoint therefore only needs weights, optimiser states, the step and the seed:
a killed run resumed from ``prior.pt`` ends with the same weights as an uninterrupted run (bitwise on CPU).

The config section (``cfg``) is plain data; every key is required (see ``REQUIRED_KEYS``), so the profile YAML
is the only place where the recipe is set.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from srood_lib.config import config_hash, require_keys
from srood_lib.distributed import World, check_mbstd, world as distributed_world
from srood_lib.data import to_uint8
from srood_lib.models.stylegan2 import Discriminator, Generator
from srood_lib.runtime import (EpochOrder, atomic_torch_save, autocast_bf16, data_fingerprint, resolve_device,
                               safe_torch_load, step_seed, to_float_images, uint8_to_tensor)

CHECKPOINT_NAME = "prior.pt"
LOSSES_NAME = "losses.csv"
CHECKPOINT_FORMAT = "srood-prior-v1"
LOG_EVERY = 10  # steps between loss flushes (one device sync per flush, not per step)
LOSS_COLUMNS = ["step", "kimg", "d_loss", "g_loss", "r1_penalty", "real_logit", "fake_logit", "seconds"]

REQUIRED_KEYS = ["resolution", "generator", "discriminator", "batch_size", "kimg", "g_lr", "d_lr", "adam_betas",
                 "r1_gamma", "r1_interval", "ema_kimg", "ema_rampup", "mixing_prob", "w_avg_beta", "diffaug",
                 "checkpoint_kimg", "bf16", "channels_last"]
# Keys that may change between a run and its resume (budget and bookkeeping, not the recipe).
RESUMABLE_KEYS = ("kimg", "checkpoint_kimg", "snapshot_kimg")
SNAPSHOT_DIR = "snapshots"  # EMA generators kept at the optional ``snapshot_kimg`` budgets (for budget curves)


# ------------------------------------------------------------------------------------------- small helpers

def check_cfg(cfg: dict) -> None:
    """Raise a KeyError naming every missing key of the prior config section."""
    require_keys(cfg, REQUIRED_KEYS, "prior")
    if "channels" not in cfg["generator"] or "channels" not in cfg["discriminator"]:
        raise KeyError("prior.generator.channels and prior.discriminator.channels are required")


def precision_plan(cfg: dict, device: torch.device) -> tuple[bool, torch.memory_format]:
    """(bf16 autocast?, memory format) for this device.

    CUDA: ``bf16`` and ``channels_last`` as configured. CPU: bf16 autocast only where the optional ``bf16_cpu`` is
    true and the CPU has native bf16 (``runtime.autocast_bf16``); ``channels_last`` for an fp32 step (1.24x NCHW on
    an AVX2 CPU, ``benchmarks/bench_repair_train.py``), NCHW for a bf16 one (as before; not re-measured).
    """
    use_bf16 = autocast_bf16(device, cfg["bf16"], cfg.get("bf16_cpu", False), "prior training")
    nhwc = bool(cfg["channels_last"]) and (device.type == "cuda" or not use_bf16)
    return use_bf16, (torch.channels_last if nhwc else torch.contiguous_format)


def build_generator(cfg: dict) -> Generator:
    """The generator described by a prior config section (``generator`` holds Generator kwargs)."""
    return Generator(resolution=int(cfg["resolution"]), **cfg["generator"])


def build_discriminator(cfg: dict) -> Discriminator:
    return Discriminator(resolution=int(cfg["resolution"]), **cfg["discriminator"])


# --------------------------------------------------------------------------------------------- DiffAugment

def diff_augment(x: torch.Tensor, policy: str | None) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020) with policy "color,translation,cutout" (any subset).

    Uses the global torch RNG (seeded per step by the trainer). Identity when the policy is empty.
    """
    if not policy:
        return x
    for name in [p.strip() for p in policy.split(",") if p.strip()]:
        if name == "color":
            x = _augment_color(x)
        elif name == "translation":
            x = _augment_translation(x, ratio=0.125)
        elif name == "cutout":
            x = _augment_cutout(x, ratio=0.5)
        else:
            raise ValueError(f"unknown diffaug op {name!r}; use a subset of 'color,translation,cutout'")
    return x


def _augment_color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    rand = lambda: torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (rand() - 0.5)  # brightness
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (rand() * 2) + mean_c  # saturation
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_all) * (rand() + 0.5) + mean_all  # contrast


def _augment_translation(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in x and y, filling with zeros."""
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    src_y = torch.arange(h, device=x.device).reshape(1, h, 1) - dy  # output pixel (y, x) reads (y-dy, x-dx)
    src_x = torch.arange(w, device=x.device).reshape(1, 1, w) - dx
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)  # (n, h, w)
    flat_index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).reshape(n, 1, h * w).expand(-1, c, -1)
    shifted = x.reshape(n, c, h * w).gather(2, flat_index).reshape(n, c, h, w)
    return shifted * inside.unsqueeze(1).to(x.dtype)


def _augment_cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero one square of side ratio * size per image, at a uniformly random centre."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).reshape(1, h, 1)
    xs = torch.arange(w, device=x.device).reshape(1, 1, w)
    cut = ((ys - cy + size_y // 2) >= 0) & ((ys - cy + size_y // 2) < size_y) \
        & ((xs - cx + size_x // 2) >= 0) & ((xs - cx + size_x // 2) < size_x)
    return x * (~cut).unsqueeze(1).to(x.dtype)


# ------------------------------------------------------------------------------------------ checkpointing

def checkpoint_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def snapshot_path(out_dir: str | os.PathLike, kimg: float) -> Path:
    """Where the EMA generator at ``kimg`` of a run in ``out_dir`` is kept (``load_prior`` reads it)."""
    folder = Path(out_dir) / SNAPSHOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"prior_{kimg:g}kimg.pt"


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The raw checkpoint dict of a prior run (``path``: the run folder or the ``prior.pt`` file)."""
    path = checkpoint_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no prior checkpoint at {path}; train one with train_prior(...)")
    ckpt = safe_torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format={found!r})")
    return ckpt


def load_prior(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator of a prior checkpoint, in eval mode with gradients off (the frozen decoder)."""
    device = resolve_device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    G = Generator(**ckpt["G_kwargs"])
    G.load_state_dict(ckpt["G_ema"])
    G.requires_grad_(False)
    return G.eval().to(device)


def recipe_hash(cfg: dict) -> str:
    """Hash of the recipe: the keys the trainer reads, except the budget/bookkeeping ones (kimg may grow)."""
    return config_hash({k: cfg[k] for k in REQUIRED_KEYS if k not in RESUMABLE_KEYS})


def _write_losses_csv(path: Path, rows: list[list[float]], mode: str) -> None:
    with open(path, mode, newline="") as f:
        writer = csv.writer(f)
        if mode == "w":
            writer.writerow(LOSS_COLUMNS)
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------- training

def _ema_beta(cfg: dict, batch_size: int, nimg: int) -> float:
    ema_nimg = cfg["ema_kimg"] * 1000.0
    if cfg["ema_rampup"]:
        ema_nimg = min(ema_nimg, nimg * cfg["ema_rampup"])  # short memory early on, as in StyleGAN2-ADA
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def _update_ema(G_ema: Generator, G: Generator, beta: float) -> None:
    ema_params = list(G_ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _mixing_plan(cfg: dict, n_latent: int, seed: int, step: int) -> int | None:
    """Crossover layer for this step's mixing regularisation, or None (no mixing)."""
    rng = np.random.default_rng(step_seed(seed, step, stream=2))
    if rng.random() < cfg["mixing_prob"]:
        return int(rng.integers(1, n_latent))
    return None


def train_step(G, D, G_opt, D_opt, real: torch.Tensor, cfg: dict, step: int, seed: int,
               device: torch.device, use_bf16: bool, world: World = World()) -> torch.Tensor:
    """One G update and one D update (with R1 every ``r1_interval`` steps). Returns the step's stats tensor.

    The fake batch is generated once: D trains on it detached, then G's loss reuses the same graph (saves one
    generator forward per step). ``real`` is this process's shard of the global batch (``srood_lib.distributed``):
    latents are drawn for the whole global batch and sharded, gradients averaged over the processes.
    """
    batch = real.shape[0] * world.size
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)
    crossover = _mixing_plan(cfg, G.n_latent, seed, step)
    z = world.shard(torch.randn(batch, G.z_dim, device=device))
    z2 = world.shard(torch.randn(batch, G.z_dim, device=device)) if crossover is not None else None
    world.reseed_own(step_seed(seed, step, stream=10))  # noise inputs and DiffAugment: drawn per shard
    policy = cfg["diffaug"]

    # Generator forward (kept for the G step).
    G.requires_grad_(True)
    with autocast:
        fake, wplus = G(z=z, z2=z2, crossover=crossover, noise_mode="random", return_wplus=True)

    # Discriminator step: logistic loss on real and (detached) fake; R1 on the real pass every r1_interval.
    D.requires_grad_(True)
    do_r1 = cfg["r1_gamma"] > 0 and step % cfg["r1_interval"] == 0
    real = real.detach().requires_grad_(do_r1)
    with autocast:
        fake_logits = D(diff_augment(fake.detach(), policy))
    # The R1 pass runs in fp32: a bf16 gradient penalty would be too coarse.
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16 and not do_r1):
        real_logits = D(diff_augment(real, policy))
    d_loss = F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()
    if do_r1:
        (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
        r1_penalty = grad.square().sum(dim=(1, 2, 3)).mean()
        d_total = d_loss + r1_penalty * (cfg["r1_gamma"] / 2 * cfg["r1_interval"])  # lazy: scaled by interval
    else:
        r1_penalty = torch.full((), float("nan"), device=device)
        d_total = d_loss
    D_opt.zero_grad(set_to_none=True)
    d_total.backward()
    world.average_gradients(D.parameters())
    D_opt.step()

    # Generator step: non-saturating loss through the just-updated D (its weights frozen for this pass).
    D.requires_grad_(False)
    with autocast:
        gen_logits = D(diff_augment(fake, policy))
    g_loss = F.softplus(-gen_logits.float()).mean()
    G_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    world.average_gradients(G.parameters())
    G_opt.step()
    G.update_w_avg(world.average(wplus[:, 0].detach().float().mean(dim=0, keepdim=True)), cfg["w_avg_beta"])

    return world.average(torch.stack([d_loss.detach(), g_loss.detach(), r1_penalty.detach(),
                                      real_logits.detach().float().mean(), fake_logits.detach().float().mean()]))


def train_prior(images_uint8: np.ndarray, cfg: dict, out_dir: str | os.PathLike, seed: int,
                device: str | torch.device = "auto", progress: bool = True,
                callback: Callable[[int], None] | None = None) -> Path:
    """Train (or resume) the StyleGAN2 prior on ``images_uint8`` (N, R, R, 3); returns the checkpoint path.

    Writes ``out_dir/prior.pt`` every ``checkpoint_kimg`` and at the end, and appends per-step losses to
    ``out_dir/losses.csv``. An existing ``prior.pt`` in ``out_dir`` is resumed (same recipe, seed and data
    required; ``kimg`` may grow). ``callback(steps_done)`` is called after every step (tests use it to simulate
    a kill). On CUDA, ``cfg["bf16"]`` enables bf16 autocast and ``cfg["channels_last"]`` the NHWC layout; on
    CPU both are ignored (fp32, NCHW).
    """
    check_cfg(cfg)
    world = distributed_world(device)  # under torchrun: this process's share of the work (srood_lib.distributed)
    device = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_file, losses_file = out_dir / CHECKPOINT_NAME, out_dir / LOSSES_NAME
    resolution, batch = int(cfg["resolution"]), int(cfg["batch_size"])
    world.check_batch(batch)
    check_mbstd(world, batch, int(cfg["discriminator"]["mbstd_group"]))
    images_u8 = uint8_to_tensor(images_uint8)
    if images_u8.shape[-1] != resolution or images_u8.shape[-2] != resolution:
        raise ValueError(f"images are {images_u8.shape[-2]}x{images_u8.shape[-1]} but prior.resolution is "
                         f"{resolution}; resize the data or change the config")
    if images_u8.shape[0] < batch:
        raise ValueError(f"need at least batch_size={batch} images, got {images_u8.shape[0]}")
    fingerprint = data_fingerprint(images_uint8)
    total_steps = math.ceil(cfg["kimg"] * 1000 / batch)
    ckpt_every_nimg = max(int(cfg["checkpoint_kimg"] * 1000), 1)
    use_cuda = device.type == "cuda"
    use_bf16, memory_format = precision_plan(cfg, device)

    # Models are initialised from a seed-derived RNG, so a fresh run is a function of (seed, cfg) only.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(seed, 0, stream=3))
        G, D = build_generator(cfg), build_discriminator(cfg)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = tuple(float(b) for b in cfg["adam_betas"])  # YAML may give ints ([0, 0.99])
    G_opt = torch.optim.Adam(G.parameters(), lr=cfg["g_lr"], betas=betas, eps=1e-8)
    D_opt = torch.optim.Adam(D.parameters(), lr=cfg["d_lr"], betas=betas, eps=1e-8)

    step, history, seconds_before = 0, [], 0.0
    if ckpt_file.exists():
        ckpt = load_checkpoint(ckpt_file, map_location="cpu")
        if ckpt["seed"] != seed or ckpt["recipe_hash"] != recipe_hash(cfg) or ckpt["data"] != fingerprint:
            raise ValueError(f"{ckpt_file} was trained with a different seed, recipe or dataset; use a new out_dir "
                             f"or delete the checkpoint to start over")
        G.load_state_dict(ckpt["G"])
        D.load_state_dict(ckpt["D"])
        G_ema.load_state_dict(ckpt["G_ema"])
        step, history, seconds_before = ckpt["step"], ckpt["history"], ckpt["seconds"]
    world.check_same(step, "the step to resume at")
    for model in (G, D, G_ema):
        model.to(device=device, memory_format=memory_format)
    if ckpt_file.exists():  # optimiser states after the params moved (load_state_dict follows param devices)
        G_opt.load_state_dict(ckpt["G_opt"])
        D_opt.load_state_dict(ckpt["D_opt"])
        del ckpt
    if world.main:
        _write_losses_csv(losses_file, history, "w")  # drops rows a killed run wrote after its last checkpoint
    G.train()
    D.train()
    images_u8 = images_u8.to(device)
    order = EpochOrder(images_u8.shape[0], batch, seed)

    def save(current_step: int, seconds: float) -> None:
        if not world.main:
            return
        atomic_torch_save(dict(
            format=CHECKPOINT_FORMAT, cfg=copy.deepcopy(cfg), recipe_hash=recipe_hash(cfg), seed=seed,
            data=fingerprint, n_images=int(images_u8.shape[0]), step=current_step, nimg=current_step * batch,
            seconds=seconds, G_kwargs=G.init_kwargs, D_kwargs=D.init_kwargs,
            G={k: v.cpu() for k, v in G.state_dict().items()}, D={k: v.cpu() for k, v in D.state_dict().items()},
            G_ema={k: v.cpu() for k, v in G_ema.state_dict().items()},
            G_opt=G_opt.state_dict(), D_opt=D_opt.state_dict(), history=history,
            rng=dict(scheme="per-step seeds: step_seed(seed, step, stream); data order per epoch"),
        ), ckpt_file)

    bar = None
    if progress and world.main:
        from srood_lib.progress import tqdm
        bar = tqdm(total=total_steps, initial=step, desc="prior", unit="step", dynamic_ncols=True)
    pending: list[tuple[int, float, torch.Tensor]] = []  # (step, wall seconds so far, stats)
    start, start_step = time.time(), step

    def flush() -> None:
        if not pending:
            return
        stats = torch.stack([s for _, _, s in pending]).cpu().tolist()
        rows = [[st + 1, (st + 1) * batch / 1000, *vals, round(sec, 3)] for (st, sec, _), vals in zip(pending, stats)]
        history.extend(rows)
        if world.main:
            _write_losses_csv(losses_file, rows, "a")
        pending.clear()
        if bar is not None:
            rate = (step - start_step) * batch / max(time.time() - start, 1e-9)
            last = rows[-1]
            bar.set_postfix(d=f"{last[2]:.3f}", g=f"{last[3]:.3f}", img_s=f"{rate:.1f}", refresh=False)

    try:
        while step < total_steps:
            real = to_float_images(images_u8[world.shard(order.indices(step)).to(device)])
            real = real.contiguous(memory_format=memory_format)
            with torch.random.fork_rng(devices=[device] if use_cuda else [], device_type=device.type):
                torch.manual_seed(step_seed(seed, step))
                stats = train_step(G, D, G_opt, D_opt, real, cfg, step, seed, device, use_bf16, world)
            _update_ema(G_ema, G, _ema_beta(cfg, batch, (step + 1) * batch))
            pending.append((step, seconds_before + time.time() - start, stats))
            step += 1
            if bar is not None:
                bar.update(1)
            nimg = step * batch
            if len(pending) >= LOG_EVERY:
                flush()
            for kimg in cfg.get("snapshot_kimg") or ():
                if nimg - batch < kimg * 1000 <= nimg and world.main:
                    atomic_torch_save(dict(format=CHECKPOINT_FORMAT, G_kwargs=G.init_kwargs, step=step, nimg=nimg,
                                           seed=seed, cfg=copy.deepcopy(cfg),
                                           G_ema={k: v.cpu() for k, v in G_ema.state_dict().items()}),
                                      snapshot_path(out_dir, kimg))
            if nimg // ckpt_every_nimg > (nimg - batch) // ckpt_every_nimg or step == total_steps:
                flush()
                save(step, seconds_before + time.time() - start)
            if callback is not None:
                callback(step)
    finally:
        flush()  # an interrupted run still logs its last steps (a resume drops rows past the checkpoint)
        if bar is not None:
            bar.close()
    if not ckpt_file.exists():  # resumed a finished run with a smaller kimg: nothing to do, but keep the file
        save(step, seconds_before)
    world.barrier()  # the other processes return once process 0 has written the checkpoint
    return ckpt_file


# ---------------------------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_images(G: Generator, n: int, seed: int, truncation: float = 1.0, batch_size: int = 64,
                  noise_mode: str = "const") -> np.ndarray:
    """``n`` samples of G as uint8 (n, R, R, 3); z drawn from a CPU generator seeded with ``seed``."""
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    was_training = G.training
    G.eval()
    out = [to_uint8(G(z=z[i:i + batch_size].to(device), truncation=truncation, noise_mode=noise_mode))
           for i in range(0, n, batch_size)]
    G.train(was_training)
    return np.concatenate(out)
