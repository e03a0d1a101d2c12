"""vidcache.device and vidcache.distributed: which device a rank takes, and the process group."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from vidcache.device import resolve_device
from vidcache.distributed import DistInfo, barrier, destroy_distributed, init_distributed
from vidcache.errors import VidcacheError


def test_distinfo_reads_torchrun_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert DistInfo.from_env() == DistInfo(0, 1, 0)
    assert not DistInfo.from_env().distributed
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = DistInfo.from_env()
    assert (d.rank, d.world, d.local_rank, d.distributed) == (5, 8, 1, True)


def test_resolve_device_cpu_and_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(VidcacheError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(VidcacheError, match="CUDA is not available; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(VidcacheError, match="--device cuda:1 was asked for"):
        resolve_device("cuda:1")


def test_resolve_device_takes_this_ranks_gpu(monkeypatch):
    """With 4 GPUs, local rank 6 takes cuda:2; None reads LOCAL_RANK; a DistInfo gives its own."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto", 6) == torch.device("cuda", 2)
    assert resolve_device("cuda", DistInfo(3, 4, 3)) == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_single_process_needs_no_group():
    one = DistInfo()
    assert init_distributed(one, torch.device("cpu")) is False
    barrier(one)  # nothing to wait for
    destroy_distributed(False)
    assert not torch.distributed.is_initialized()


_RANK_SCRIPT = """
import sys, time, torch
from vidcache.distributed import DistInfo, barrier, destroy_distributed, init_distributed
dist = DistInfo.from_env()
created = init_distributed(dist, torch.device("cpu"))
assert created and torch.distributed.get_backend() == "gloo"
assert init_distributed(dist, torch.device("cpu")) is False  # already joined
if dist.rank == 1:
    time.sleep(0.5)
    open(sys.argv[1], "w").write("rank1")
barrier(dist)  # rank 0 passes only once rank 1 wrote its file
if dist.rank == 0:
    assert open(sys.argv[1]).read() == "rank1"
t = torch.tensor([float(dist.rank + 1)])
torch.distributed.all_reduce(t)
assert t.item() == 3.0
destroy_distributed(created)
assert not torch.distributed.is_initialized()
print("ok", dist.rank)
"""


def test_two_ranks_join_and_wait_at_the_barrier(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flag = tmp_path / "flag"
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(flag)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, err
        assert out.strip() == f"ok {rank}"
