"""Training throughput of the repair network and of the prior, before/after the CPU speed-ups, in one run.

Repair (Algorithm 1's step exactly as train_repair runs it: random erosion, encoder + frozen generator under bf16
autocast where train_repair uses it (runtime.autocast_bf16: bf16_cpu on a CPU with native bf16), L2 + 0.8 LPIPS-alex
in fp32, Adam): NCHW (the old CPU path) vs. channels_last (now used on the CPU too).
Prior (full G+D step of train_prior): NCHW vs. channels_last, to see whether the same change pays there.

    .venv/bin/python benchmarks/bench_repair_train.py --profile quick --steps 12

Prints img/s per setting and the ratios; numbers from one process, alternating settings, so load drifts cancel.
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
from srood_lib.erosion import apply_random_erosions, erosion_set  # noqa: E402
from srood_lib.runtime import autocast_bf16, step_seed, to_float_images, uint8_to_tensor  # noqa: E402
from srood_lib.train_prior import (_ema_beta, _update_ema, build_discriminator, build_generator,  # noqa: E402
                                   train_step)
from srood_lib.train_repair import build_repair_network, repair_loss  # noqa: E402


def _bf16(bf16_cpu: bool) -> bool:
    return autocast_bf16(torch.device("cpu"), False, bf16_cpu, "benchmark")


def repair_rate(cfg: dict, memory_format, steps: int) -> float:
    torch.manual_seed(0)
    G = build_generator(cfg["prior"]).eval()
    train_cfg = cfg["repair"]["train"]
    net = build_repair_network(G, cfg["repair"]["encoder"], False).to(memory_format=memory_format)
    opt = torch.optim.Adam(net.encoder.parameters(), lr=train_cfg["lr"])
    erosions = erosion_set(cfg["repair"]["variants"]["sr"]["train_erosions"])
    batch, res = train_cfg["batch_size"], cfg["prior"]["resolution"]
    x = to_float_images(uint8_to_tensor(np.random.default_rng(0).integers(0, 256, (batch, res, res, 3), np.uint8)))
    net.train()
    for i in range(steps + 2):
        if i == 2:
            t = time.perf_counter()
        eroded, _ = apply_random_erosions(x, erosions, generator=torch.Generator().manual_seed(i))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_bf16(train_cfg["bf16_cpu"])):
            repaired = net(eroded.contiguous(memory_format=memory_format))
        loss, _, _ = repair_loss(repaired.float(), x, train_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t)


def prior_rate(cfg: dict, memory_format, steps: int) -> float:
    pc = cfg["prior"]
    torch.manual_seed(0)
    G, D = build_generator(pc).to(memory_format=memory_format), build_discriminator(pc).to(memory_format=memory_format)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G_opt = torch.optim.Adam(G.parameters(), lr=pc["g_lr"], betas=tuple(map(float, pc["adam_betas"])))
    D_opt = torch.optim.Adam(D.parameters(), lr=pc["d_lr"], betas=tuple(map(float, pc["adam_betas"])))
    batch, res = pc["batch_size"], pc["resolution"]
    imgs = to_float_images(uint8_to_tensor(np.random.default_rng(0).integers(0, 256, (batch, res, res, 3), np.uint8)))
    imgs = imgs.contiguous(memory_format=memory_format)
    for step in range(steps + 2):
        if step == 2:
            t = time.perf_counter()
        torch.manual_seed(step_seed(0, step))
        train_step(G, D, G_opt, D_opt, imgs, pc, step, 0, torch.device("cpu"), _bf16(pc["bf16_cpu"]))
        _update_ema(G_ema, G, _ema_beta(pc, batch, (step + 1) * batch))
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two settings (best kept)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, profile {args.profile}")
    formats = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    for what, fn in (("repair training step", repair_rate), ("prior training step", prior_rate)):
        best = {name: 0.0 for name in formats}
        for _ in range(args.rounds):
            for name, fmt in formats.items():
                best[name] = max(best[name], fn(cfg, fmt, args.steps))
        ratio = best["channels_last"] / best["NCHW"]
        print(f"{what}: NCHW {best['NCHW']:.1f} img/s, channels_last {best['channels_last']:.1f} img/s, "
              f"ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
