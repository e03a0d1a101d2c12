"""Ranks under torchrun: who this process is, joining the process group, and the barrier.

One place for every stage that can run on several processes (`extract`, `pretrain`). torch is
imported only by the functions that need it, so `DistInfo` is cheap to use anywhere.

    dist = DistInfo.from_env()                  # rank 0 of 1 when not under torchrun
    device = resolve_device("auto", dist.local_rank)   # vidcache.device
    created = init_distributed(dist, device)    # joins torchrun's group when world > 1
    ...
    barrier(dist)                               # no-op in a single process
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Rank and world size as torchrun sets them (1 process otherwise)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _group_ready() -> bool:
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def init_distributed(dist: DistInfo, device) -> bool:
    """Join torchrun's process group (NCCL on CUDA, gloo otherwise) when this is one of several
    processes. Returns True when this call created the group (the caller then destroys it)."""
    if not dist.distributed:
        return False
    import torch.distributed as td

    if not td.is_available() or td.is_initialized():
        return False
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def barrier(dist: DistInfo) -> None:
    """Wait for every rank; nothing to wait for in a single process or without a process group."""
    if dist.distributed and _group_ready():
        import torch.distributed as td

        td.barrier()


def destroy_distributed(created: bool) -> None:
    """Leave the process group if `init_distributed` created it."""
    if created and _group_ready():
        import torch.distributed as td

        td.destroy_process_group()
