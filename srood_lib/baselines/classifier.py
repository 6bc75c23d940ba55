"""Classifier baselines: MSP (Hendrycks & Gimpel 2017) and MaxLogit (Hendrycks et al. 2022).

A compact residual network is trained on the ID training labels (CIFAR-10: its 10 classes; Pokemon: the primary
type, 18 classes -- our label set, the paper does not give its own). The scores are pytorch-ood's
(``MaxSoftmax.score``, ``MaxLogit.score``: higher = more OOD) applied to the network's logits.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srood_lib.config import require_keys
from srood_lib.runtime import (EpochOrder, atomic_torch_save, autocast_bf16, resolve_device, step_seed,
                               to_float_images, uint8_to_tensor)

TRAIN_KEYS = ("width", "blocks", "epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing",
              "warmup_fraction", "crop_padding", "bf16_cpu")
STREAM_AUGMENT = 41
# NHWC on the CPU only from this width: on AVX2 CPUs (torch 2.14.1) the backward of a channels_last stride-2 1x1 conv
# with few input channels (4-6 at 32 px, e.g. the smoke width's shortcut) segfaults at 1 thread and spins forever at
# 2 (8 and more were fine; tests/test_baselines_classifier.py). At width 32 NHWC trains 1.35x faster than NCHW on AVX2
# (benchmarks/bench_cpu_bf16.py --what classifier-layout).
NHWC_MIN_CPU_WIDTH = 16


class _Block(nn.Module):
    """Pre-activation-free basic residual block: conv-BN-ReLU-conv-BN plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """Stem, then one stage per entry of ``blocks`` (width doubling and stride 2 from the second), pool, linear."""

    def __init__(self, n_classes: int, width: int = 32, blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.init_kwargs = {"n_classes": int(n_classes), "width": int(width), "blocks": [int(b) for b in blocks]}
        layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(int(n)):
                layers.append(_Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def augment(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop after reflect-padding by ``padding`` pixels, and a random horizontal flip, per image."""
    n, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup_fraction`` of the steps, then linear decay to 0."""
    warm = max(1, int(round(warmup_fraction * total)))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * max(0.0, (total - step) / max(1, total - warm))


def train_classifier(images: np.ndarray, labels: np.ndarray, cfg: dict, seed: int, device: torch.device,
                     progress: bool = True, state_path: str | Path | None = None) -> ResNetClassifier:
    """Train a ``ResNetClassifier`` on uint8 ``images`` (N, H, W, 3) and their labels 0..C-1.

    SGD with Nesterov momentum, label smoothing, linear warm-up and decay, crop + flip augmentation. With
    ``state_path`` the run is saved at every epoch's end and resumes from there with the same result.
    """
    from srood_lib.progress import tqdm

    require_keys(cfg, TRAIN_KEYS, "baselines.classifier")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(labels) != len(images) or (labels < 0).any():
        raise ValueError("the classifier needs a label 0..C-1 for every training image; this ID set has "
                         f"{int((labels < 0).sum())} unlabelled of {len(labels)} (see the dataset's manifest)")
    data = uint8_to_tensor(images)
    torch.manual_seed(seed)
    model = ResNetClassifier(int(labels.max()) + 1, cfg["width"], cfg["blocks"]).to(device)
    memory_format = torch.channels_last if device.type == "cuda" or cfg["width"] >= NHWC_MIN_CPU_WIDTH \
        else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": float(cfg["weight_decay"])},
                           {"params": no_decay, "weight_decay": 0.0}], lr=float(cfg["lr"]),
                          momentum=float(cfg["momentum"]), nesterov=True)
    batch = int(cfg["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(data) / batch))
    total = max(1, int(round(float(cfg["epochs"]) * steps_per_epoch)))
    start = 0
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
    order = EpochOrder(len(data), batch, seed)
    use_bf16 = autocast_bf16(device, True, cfg["bf16_cpu"], "classifier training")
    model.train()
    bar = tqdm(range(start, total), initial=start, total=total, disable=not progress, desc="classifier",
               unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, float(cfg["lr"]), float(cfg["warmup_fraction"]))
        gen = torch.Generator().manual_seed(step_seed(seed, step, STREAM_AUGMENT))
        idx = order.indices(step)
        x = augment(to_float_images(data[idx]), int(cfg["crop_padding"]), gen)
        x = x.to(device).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[idx].to(device), label_smoothing=float(cfg["label_smoothing"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == total - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        at_epoch_end = (step + 1) % steps_per_epoch == 0 and step + 1 < total
        if state_path is not None and at_epoch_end:
            Path(state_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1},
                              Path(state_path))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def logits_of(model: nn.Module, images: np.ndarray, batch: int = 256, progress: bool = False) -> torch.Tensor:
    """float32 logits (N, C) of uint8 ``images`` (N, H, W, 3)."""
    from srood_lib.progress import tqdm

    device = next(model.parameters()).device
    data = uint8_to_tensor(images)
    starts = range(0, len(data), batch)
    out = [model(to_float_images(data[i:i + batch]).to(device)).float().cpu()
           for i in tqdm(starts, disable=not progress or len(starts) < 20, desc="logits", unit="batch")]
    return torch.cat(out) if out else torch.zeros((0, model.head.out_features))


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]."""
    predicted = logits_of(model, images).argmax(1).numpy()
    return float((predicted == np.asarray(labels)).mean())


class _ClassifierDetector:
    """Fit/score like every baseline: ``fit`` trains the network when none was given (it needs ``labels``)."""

    method = ""

    def __init__(self, config: dict, model: ResNetClassifier | None = None):
        require_keys(config, ("classifier", "seed", "device"), "baselines")
        self.config = copy.deepcopy(config)
        self.device = resolve_device(config["device"])
        self.model = None if model is None else model.to(self.device).eval()

    def fit(self, images: np.ndarray, progress: bool = True, labels: np.ndarray | None = None):
        if self.model is None:
            if labels is None:
                raise ValueError(f"{self.method} trains a classifier: pass the ID training labels (labels=...)")
            self.model = train_classifier(images, labels, self.config["classifier"], int(self.config["seed"]),
                                          self.device, progress)
        return self

    def score(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.method} has no trained classifier: call fit(images, labels=...) first")
        return self.score_logits(logits_of(self.model, images, progress=progress)).double().numpy()

    @staticmethod
    def score_logits(logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MSP(_ClassifierDetector):
    """Negative maximum softmax probability."""

    method = "MSP"

    @staticmethod
    def score_logits(logits: torch.Tensor) -> torch.Tensor:
        from pytorch_ood.detector import MaxSoftmax

        return MaxSoftmax.score(logits)


class MaxLogit(_ClassifierDetector):
    """Negative maximum logit."""

    method = "MaxLogit"

    @staticmethod
    def score_logits(logits: torch.Tensor) -> torch.Tensor:
        from pytorch_ood.detector import MaxLogit as _MaxLogit

        return _MaxLogit.score(logits)
