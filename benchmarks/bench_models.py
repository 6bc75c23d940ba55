"""Benchmark the prior (StyleGAN2) and the repair network (pSp encoder + frozen generator).

Prints, for each profile's prior config: G/D parameter counts, prior training throughput (img/s, full training
steps incl. lazy R1, EMA, mixing) and, for a pSp encoder of the profile's widths, encoder+generator forward
throughput (img/s, eval, no grad) and repair-training step throughput (forward+backward through the frozen G).

    .venv/bin/python benchmarks/bench_models.py                 # smoke + quick, CPU
    .venv/bin/python benchmarks/bench_models.py --profiles quick --steps 20 --threads 2

A profile's ``prior`` and ``repair.encoder`` sections are read from ``configs/<profile>.yaml``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.config import load_config  # noqa: E402
from srood_lib.models.psp import PSPEncoder, RepairNetwork  # noqa: E402
from srood_lib.models.stylegan2 import count_parameters  # noqa: E402
from srood_lib.runtime import step_seed, to_float_images, uint8_to_tensor  # noqa: E402
from srood_lib.train_prior import (_ema_beta, _update_ema, build_discriminator, build_generator,  # noqa: E402
                                   precision_plan, train_step)

def profile_sections(profile: str) -> tuple[dict, dict]:
    """(prior cfg, encoder cfg) of ``configs/<profile>.yaml`` — the only place they are set."""
    cfg = load_config(profile)
    return cfg["prior"], cfg["repair"]["encoder"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_prior_training(cfg: dict, device: torch.device, steps: int, warmup: int) -> float:
    """Images per second of full prior training steps (G+D updates, lazy R1 on its schedule, EMA update)."""
    torch.manual_seed(0)
    G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    use_bf16, memory_format = precision_plan(cfg, device)
    for m in (G, D, G_ema):
        m.to(memory_format=memory_format)
    G_opt = torch.optim.Adam(G.parameters(), lr=cfg["g_lr"], betas=tuple(map(float, cfg["adam_betas"])))
    D_opt = torch.optim.Adam(D.parameters(), lr=cfg["d_lr"], betas=tuple(map(float, cfg["adam_betas"])))
    batch, res = cfg["batch_size"], cfg["resolution"]
    images = uint8_to_tensor(np.random.default_rng(0).integers(0, 256, (batch * 4, res, res, 3), dtype=np.uint8))
    images = images.to(device)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        real = to_float_images(images[(step % 4) * batch:(step % 4 + 1) * batch]).contiguous(memory_format=memory_format)
        torch.manual_seed(step_seed(0, step))
        train_step(G, D, G_opt, D_opt, real, cfg, step, 0, device, use_bf16)
        _update_ema(G_ema, G, _ema_beta(cfg, batch, (step + 1) * batch))
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def bench_repair(prior: dict, enc_cfg: dict, device: torch.device, batch: int, steps: int) -> tuple[float, float, int]:
    """(forward img/s, train-step img/s, encoder params) of encoder + frozen generator."""
    torch.manual_seed(0)
    G = build_generator(prior).to(device)
    E = PSPEncoder(prior["resolution"], G.w_dim, **enc_cfg).to(device)
    net = RepairNetwork(E, G)
    x = torch.rand(batch, 3, prior["resolution"], prior["resolution"], device=device) * 2 - 1
    net.eval()
    with torch.no_grad():
        net(x)
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            net(x, mix_from_layer=G.n_latent // 2)
        sync(device)
    fwd = steps * batch / (time.perf_counter() - t)
    net.train()
    opt = torch.optim.Adam(E.parameters(), lr=1e-4)
    for i in range(steps + 1):
        if i == 1:
            sync(device)
            t = time.perf_counter()
        loss = (net(x) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    train = steps * batch / (time.perf_counter() - t)
    return fwd, train, count_parameters(E)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["smoke", "quick"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=16, help="timed prior steps (one lazy-R1 step per 16)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repair-batch", type=int, default=64)
    parser.add_argument("--repair-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for profile in args.profiles:
        prior, enc_cfg = profile_sections(profile)
        G, D = build_generator(prior), build_discriminator(prior)
        print(f"\n[{profile}] (configs/{profile}.yaml)")
        print(f"  G params {count_parameters(G):,}  (mapping {count_parameters(G.mapping):,}), "
              f"D params {count_parameters(D):,}, resolution {prior['resolution']}, batch {prior['batch_size']}")
        rate = bench_prior_training(prior, device, args.steps, args.warmup)
        hours = prior["kimg"] * 1000 / rate / 3600
        precision = "bf16 autocast" if precision_plan(prior, device)[0] else "fp32"
        print(f"  prior training ({precision}): {rate:.1f} img/s  -> kimg={prior['kimg']} takes "
              f"~{hours * 60:.1f} min")
        fwd, train, n_enc = bench_repair(prior, enc_cfg, device, args.repair_batch, args.repair_steps)
        print(f"  encoder params {n_enc:,}; encoder+G forward {fwd:.1f} img/s (batch {args.repair_batch}); "
              f"repair train step {train:.1f} img/s")


if __name__ == "__main__":
    main()
