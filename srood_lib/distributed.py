"""Data-parallel training across processes, for users who outgrow one machine (one node, or several sharing the
checkpoint folder).

``torchrun --nproc_per_node=N -m srood_lib train-prior|train-repair ...`` starts N processes; each trains on its
share of every global batch (``World.shard``: images ``rank, rank + N, ...``), gradients are averaged across
processes after each backward pass (``World.average_gradients``, one all-reduce per model, as StyleGAN2-ADA does
rather than wrapping the two-player GAN step in DistributedDataParallel), and process 0 alone writes checkpoints
and logs. NCCL on GPUs (one per process), gloo on CPUs. The config, the checkpoint folders and the checkpoints are
those of a single-process run: the global batch stays ``batch_size``, every random draw of a step is made for the
whole global batch and then sharded, so an N-process run computes the single-process step up to the order of
floating-point sums, except where a layer sees only its process's shard: BatchNorm in the encoder (SyncBatchNorm
on GPUs; per-process statistics on CPUs, where torch has no SyncBatchNorm), DiffAugment's per-image draws and the
generator's per-pixel noise inputs, which each process draws for its own shard from its own seed. The
discriminator's minibatch-std groups must come out as in one process (``check_mbstd``): a ``--nproc_per_node`` that
would shrink them is refused, naming the fix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ValueError(f"batch_size {batch_size} does not split over {self.size} processes; choose a "
                             f"--nproc_per_node that divides it")

    def shard(self, batch):
        """This process's share of a global batch: items rank, rank + size, ... (strided, so that the
        discriminator's minibatch-std groups hold the same images as in a single process)."""
        return batch if self.size == 1 else batch[self.rank::self.size]

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (one flat all-reduce)."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the processes (a new tensor; itself when alone)."""
        if self.size == 1:
            return tensor
        out = tensor.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.size

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def check_same(self, value: int, what: str) -> None:
        """Refuse to go on unless every process holds the same ``value`` (e.g. the step each resumed at: a
        checkpoint only process 0 can see means the processes do not share a filesystem)."""
        if self.size == 1:
            return
        lo, hi = torch.tensor([value]), torch.tensor([-value])
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MIN)
        if lo.item() != -hi.item():
            raise ValueError(f"the processes disagree on {what} ({lo.item()} vs {-hi.item()}): they must share the "
                             "checkpoint folder (one machine, or a shared filesystem)")

    def reseed_own(self, seed: int) -> None:
        """Seed this process's own random stream for draws that are made per shard (noise, augmentation), so the
        shards get different draws; alone, nothing changes."""
        if self.size > 1:
            torch.manual_seed(seed + 7919 * self.rank)


def world(device: torch.device | str | None = None) -> World:
    """The World of this process: from torchrun's environment (initialising the process group once), else alone.

    Call before creating models: on CUDA it pins this process to GPU ``LOCAL_RANK``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    cuda = torch.device(device).type == "cuda" if device not in (None, "auto") else torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size())


def check_mbstd(world_: World, batch_size: int, mbstd_group: int) -> None:
    """Refuse a process count under which the discriminator's minibatch-std groups would differ from one
    process's (the group is the largest divisor of the per-process batch not above ``mbstd_group``)."""
    def group(n: int) -> int:
        return max(d for d in range(1, min(mbstd_group, n) + 1) if n % d == 0)

    if world_.size > 1 and group(batch_size // world_.size) != group(batch_size):
        raise ValueError(f"with {world_.size} processes each sees {batch_size // world_.size} images, so the "
                         f"discriminator's minibatch-std groups ({group(batch_size)} images in one process) would "
                         f"shrink to {group(batch_size // world_.size)}: use at most "
                         f"{batch_size // group(batch_size)} processes, or set prior.discriminator.mbstd_group (a "
                         "new recipe)")


def sync_batchnorm(module: torch.nn.Module, world_: World, device: torch.device) -> torch.nn.Module:
    """BatchNorm over the whole global batch where torch can (GPUs); unchanged alone or on CPUs."""
    if world_.size > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
