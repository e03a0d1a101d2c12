"""k-nearest-neighbour probe with DINO's weighted vote.

Embeddings are l2-normalised, so inner product = cosine similarity. For a query, the k most similar
training samples vote for their class with weight exp(sim / T) (T = 0.07); the class scores are the
summed votes. One faiss search for the largest k serves every k, since the k nearest neighbours are
the first k of the k_max nearest. Neighbours are ordered by decreasing similarity and, at equal
similarity, by increasing training index, so results do not depend on faiss's internal tie order.
With fewer training samples than k, all of them vote.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from vidcache.errors import DataError
from vidcache.probe.base import Probe
from vidcache.probe.config import KNNConfig
from vidcache.probe.data import ProbeData
from vidcache.probe.metrics import classification_metrics

log = logging.getLogger(__name__)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def use_faiss_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def search(bank: np.ndarray, queries: np.ndarray, k: int, gpu: bool = False,
           batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: (similarities, indices) [nq, min(k, n_bank)], best first.

    faiss's float32 GEMM can put a different last bit on equal similarities, and its order among
    ties is unspecified. So a few more neighbours than asked are fetched, their similarities are
    recomputed one dot product at a time in float64 (rounded to float32), and rows are sorted by
    (similarity desc, index asc): ties then resolve by index, as long as no more than `pad` tied
    neighbours straddle the k-th place.
    """
    import faiss

    bank = np.ascontiguousarray(bank, dtype=np.float32)
    k = min(int(k), len(bank))
    pad = min(len(bank) - k, max(8, k // 8))
    index = faiss.IndexFlatIP(bank.shape[1])
    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    index.add(bank)
    sims, ids = [], []
    for s in range(0, len(queries), batch):
        q = np.ascontiguousarray(queries[s:s + batch], dtype=np.float32)
        _, i = index.search(q, k + pad)
        i = i.astype(np.int64)
        d = np.empty(i.shape, dtype=np.float32)
        for c in range(0, len(q), 256):  # bounded float64 temporaries
            cand = bank[i[c:c + 256]].astype(np.float64)
            d[c:c + 256] = np.einsum("qkd,qd->qk", cand, q[c:c + 256].astype(np.float64))
        order = np.lexsort((i, -d), axis=1)[:, :k]
        sims.append(np.take_along_axis(d, order, 1))
        ids.append(np.take_along_axis(i, order, 1))
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(sims), np.concatenate(ids)


def weighted_votes(sim: np.ndarray, labels: np.ndarray, k: int, num_classes: int,
                   temperature: float = 0.07) -> np.ndarray:
    """DINO's vote from sorted neighbours: scores [nq, K] = sum over the first k of exp(sim/T) one_hot."""
    k = min(k, sim.shape[1])
    w = np.exp(sim[:, :k].astype(np.float64) / temperature)
    out = np.zeros((len(sim), num_classes))
    rows = np.repeat(np.arange(len(sim)), k)
    np.add.at(out, (rows, labels[:, :k].reshape(-1)), w.reshape(-1))
    return out


def knn_scores(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, ks: list[int], num_classes: int,
               temperature: float = 0.07, gpu: bool = False, batch: int = 4096) -> dict[int, np.ndarray]:
    """Vote scores [nq, K] for every k, from one search for the largest k (normalised inputs)."""
    sim, idx = search(bank, queries, max(ks), gpu, batch)
    nb = np.asarray(bank_labels, dtype=np.int64)[idx]
    return {k: weighted_votes(sim, nb, k, num_classes, temperature) for k in ks}


class KNNProbe(Probe):
    """A probe on the shared base (fit checks, evaluate, results); its "weights" are the training bank."""

    name = "knn"
    Config = KNNConfig
    arrays = ("emb",)

    def __init__(self, cfg: KNNConfig | None = None, num_classes: int | None = None):
        super().__init__(cfg, num_classes)
        self.k: int | None = None
        self.val_by_k: dict[int, dict] = {}

    def _queries(self, data: ProbeData) -> tuple[np.ndarray, int]:
        """Query vectors and views per video (1 with views=mean)."""
        if data.is_tokens:
            raise DataError("the kNN probe needs clip embeddings [n, C, D], not tokens")
        x = l2_normalize(data.x)
        if self.cfg.views == "mean":
            return l2_normalize(x.mean(1)), 1
        return x.reshape(-1, x.shape[-1]), x.shape[1]

    def fit(self, train: ProbeData, val: ProbeData, on_step: Callable[[int, int], None] | None = None):
        t0 = time.perf_counter()
        train, val = self.check_fit(train, val)
        self.bank, per = self._queries(train)
        self.bank_labels = np.repeat(train.y, per)
        if max(self.cfg.ks) > len(self.bank):
            log.warning("k up to %d asked for but the bank has %d samples: larger k use all of them",
                        max(self.cfg.ks), len(self.bank))
        scores = self._scores(val)
        self.val_by_k = {k: classification_metrics(s, val.y, confusion=False) for k, s in scores.items()}
        # Highest val top-1; ties go to the smaller k (the cheaper, less smoothed vote).
        self.k = max(sorted(self.cfg.ks), key=lambda k: (self.val_by_k[k]["top1"], -k))
        self.metrics["val"] = classification_metrics(scores[self.k], val.y)
        self.info["fit_seconds"] = time.perf_counter() - t0
        self.info["train_samples"] = len(self.bank)  # one per video (views=mean) or per clip (vote)
        if on_step is not None:
            on_step(1, 1)
        return self

    def _scores(self, data: ProbeData, ks: list[int] | None = None) -> dict[int, np.ndarray]:
        q, per = self._queries(data)
        out = knn_scores(self.bank, self.bank_labels, q, list(ks or self.cfg.ks), self.num_classes,
                         self.cfg.temperature, use_faiss_gpu(self.cfg.device), self.cfg.query_batch)
        # Vote pooling sums the clips' votes; then scores are normalised to probabilities per video.
        out = {k: s.reshape(len(data), per, -1).sum(1) for k, s in out.items()}
        return {k: s / np.maximum(s.sum(1, keepdims=True), 1e-300) for k, s in out.items()}

    def predict(self, x: ProbeData | np.ndarray) -> np.ndarray:
        """Vote probabilities [n, K] with the k selected on val."""
        if self.k is None:
            raise RuntimeError("predict() before fit()")
        return self._scores(self.inputs(x), [self.k])[self.k]

    def selected(self) -> dict:
        return {"k": self.k, "temperature": self.cfg.temperature, "views": self.cfg.views}

    def grid_table(self) -> list[dict]:
        return [{"k": k, **{f"val_{m}": v for m, v in self.val_by_k[k].items() if m != "n"}}
                for k in self.cfg.ks]
