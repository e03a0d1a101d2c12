"""Decode workers with a wall-clock deadline per video.

Decoders hang (decord #269, #363), crash on bad packets and segfault (PyAV #689). A DataLoader
cannot say which video stalled it, and a dead worker ends its iteration. This pool runs one task
(one video) at a time per worker process, each worker with its own pipe, so the main process
always knows which video a worker is on:

- a task past its deadline: the worker is killed, the video is reported failed ("timed out"), and a
  fresh worker takes its place;
- a worker that dies (segfault, OOM kill): its video is reported failed with the exit code, and a
  fresh worker takes its place;
- an exception inside the task: reported as that video's error; the worker lives on.

Results come back in submission order, so batches are formed identically on every run (a resumed
block is computed exactly as the first time). Tensors travel through shared memory: pipes use
torch's ForkingPickler reductions once `torch.multiprocessing` is imported.

Readers are created inside the workers (never inherited across fork: decord #294). Workers exit
when the main process dies, even by SIGKILL (`vidcache.procs.die_with_parent`).
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.multiprocessing  # noqa: F401  (registers tensor sharing for pipes)

from vidcache.procs import die_with_parent


@dataclass
class TaskResult:
    key: Any
    ok: bool
    value: Any = None  # the task's return value when ok
    error: str = ""  # one line when not ok


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
    return text[:500]


def run_task(fn: Callable, key: Any, args: tuple) -> TaskResult:
    """Run one task in this process, turning any exception into a failed result."""
    try:
        return TaskResult(key, True, fn(*args))
    except Exception as e:  # a bad video must not end the run: report it and go on
        return TaskResult(key, False, error=_one_line(e))


def _worker_main(fn: Callable, conn, threads: int, parent_pid: int) -> None:
    # Exit with the parent, however it dies (a SIGKILLed parent cannot stop its workers).
    die_with_parent(parent_pid)
    # A decoder that segfaults is reported by the parent as a failed video; a Python stack dump
    # of the dying worker (inherited from pytest or -X faulthandler) would only be noise.
    faulthandler.disable()
    # Ctrl-C goes to the whole process group: the parent stops the run (and these workers) and
    # says so in one line; a worker's own KeyboardInterrupt traceback would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        key, args = msg
        result = run_task(fn, key, args)
        try:
            conn.send(result)
        except Exception as e:  # an unpicklable result is the task's fault, not the worker's
            conn.send(TaskResult(key, False, error=f"cannot send result: {_one_line(e)}"))


class _Worker:
    def __init__(self, ctx, fn: Callable, threads: int):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(fn, child, threads, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple | None = None  # (seq, key, started)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """`imap` over tasks with per-task deadlines; `workers=0` runs tasks inline (no deadline)."""

    def __init__(self, fn: Callable, workers: int = 2, timeout_s: float | None = 300.0,
                 start_method: str | None = None, threads_per_worker: int = 1, prefetch: int = 2):
        self.fn, self.workers, self.timeout_s = fn, int(workers), timeout_s
        self.threads, self.prefetch = threads_per_worker, max(1, prefetch)
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.ctx = mp.get_context(method)
        self._pool: list[_Worker] = []
        self.restarts = 0

    def __enter__(self) -> "WorkerPool":
        self._pool = [_Worker(self.ctx, self.fn, self.threads) for _ in range(self.workers)]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._pool:
            try:
                if w.proc.is_alive():
                    w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._pool:
            w.proc.join(timeout=2)
            w.kill()
        self._pool = []

    def imap(self, tasks: Iterable[tuple[Any, tuple]]) -> Iterator[TaskResult]:
        """Yield one TaskResult per (key, args) task, in the order the tasks were given."""
        if self.workers == 0:
            for key, args in tasks:
                yield run_task(self.fn, key, args)
            return
        if not self._pool:
            raise RuntimeError("use WorkerPool as a context manager")
        todo = iter(tasks)
        queue: deque = deque()  # (seq, key, args) not yet sent
        done: dict[int, TaskResult] = {}
        next_out, next_seq, exhausted = 0, 0, False
        max_ahead = self.workers * self.prefetch
        while True:
            # Keep at most max_ahead tasks between the next result to yield and the newest sent.
            while not exhausted and next_seq - next_out < max_ahead:
                try:
                    key, args = next(todo)
                except StopIteration:
                    exhausted = True
                    break
                queue.append((next_seq, key, args))
                next_seq += 1
            for w in self._pool:
                if w.task is None and queue:
                    seq, key, args = queue.popleft()
                    w.task = (seq, key, time.monotonic())
                    w.conn.send((key, args))
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            if exhausted and next_out == next_seq:
                return
            busy = [w for w in self._pool if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.05)
            now = time.monotonic()
            for i, w in enumerate(self._pool):
                if w.task is None:
                    continue
                seq, key, started = w.task
                if w.conn in ready:
                    try:
                        res = w.conn.recv()
                        done[seq] = res
                        w.task = None
                        continue
                    except (EOFError, OSError):
                        pass  # the worker died while sending: handled below
                if not w.proc.is_alive() or w.conn.closed:
                    code = w.proc.exitcode
                    done[seq] = TaskResult(key, False, error=f"decoder worker died (exit code {code}); "
                                                             f"the file likely crashes the decoder")
                elif self.timeout_s and now - started > self.timeout_s:
                    done[seq] = TaskResult(key, False, error=f"decoding timed out after {self.timeout_s:g} s "
                                                             f"(the decoder hung on this file)")
                else:
                    continue
                w.kill()
                self._pool[i] = _Worker(self.ctx, self.fn, self.threads)
                self.restarts += 1

