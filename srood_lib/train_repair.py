"""Algorithm 1 of the paper: train the repair network R_theta (pSp encoder into a frozen StyleGAN2 prior).

For every image of a batch an erosion T_u is drawn uniformly from the variant's set (identity for SR-OOD_Rec,
bicubic factors for SR-OOD_SR, black-out rectangles for SR-OOD_Inpaint); the loss is
``lambda_l2 * L2(R(T_u(x)), x) + lambda_lpips * LPIPS(R(T_u(x)), x)`` (the paper: 1 and 0.8). A lever beyond the
paper, off in the faithful recipe: e4e's delta regularisation of the W+ code (``lambda_delta``) and pSp's
W-norm penalty on its offset from w_avg (``lambda_wnorm``). ``lr_decay_fraction`` (0 = constant, pSp's schedule)
decays the learning rate linearly to 0 over that last share of the steps.

Determinism and resume follow train_prior: the batch order and every random draw of step ``s`` are functions of
(seed, s), so a killed run resumed from ``repair.pt`` ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import torch

from srood_lib.config import config_hash, require_keys
from srood_lib.distributed import sync_batchnorm, world as distributed_world
from srood_lib.erosion import apply_random_erosions, erosion_set
from srood_lib.models.psp import PSPEncoder, RepairNetwork
from srood_lib.models.stylegan2 import Generator
from srood_lib.perceptual import distance
from srood_lib.runtime import (EpochOrder, atomic_torch_save, autocast_bf16, data_fingerprint, resolve_device,
                               safe_torch_load, step_seed, to_float_images, uint8_to_tensor)

CHECKPOINT_NAME = "repair.pt"
LOSSES_NAME = "losses.csv"
CHECKPOINT_FORMAT = "srood-repair-v1"
LOSS_COLUMNS = ["step", "kimg", "loss", "l2", "lpips", "seconds"]
LOG_EVERY = 10
REQUIRED_KEYS = ["batch_size", "kimg", "lr", "lr_decay_fraction", "adam_betas", "lambda_l2", "lambda_lpips",
                 "lambda_delta", "lambda_wnorm", "lpips_net", "train_decoder", "decoder_lr", "checkpoint_kimg", "bf16",
                 "channels_last"]
RESUMABLE_KEYS = ("kimg", "checkpoint_kimg")
# Settings at their "off" value leave the weights as the recipe without them makes them, so they are not part of
# a recipe's key: adding a lever or a schedule never invalidates networks trained without it.
SETTINGS_OFF = {"lambda_delta": 0.0, "lambda_wnorm": 0.0, "lr_decay_fraction": 0.0}


ENCODER_SETTINGS_OFF = {"latent": "wplus"}


def _without_off(section: dict, off: dict) -> dict:
    return {k: v for k, v in section.items() if not (k in off and v == off[k])}


def weights_recipe(train_cfg: dict) -> dict:
    """The training section as it bears on the weights: settings at their off value left out."""
    return _without_off(train_cfg, SETTINGS_OFF)


def encoder_recipe(encoder_cfg: dict) -> dict:
    """The encoder section as it bears on the weights: the paper's W+ is the off value of ``latent``."""
    return _without_off(encoder_cfg, ENCODER_SETTINGS_OFF)


def resumable_keys(train_cfg: dict) -> tuple[str, ...]:
    """Keys a run may change and resume: ``kimg`` only while the schedule does not depend on the total length."""
    return RESUMABLE_KEYS if not train_cfg.get("lr_decay_fraction") else ("checkpoint_kimg",)


def lr_factor(step: int, total_steps: int, decay_fraction: float) -> float:
    """Multiplier of the base learning rate at ``step``: 1, then linear to 0 over the last ``decay_fraction``."""
    if decay_fraction <= 0:
        return 1.0
    start = total_steps * (1.0 - decay_fraction)
    return 1.0 if step < start else max(0.0, (total_steps - step) / (total_steps - start))


def check_train_cfg(cfg: dict) -> None:
    require_keys(cfg, REQUIRED_KEYS, "repair.train")


