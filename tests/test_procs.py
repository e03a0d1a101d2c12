"""No orphans: every kind of worker vidcache starts exits within seconds of a SIGKILL of its parent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone: it holds no memory)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return out


def wait_gone(pids, within: float = 5.0) -> list[int]:
    deadline = time.time() + within
    while time.time() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


# A parent that starts two workers of one kind, each blocked in a long task, prints their pids and waits.
PARENT = """
import os, sys, time
kind, watchdog_only = sys.argv[1], sys.argv[2] == "1"
import vidcache.procs as procs
if watchdog_only:  # leave only the parent-pid watchdog (what non-Linux systems get)
    procs._set_pdeathsig = lambda sig: False

def task(x):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: two workers share the pipe, print() may interleave
    time.sleep(600)
    return x

if kind == "pool":
    from vidcache.extract.pool import WorkerPool
    with WorkerPool(task, workers=2, timeout_s=None) as pool:
        for _ in pool.imap((i, (i,)) for i in range(2)):
            pass
elif kind == "executor":
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, initializer=procs.worker_init()) as ex:
        list(ex.map(task, range(2)))
elif kind == "dataloader":
    import torch.utils.data as tud
    class D(tud.Dataset):
        def __len__(self): return 4
        def __getitem__(self, i): return task(i)
    for _ in tud.DataLoader(D(), num_workers=2, worker_init_fn=procs.worker_init()):
        pass
"""


def start_parent(kind: str, watchdog_only: bool):
    proc = subprocess.Popen([sys.executable, "-c", PARENT, kind, "1" if watchdog_only else "0"],
                            stdout=subprocess.PIPE, text=True)
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    return proc, pids


@pytest.mark.parametrize("kind", ["pool", "executor", "dataloader"])
@pytest.mark.parametrize("watchdog_only", [False, True], ids=["pdeathsig", "watchdog"])
def test_workers_exit_when_the_parent_is_sigkilled(kind, watchdog_only):
    proc, pids = start_parent(kind, watchdog_only)
    try:
        assert all(alive(p) for p in pids) and len(set(pids)) == 2
        assert set(pids) <= set(children(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_gone(pids) == [], f"{kind} workers outlived their SIGKILLed parent"
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_extract_decode_workers_exit_after_kill_9_of_the_command(synth_corpus, tmp_path):
    from vidcache.cache import DONE, Store

    manifest_path, _ = synth_corpus
    proc = subprocess.Popen([sys.executable, "-m", "vidcache", "extract", "clips", str(manifest_path), "-o",
                             str(tmp_path / "s.zarr"), "--protocol", "uniform:2", "--workers", "2",
                             "--videos-per-block", "2", "--batch-size", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            workers = children(proc.pid)
            try:
                done = int((Store.open(tmp_path / "s.zarr").status() == DONE).sum())
            except Exception:
                done = 0
            if len(workers) >= 2 and done >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(workers) >= 2, "the kill must land while the workers run"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_gone(workers) == [], "decode workers outlived the SIGKILLed command"
    finally:
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
