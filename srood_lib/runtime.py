"""Small pieces shared by the training and scoring code: device choice, seeded per-step randomness, batch order,
uint8 <-> model tensors, atomic checkpoint writes."""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Callable
from pathlib import Path

import numpy as np
import torch

from srood_lib.atomic import atomic_write


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it oneDNN emulates bf16, and a bf16
    training step is several times slower than fp32 (``benchmarks/bench_cpu_bf16.py``)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


_warned_bf16: set[str] = set()


def autocast_bf16(device: torch.device, on_cuda: bool, on_cpu: bool, what: str) -> bool:
    """Whether ``what`` trains under bf16 autocast on ``device``: on CUDA as ``on_cuda`` says; on the CPU when
    ``on_cpu`` asks for it *and* the CPU has native bf16 (else fp32, with one warning per ``what``). Like the
    device, the effective precision is not part of an artefact's key; the run records it."""
    if device.type == "cuda":
        return bool(on_cuda)
    if on_cpu and not cpu_has_native_bf16():
        if what not in _warned_bf16:
            _warned_bf16.add(what)
            import warnings
            warnings.warn(f"{what}: bf16_cpu is set but this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 "
                          f"is several times slower; training in fp32", stacklevel=2)
        return False
    return bool(on_cpu)


def uint8_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) uint8 tensor (converted to float per batch)."""
    arr = np.asarray(images_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def to_float_images(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1]."""
    return images_u8.to(torch.float32) / 127.5 - 1.0


def lru_memo(memo: OrderedDict, key, size: int, compute: Callable):
    """``memo[key]``, computed by ``compute()`` on a miss; the least recently used entries beyond ``size`` go."""
    if key not in memo:
        memo[key] = compute()
        while len(memo) > size:
            memo.popitem(last=False)
    memo.move_to_end(key)
    return memo[key]


def data_fingerprint(array: np.ndarray) -> str:
    """sha256 of an array (shape + bytes; the training images or their labels), so a resume on different data
    fails loudly."""
    h = hashlib.sha256(str(array.shape).encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()[:16]


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed that is a function of (seed, step, stream) only."""
    return int(np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2, np.uint64)[0] >> 1)


def seeded_split(images: np.ndarray, n_out: int, seed: int, stream: int,
                 what: str = "n_out") -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): ``n_out`` images held out by a permutation seeded by (seed, stream), order preserved.

    Distinct ``stream``s give unrelated splits of the same images for the same seed; ``what`` names the
    setting in the error message.
    """
    if not 0 < n_out < len(images):
        raise ValueError(f"{what} must be between 1 and {len(images) - 1} for {len(images)} images, got {n_out}")
    perm = np.random.default_rng([seed, stream]).permutation(len(images))
    return images[np.sort(perm[n_out:])], images[np.sort(perm[:n_out])]


class EpochOrder:
    """Batch indices for step s: consecutive slices of per-epoch permutations seeded by (seed, epoch)."""

    def __init__(self, n_images: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_images, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=1))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}  # keep memory bounded
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        pos, parts, need = step * self.batch_size, [], self.batch_size
        while need > 0:
            epoch, offset = divmod(pos, self.n)
            take = min(need, self.n - offset)
            parts.append(self._perm(epoch)[offset:offset + take])
            pos, need = pos + take, need - take
        return torch.cat(parts)


class UnsafeArtefactError(ValueError):
    """A file that would run code while being unpickled: srood refuses to load it."""


def safe_torch_load(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain data only, so opening a file someone sent you
    cannot run code. Every artefact srood writes loads this way; anything else is a one-line error."""
    import pickle
    import zipfile

    if not Path(path).is_file():
        raise FileNotFoundError(f"no file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save's format; anything else (a photo, a legacy pickle) is not ours
        raise ValueError(f"{path} is not a file written by srood (not a torch.save archive)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only load failed" in str(exc).lower():
            raise UnsafeArtefactError(
                f"{path}: refused, it holds Python objects that would run code when unpickled; srood writes "
                f"only tensors and plain data, so this file was not written by srood (or by a version before safe "
                f"loading): re-create it with this version") from None
        raise ValueError(f"{path} is not a file written by srood (torch.load: {first})") from None
    except (RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a file written by srood (torch.load: {first})") from None


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` through ``atomic.atomic_write``: a killed write never leaves a broken file at ``path``."""
    atomic_write(Path(path), lambda f: torch.save(obj, f))


# Tensors this small (biases, norms, per-style scalars) stay float32: they are a rounding error of the file size.
_QUANTISE_MIN_NUMEL = 1024


def compact_state(state: dict[str, torch.Tensor], mode: str, int8_prefixes: tuple[str, ...] = ()) -> dict:
    """A state dict as plain tensors for ``safe_torch_load``: ``fp16`` halves every large float tensor; ``int8``
    stores each as int8 with one float32 scale per output channel (symmetric, absmax / 127); ``mixed`` stores the
    tensors whose names start with one of ``int8_prefixes`` as int8 and the others as fp16."""
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        as_int8 = mode == "int8" or (mode == "mixed" and name.startswith(tuple(int8_prefixes)))
        if not t.is_floating_point() or t.numel() < _QUANTISE_MIN_NUMEL:
            out[name] = {"raw": t.clone()}
        elif not as_int8:
            out[name] = {"fp16": t.to(torch.float16)}
        else:
            rows = t.float().reshape(t.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[name] = {"int8": q, "scale": scale}
    return out


def expand_state(compact: dict) -> dict[str, torch.Tensor]:
    """The float32 state dict of ``compact_state``'s output."""
    out = {}
    for name, entry in compact.items():
        if "raw" in entry:
            out[name] = entry["raw"]
        elif "fp16" in entry:
            out[name] = entry["fp16"].float()
        else:
            q = entry["int8"]
            out[name] = (q.float().reshape(q.shape[0], -1) * entry["scale"][:, None]).reshape(q.shape)
    return out