def build_repair_network(generator: Generator, encoder_cfg: dict, train_decoder: bool) -> RepairNetwork:
    """A pSp encoder sized for ``generator`` (its resolution, and w_dim or for Z+ codes z_dim) in front of it."""
    code_dim = generator.z_dim if encoder_cfg.get("latent") == "zplus" else generator.w_dim
    encoder = PSPEncoder(resolution=generator.resolution, w_dim=code_dim, **encoder_cfg)
    return RepairNetwork(encoder, generator, train_decoder=train_decoder)


def repair_loss(repaired: torch.Tensor, target: torch.Tensor, cfg: dict) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """Equation (1): batch mean of lambda_l2 * L2 + lambda_lpips * LPIPS; returns (loss, l2, lpips)."""
    l2 = distance(repaired, target, "l2").mean()
    lp = distance(repaired.float(), target, "lpips", net=cfg["lpips_net"]).mean()
    return cfg["lambda_l2"] * l2 + cfg["lambda_lpips"] * lp, l2, lp


def delta_penalty(wplus: torch.Tensor) -> torch.Tensor:
    """e4e's delta regularisation (BEYOND THE PAPER): batch mean of sum_i ||w_i - w_0||_2 over the styles of a W+
    code, which keeps codes near W (one style for every layer) and so shrinks what an encoder can fit."""
    return (wplus[:, 1:] - wplus[:, :1]).float().norm(dim=-1).sum(dim=1).mean()


def wnorm_penalty(wplus: torch.Tensor, w_avg: torch.Tensor) -> torch.Tensor:
    """pSp's W-norm loss (BEYOND THE PAPER): batch mean of ||w+ - w_avg||_F, which pulls codes towards the
    prior's typical region, where its images have no off-manifold artefacts."""
    return (wplus.float() - w_avg.float().reshape(1, 1, -1)).flatten(1).norm(dim=1).mean()


def _recipe(train_cfg: dict, encoder_cfg: dict, erosions: list[str], prior_id: str) -> dict:
    train = {k: v for k, v in weights_recipe(train_cfg).items() if k not in resumable_keys(train_cfg)}
    return {"train": train, "encoder": encoder_recipe(encoder_cfg),
            "erosions": list(erosions), "prior": prior_id}


