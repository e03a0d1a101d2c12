"""Where computation runs: one rule for every stage."""

from __future__ import annotations

import torch

from vidcache.distributed import DistInfo
from vidcache.errors import VidcacheError


def resolve_device(device: str = "auto", local_rank: "int | DistInfo | None" = None) -> torch.device:
    """'auto' picks this rank's GPU when there is one, else the CPU; 'cuda' means this rank's GPU.

    `local_rank` is torchrun's LOCAL_RANK, so each process of a node takes its own GPU; None reads
    it from the environment (0 outside torchrun), a `DistInfo` gives its own.
    """
    if local_rank is None:
        local_rank = DistInfo.from_env().local_rank
    elif isinstance(local_rank, DistInfo):
        local_rank = local_rank.local_rank
    if device in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if device == "cuda":
            raise VidcacheError("--device cuda was asked for but CUDA is not available; use --device cpu")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VidcacheError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VidcacheError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
    return dev
