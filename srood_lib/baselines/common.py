"""What the baseline detectors share: the config contract, the held-out split, per-image noise, the file format.

Every detector takes one plain-data config: the profile's ``baselines`` section plus the top-level ``seed`` and
``device`` (``baseline_config``). It reads only the keys it needs and has no defaults of its own.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np
import torch

from srood_lib.runtime import atomic_torch_save, safe_torch_load, seeded_split, step_seed

BASELINE_FORMAT = "srood-baseline-v1"

LOG_2PI = math.log(2 * math.pi)


def bits_per_dim(nll_nats, dims: int):
    """Nats per image -> bits per sub-pixel."""
    return nll_nats / (dims * math.log(2))


# Noise streams of step_seed, so no two uses of one seed draw the same numbers.
STREAM_IWAE, STREAM_REGRET, STREAM_GLOW_DEQUANT, STREAM_WAIC, STREAM_BACKGROUND = 21, 22, 23, 24, 25


def baseline_config(profile_cfg: dict) -> dict:
    """The detectors' config: ``cfg["baselines"]`` plus the profile's seed and device."""
    return {**copy.deepcopy(profile_cfg["baselines"]), "seed": profile_cfg["seed"], "device": profile_cfg["device"]}


def split_holdout(images: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout): ``n_holdout`` ID training images held out by a seeded permutation.

    The generative models train on ``train``; Typicality Test and DoSE fit their statistics on ``holdout``
    (images the model has not seen, as both references ask).
    """
    return seeded_split(images, n_holdout, seed, stream=31, what="n_holdout")


def per_image_noise(seed: int, start: int, n: int, shape: tuple, stream: int, kind: str = "normal") -> torch.Tensor:
    """(n, *shape) noise where image ``start + i`` gets draws from its own generator seeded by (seed, index).

    So a score never depends on the batch size it was computed with.
    """
    out = []
    for i in range(start, start + n):
        gen = torch.Generator().manual_seed(step_seed(seed, i, stream))
        out.append(torch.randn(shape, generator=gen) if kind == "normal" else torch.rand(shape, generator=gen))
    return torch.stack(out) if out else torch.zeros((0, *shape))


def module_blob(module: torch.nn.Module) -> dict:
    """What a detector or cache file keeps of a model: its constructor arguments (``init_kwargs``) and CPU
    weights."""
    return {"kwargs": dict(module.init_kwargs), "state": {k: v.cpu() for k, v in module.state_dict().items()}}


def module_from_blob(cls: type, blob: dict, device: torch.device) -> torch.nn.Module:
    """The model of ``module_blob``, rebuilt as ``cls(**kwargs)``, in eval mode without gradients, on ``device``."""
    module = cls(**blob["kwargs"])
    module.load_state_dict(blob["state"])
    return module.eval().requires_grad_(False).to(device)


def save_detector(det, path: str | os.PathLike, models: dict, state: dict) -> Path:
    """One self-contained file per detector: class, config, model weights, fitted statistics."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": BASELINE_FORMAT, "class": type(det).__name__, "config": det.config,
                       "models": models, "state": _arrays_as_tensors(state)}, path)
    return path


def _arrays_as_tensors(obj):
    """Fitted statistics (numpy arrays and scalars, in dicts/lists/tuples) as tensors and plain numbers, so the
    file loads with ``weights_only=True``; ``_tensors_as_arrays`` undoes it."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _arrays_as_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_arrays_as_tensors(v) for v in obj)
    return obj


def _tensors_as_arrays(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _tensors_as_arrays(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors_as_arrays(v) for v in obj)
    return obj


def load_detector_blob(path: str | os.PathLike, cls_name: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no baseline detector at {path}; fit one first (fit_baselines)")
    blob = safe_torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path} is not a baseline detector file ({BASELINE_FORMAT})")
    if blob["class"] != cls_name:
        raise ValueError(f"{path} holds a {blob['class']}, not a {cls_name}")
    return {**blob, "state": _tensors_as_arrays(blob["state"])}