def train_repair(images_uint8: np.ndarray, generator: Generator, train_cfg: dict, encoder_cfg: dict,
                 train_erosions: list[str], out_dir: str | os.PathLike, seed: int, device="auto",
                 prior_id: str = "", progress: bool = True, stop_after_steps: int | None = None) -> RepairNetwork:
    """Train R_theta on ``images_uint8`` (N, H, W, 3) and return it (in eval mode) — resuming from ``out_dir``.

    ``prior_id`` names the generator (e.g. its checkpoint hash); a checkpoint made with another prior, recipe or
    data is refused rather than silently continued. ``stop_after_steps`` simulates a killed run (tests).
    """
    check_train_cfg(train_cfg)
    world = distributed_world(device)  # under torchrun: this process's share of the work (srood_lib.distributed)
    device = resolve_device(device)
    world.check_batch(int(train_cfg["batch_size"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    erosions = erosion_set(train_erosions)
    recipe = _recipe(train_cfg, encoder_cfg, train_erosions, prior_id)
    recipe_id = config_hash(recipe)
    data = uint8_to_tensor(images_uint8)
    data_id = data_fingerprint(images_uint8)

    torch.manual_seed(seed)  # initial weights are a function of the seed
    net = build_repair_network(generator, encoder_cfg, train_cfg["train_decoder"])
    net = sync_batchnorm(net, world, device).to(device)
    groups = [{"params": net.encoder.parameters(), "lr": train_cfg["lr"]}]
    if train_cfg["train_decoder"]:
        groups.append({"params": net.generator.parameters(), "lr": train_cfg["decoder_lr"]})
    opt = torch.optim.Adam(groups, betas=tuple(train_cfg["adam_betas"]))
    base_lrs = [g["lr"] for g in opt.param_groups]

    step = 0
    if ckpt_path.exists():
        ckpt = safe_torch_load(ckpt_path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a {CHECKPOINT_FORMAT} checkpoint; delete it to start over")
        if ckpt["recipe_id"] != recipe_id or ckpt["data_id"] != data_id:
            raise ValueError(f"{ckpt_path} was made with another recipe, prior or data set; delete the folder "
                             f"{out_dir} to retrain, or point out_dir elsewhere")
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
    elif (out_dir / LOSSES_NAME).exists() and world.main:
        (out_dir / LOSSES_NAME).unlink()  # losses of a run whose checkpoint is gone describe nothing we have

    world.check_same(step, "the step to resume at")
    batch = int(train_cfg["batch_size"])
    total_steps = int(np.ceil(train_cfg["kimg"] * 1000 / batch))
    ckpt_every = max(1, int(np.ceil(train_cfg["checkpoint_kimg"] * 1000 / batch)))
    order = EpochOrder(len(data), batch, seed)
    # bf16 autocast for the encoder/generator pass: on CUDA with `bf16`, on the CPU with the optional `bf16_cpu`
    # where the CPU has native bf16 (about 2x faster there, several times slower elsewhere). Loss in float32.
    use_bf16 = autocast_bf16(device, train_cfg["bf16"], train_cfg.get("bf16_cpu", False), "repair training")
    # channels_last: on CUDA as usual; on the CPU too, where oneDNN's NHWC convolutions made the whole training
    # step 1.4x faster (benchmarks/bench_repair_train.py).
    memory_format = torch.channels_last if train_cfg["channels_last"] else torch.contiguous_format
    net = net.to(memory_format=memory_format)

    def save(at_step: int) -> None:
        if not world.main:
            return
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "net": net.state_dict(), "opt": opt.state_dict(),
                           "step": at_step, "recipe_id": recipe_id, "data_id": data_id, "recipe": recipe,
                           "encoder_kwargs": net.encoder.init_kwargs, "G_kwargs": net.generator.init_kwargs,
                           "seed": seed}, ckpt_path)

    pending: list[list[float]] = []

    def flush() -> None:
        if pending and world.main:
            new = not (out_dir / LOSSES_NAME).exists()
            with open(out_dir / LOSSES_NAME, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(LOSS_COLUMNS)
                writer.writerows(pending)
            pending.clear()

    from srood_lib.progress import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not progress or not world.main, desc="repair", unit="step")
    net.train()
    t0 = time.time()
    while step < total_steps:
        if stop_after_steps is not None and step >= stop_after_steps:
            break
        real = to_float_images(data[order.indices(step)]).to(device)
        gen = torch.Generator().manual_seed(step_seed(seed, step, stream=3))
        eroded, _ = apply_random_erosions(real, erosions, generator=gen)  # drawn for the global batch, then sharded
        real, eroded = world.shard(real), world.shard(eroded).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            repaired, wplus = net(eroded, return_wplus=True)
        loss, l2, lp = repair_loss(repaired.float(), real, train_cfg)
        if train_cfg["lambda_delta"]:
            loss = loss + train_cfg["lambda_delta"] * delta_penalty(wplus)
        if train_cfg["lambda_wnorm"]:
            loss = loss + train_cfg["lambda_wnorm"] * wnorm_penalty(wplus, net.generator.w_avg)
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, total_steps, train_cfg["lr_decay_fraction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        world.average_gradients([p for group in opt.param_groups for p in group["params"]])
        opt.step()
        step += 1
        if step % LOG_EVERY == 0 or step == total_steps:
            vals = world.average(torch.stack([loss.detach(), l2.detach(), lp.detach()])).tolist()
            pending.append([step, step * batch / 1000, *vals, round(time.time() - t0, 2)])
            bar.set_postfix(loss=f"{vals[0]:.3f}", l2=f"{vals[1]:.3f}", lpips=f"{vals[2]:.3f}", refresh=False)
        bar.update(1)
        if step % ckpt_every == 0 or step == total_steps:
            flush()
            save(step)
    bar.close()
    flush()
    world.barrier()  # the other processes return once process 0 has written the checkpoint
    return net.eval()


def load_repair(path: str | os.PathLike, generator: Generator | None = None, device="cpu") -> RepairNetwork:
    """Rebuild a trained repair network from ``repair.pt`` (a run folder or the file)."""
    path = Path(path)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"no repair checkpoint at {path}; train one with train_repair(...)")
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    generator = generator if generator is not None else Generator(**ckpt["G_kwargs"])
    encoder = PSPEncoder(**ckpt["encoder_kwargs"])
    net = RepairNetwork(encoder, generator, train_decoder=ckpt["recipe"]["train"]["train_decoder"])
    net.load_state_dict(ckpt["net"])
    net.requires_grad_(False)
    return net.eval().to(resolve_device(device))
