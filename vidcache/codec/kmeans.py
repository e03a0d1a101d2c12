"""Exact nearest-centroid search and Lloyd's k-means on top of it.

`NearestCentroid` is the one assignment engine, used by both training and encoding:
- faiss `IndexFlatL2` (exact L2), copied to every GPU when faiss was built with GPU support
  (`faiss.get_num_gpus()` is asked at run time: faiss-cpu and faiss-gpu install the same module);
- a torch CUDA matmul search when CUDA is there but faiss has no GPU (the common pip setup);
- faiss on CPU otherwise.

k-means is written as plain Lloyd iterations around it, rather than `faiss.Kmeans`, for three
reasons: a progress bar with an ETA per iteration (faiss only prints), the same code path on every
device, and bit-for-bit determinism on CPU for a given seed (float64 centroid sums in a fixed order).
Empty clusters are re-seeded the way faiss does: split the largest cluster in two by a tiny
symmetric perturbation of its centroid.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from vidcache.codec.config import DEVICES
from vidcache.errors import ConfigError
from vidcache.progress import progress_bar

# Points assigned per search call: bounds the float32 copy and, on torch, the [batch, K] distances.
SEARCH_BATCH = 65536
_SPLIT_EPS = 1.0 / 1024  # relative perturbation when splitting a cluster (faiss uses the same)
def _faiss():
    import faiss

    return faiss


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable (faiss GPU or torch CUDA), else 'cpu'; 'cuda' must be usable."""
    if device not in DEVICES:
        raise ConfigError([f"device must be one of {', '.join(DEVICES)}, got {device!r}"], "codec")
    gpu = _faiss().get_num_gpus() > 0 or torch.cuda.is_available()
    if device == "cuda" and not gpu:
        raise ConfigError(["device 'cuda' asked but no GPU is visible (neither faiss-gpu nor torch CUDA); "
                           "use --device cpu (GPU k-means on a CUDA machine: pip install 'vidcache[gpu]')"], "codec")
    if device == "auto":
        return "cuda" if gpu else "cpu"
    return device


class NearestCentroid:
    """Exact L2 nearest-centroid search over a fixed set of float32 centroids [K, d]."""

    def __init__(self, centroids: np.ndarray, device: str = "auto"):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k, self.dim = self.centroids.shape
        self.device = resolve_device(device)
        faiss = _faiss()
        self.backend = "faiss-cpu"
        self._index = None
        self._torch_c = None
        if self.device == "cuda" and faiss.get_num_gpus() > 0:
            cpu_index = faiss.IndexFlatL2(self.dim)
            cpu_index.add(self.centroids)
            self._index = faiss.index_cpu_to_all_gpus(cpu_index)
            self.backend = f"faiss-gpu x{faiss.get_num_gpus()}"
        elif self.device == "cuda":
            self._torch_c = torch.from_numpy(self.centroids).cuda()
            self._torch_c_sq = (self._torch_c.double() ** 2).sum(1).float()
            self.backend = "torch-cuda"
        else:
            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self.centroids)

    def search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [n, d] -> (squared L2 distance float32 [n], nearest centroid int64 [n])."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points [n, {self.dim}], got {x.shape}")
        if self._index is not None:
            dist, idx = self._index.search(x, 1)
            return dist[:, 0], idx[:, 0]
        return self._torch_search(x)

    def _torch_search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the x term does not change the argmin.
        # Chunked so the [n, K] matrix stays near 1 GiB even for K = 65,536.
        rows = max(1, (1 << 28) // self.k)
        dists, idxs = [], []
        xt = torch.from_numpy(x).cuda(non_blocking=True)
        for s in range(0, len(xt), rows):
            xb = xt[s:s + rows]
            d = self._torch_c_sq[None, :] - 2.0 * (xb @ self._torch_c.T)
            best, arg = d.min(dim=1)
            dists.append((best + (xb * xb).sum(1)).clamp_(min=0))
            idxs.append(arg)
        return torch.cat(dists).cpu().numpy(), torch.cat(idxs).cpu().numpy().astype(np.int64)


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, device: str = "auto",
           progress: bool = True, transform: Callable[[np.ndarray], np.ndarray] | None = None,
           ) -> tuple[np.ndarray, dict]:
    """Lloyd's k-means on points [N, d]; returns (float32 centroids [k, d], stats).

    `x` may be uint8 to save memory (N x p*p*3 bytes instead of 4x that); `transform` maps a batch to
    float32 in the clustering space (e.g. /255). Initial centroids are `k` distinct points drawn with
    `seed`. stats: objective per iteration (mean squared error), empty clusters re-seeded, seconds.
    """
    n, d = x.shape
    if k > n:
        raise ConfigError([f"k-means needs at least k={k} training patches, got {n}; sample more frames "
                           f"(--frames-per-video, more videos) or lower --k"], "codec")
    transform = transform or (lambda b: b.astype(np.float32))
    rng = np.random.default_rng(seed)
    centroids = transform(x[np.sort(rng.choice(n, size=k, replace=False))]).astype(np.float32)
    stats = {"objective": [], "empty_splits": 0, "seconds": 0.0, "backend": ""}
    t0 = time.perf_counter()

    with progress_bar(f"k-means k={k} on {n:,} patches", niter, disable=not progress) as update:
        for it in range(niter):
            search = NearestCentroid(centroids, device)
            stats["backend"] = search.backend
            sums = torch.zeros(k, d, dtype=torch.float64)
            counts = np.zeros(k, dtype=np.int64)
            total = 0.0
            for s in range(0, n, SEARCH_BATCH):
                xb = transform(x[s:s + SEARCH_BATCH])
                dist, lab = search.search(xb)
                total += float(dist.astype(np.float64).sum())
                # CPU index_add_ runs in index order: the same sums, to the bit, on every run.
                sums.index_add_(0, torch.from_numpy(lab), torch.from_numpy(xb).double())
                counts += np.bincount(lab, minlength=k)
            stats["objective"].append(total / n)
            nonempty = counts > 0
            new = centroids.copy()
            new[nonempty] = (sums.numpy()[nonempty] / counts[nonempty, None]).astype(np.float32)
            stats["empty_splits"] += _split_empty(new, counts)
            centroids = new
            update(it + 1, rate=f"mse {total / n:.5g}")
    stats["seconds"] = time.perf_counter() - t0
    return centroids, stats


def _split_empty(centroids: np.ndarray, counts: np.ndarray) -> int:
    """Re-seed each empty cluster by splitting the currently largest one (in place); returns how many."""
    empty = np.flatnonzero(counts == 0)
    if len(empty) == 0:
        return 0
    counts = counts.astype(np.float64).copy()
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    for j in empty:
        m = int(np.argmax(counts))
        centroids[j] = centroids[m] * (1 + _SPLIT_EPS * sign)
        centroids[m] = centroids[m] * (1 - _SPLIT_EPS * sign)
        counts[j] = counts[m] = counts[m] / 2
    return len(empty)


