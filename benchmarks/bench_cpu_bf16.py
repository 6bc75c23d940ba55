"""Does bf16 autocast pay on *this* CPU? fp32 vs bf16 training steps of the repair network, the prior and the
classifier baseline, at a profile's sizes, in one run (settings alternate, best of ``--rounds`` kept).

bf16 autocast roughly halves conv time where the CPU has native bf16 (AVX512-BF16 or AMX); without it oneDNN
emulates bf16 and the step is several times *slower*. This is why ``bf16_cpu: true`` means "bf16 where the CPU
runs it natively" (``srood_lib.runtime.autocast_bf16``), and this script is the measurement behind that rule.

    .venv/bin/python benchmarks/bench_cpu_bf16.py --profile quick --steps 3
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.baselines.classifier import ResNetClassifier  # noqa: E402
from srood_lib.config import load_config  # noqa: E402
from srood_lib.erosion import apply_random_erosions, erosion_set  # noqa: E402
from srood_lib.runtime import cpu_has_native_bf16, step_seed, to_float_images, uint8_to_tensor  # noqa: E402
from srood_lib.train_prior import build_discriminator, build_generator, train_step  # noqa: E402
from srood_lib.train_repair import build_repair_network, repair_loss  # noqa: E402


def _images(batch: int, res: int) -> torch.Tensor:
    return to_float_images(uint8_to_tensor(np.random.default_rng(0).integers(0, 256, (batch, res, res, 3), np.uint8)))


def _timed(step, steps: int, batch: int) -> float:
    for _ in range(2):   # warm-up: oneDNN builds its kernels on first use
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def repair_rate(cfg: dict, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    train_cfg = cfg["repair"]["train"]
    fmt = torch.channels_last if train_cfg["channels_last"] else torch.contiguous_format
    net = build_repair_network(build_generator(cfg["prior"]).eval(), cfg["repair"]["encoder"], False)
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.Adam(net.encoder.parameters(), lr=train_cfg["lr"])
    erosions = erosion_set(cfg["repair"]["variants"]["sr"]["train_erosions"])
    x = _images(train_cfg["batch_size"], cfg["prior"]["resolution"])

    def step():
        eroded, _ = apply_random_erosions(x, erosions, generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            repaired = net(eroded.contiguous(memory_format=fmt))
        loss, _, _ = repair_loss(repaired.float(), x, train_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _timed(step, steps, train_cfg["batch_size"])


def prior_rate(cfg: dict, bf16: bool, steps: int) -> float:
    pc = cfg["prior"]
    torch.manual_seed(0)
    G, D = build_generator(pc), build_discriminator(pc)
    G_opt = torch.optim.Adam(G.parameters(), lr=pc["g_lr"], betas=tuple(map(float, pc["adam_betas"])))
    D_opt = torch.optim.Adam(D.parameters(), lr=pc["d_lr"], betas=tuple(map(float, pc["adam_betas"])))
    real = _images(pc["batch_size"], pc["resolution"])
    counter = iter(range(10 ** 9))

    def step():
        i = next(counter)
        torch.manual_seed(step_seed(0, i))
        train_step(G, D, G_opt, D_opt, real, pc, i, 0, torch.device("cpu"), bf16)
    return _timed(step, steps, pc["batch_size"])


def classifier_rate(cfg: dict, bf16: bool, steps: int, memory_format=torch.contiguous_format) -> float:
    cc = cfg["baselines"]["classifier"]
    torch.manual_seed(0)
    model = ResNetClassifier(10, cc["width"], cc["blocks"]).train().to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _images(cc["batch_size"], cfg["data"]["resolution"]), torch.randint(0, 10, (cc["batch_size"],))
    x = x.contiguous(memory_format=memory_format)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _timed(step, steps, cc["batch_size"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--what", nargs="+", default=["repair", "prior", "classifier", "classifier-layout"],
                    help="which measurements (classifier-layout: the fp32 classifier step, NCHW vs channels_last)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"{cpu_has_native_bf16()}, threads {torch.get_num_threads()}, profile {args.profile}", flush=True)
    for what, fn in (("repair training step", repair_rate), ("prior training step", prior_rate),
                     ("classifier training step", classifier_rate)):
        if what.split()[0] not in args.what:
            continue
        best = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(args.rounds):
            for name in best:
                best[name] = max(best[name], fn(cfg, name == "bf16", args.steps))
        print(f"{what}: fp32 {best['fp32']:.1f} img/s, bf16 {best['bf16']:.1f} img/s, "
              f"bf16/fp32 {best['bf16'] / best['fp32']:.2f}x", flush=True)
    if "classifier-layout" in args.what:   # why train_classifier uses NHWC on the CPU from NHWC_MIN_CPU_WIDTH
        best = {"NCHW": 0.0, "channels_last": 0.0}
        for _ in range(args.rounds):
            for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
                best[name] = max(best[name], classifier_rate(cfg, False, args.steps, fmt))
        print(f"classifier training step, fp32: NCHW {best['NCHW']:.1f} img/s, channels_last "
              f"{best['channels_last']:.1f} img/s, ratio {best['channels_last'] / best['NCHW']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
