"""`vidcache probe retrieval STORE -o OUT`: Hummingbird dense nearest-neighbour retrieval, mIoU.

As open-hummingbird-eval (vpariza/open-hummingbird-eval, `hbird/hbird_eval.py`) evaluates in-context
scene understanding, on cached frame tokens:

- memory bank: the l2-normalised patch tokens of the train split's frames, each with its patch
  label, the distribution of the classes of its pixels (the mask resized to the token grid's
  pixel size, nearest, then averaged over the patch; void 255 counts as class 0, as the reference
  does for the memory). `bank_size` bounds the bank: each frame then keeps `bank_size / frames`
  patches, the ones whose classes are rarest in the frame (the reference's score: the sum over the
  patch's classes of how many patches of the frame hold them), ties broken by uniform noise;
- each evaluation patch retrieves its k nearest bank patches (k = 30, exact inner product with
  faiss, on a GPU when faiss sees one), weighs them with softmax(cosine / temperature)
  (temperature 0.02) and sums their label distributions;
- the label map is upsampled bilinearly to the mask's resolution and arg-maxed; mIoU is the mean
  over classes of the IoU accumulated over all evaluated pixels (255 ignored). The reference
  matches predicted to true classes with a Hungarian assignment, which is the identity when
  predictions are class ids, so it is left out.

Classes: `labels = "masks"` takes the mask ids as classes (0 background, 1..n objects);
`labels = "class"` gives an object pixel the class `1 + video label` (the synthetic corpus: the
object's class), so retrieval must tell objects apart, not only find them.

The reference draws several augmented views of every training image for its bank
(`augmentation_epoch`); a cache holds one view per frame, so the bank is built from that one view.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidcache.config import check, config_hash, save_json, to_dict
from vidcache.data.davis import VOID, write_mask
from vidcache.dense.config import RetrievalConfig  # noqa: F401  (re-exported)
from vidcache.dense.data import FrameVideo, frame_videos, open_frame_store


def patch_labels(mask: np.ndarray, grid: tuple[int, int], patch: int, num_classes: int) -> np.ndarray:
    """float32 [h*w, C]: class distribution of each patch's pixels (mask resized nearest to the grid's pixels)."""
    from PIL import Image

    h, w = grid
    ids = mask
    if ids.shape != (h * patch, w * patch):
        ids = np.asarray(Image.fromarray(mask).resize((w * patch, h * patch), Image.NEAREST))
    ids = np.where(ids == VOID, 0, ids).astype(np.int64)
    cells = ids.reshape(h, patch, w, patch).transpose(0, 2, 1, 3).reshape(h * w, patch * patch)
    out = np.zeros((h * w, num_classes), np.float32)
    rows = np.repeat(np.arange(h * w), patch * patch)
    np.add.at(out, (rows, cells.reshape(-1)), 1.0)
    return out / (patch * patch)


def rare_class_patches(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `count` patches of one frame, rarest classes first (the reference's sampling).

    A patch's score is the sum, over the classes present in it, of the number of the frame's patches
    holding that class, times uniform noise; the `count` smallest scores are kept.
    """
    present = labels > 0
    freq = present.sum(axis=0).astype(np.float64)
    score = present.astype(np.float64) @ freq
    score = score * rng.random(len(score))
    return np.argsort(score, kind="stable")[:count]


def aggregate(sim: np.ndarray, neighbour_labels: np.ndarray, temperature: float) -> np.ndarray:
    """[nq, C]: softmax(sim / T) over the neighbours, times their label distributions."""
    w = torch.softmax(torch.as_tensor(sim, dtype=torch.float64) / temperature, dim=1)
    return torch.einsum("qk,qkc->qc", w, torch.as_tensor(neighbour_labels, dtype=torch.float64)).numpy()


def label_map_to_ids(scores: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W]: the [h*w, C] label map upsampled bilinearly to the mask size and arg-maxed."""
    h, w = grid
    x = torch.as_tensor(scores, dtype=torch.float32).T.reshape(1, -1, h, w)
    up = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0).to(torch.uint8).numpy()


def frames_used(video: FrameVideo, n: int | None) -> np.ndarray:
    """Token frames used from a video: `n` evenly spaced (all when None)."""
    total = video.num_token_frames
    if n is None or n >= total:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, n)).astype(np.int64))


def frame_masks(video: FrameVideo, token_frames: np.ndarray, labels: str, label: int) -> np.ndarray:
    fi = video.frame_index()
    m = video.masks([int(fi[t]) for t in token_frames])
    if labels == "class":
        m = np.where((m > 0) & (m != VOID), 1 + label, np.where(m == VOID, VOID, 0)).astype(np.uint8)
    return m


def miou(confusion: np.ndarray) -> tuple[float, list[float]]:
    """Mean IoU over classes seen in the ground truth or the predictions, and IoU per class (nan = unseen)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)) if np.any(union > 0) else float("nan"), [float(v) for v in iou]


def run_retrieval(store, out_dir: str | Path, cfg: RetrievalConfig | None = None, progress=None) -> dict:
    """Build the bank from `cfg.train_split`, evaluate `cfg.split`; write results (see module doc)."""
    from vidcache.probe.knn import l2_normalize, search, use_faiss_gpu

    t0 = time.perf_counter()
    cfg = check(cfg or RetrievalConfig(), "retrieval config")
    store = open_frame_store(store)
    train, evaluate = frame_videos(store, cfg.train_split), frame_videos(store, cfg.split)
    labels_all = store.videos()["label"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out / "config.json")
    rng = np.random.default_rng(cfg.seed)

    frames = {v.row: frames_used(v, cfg.frames_per_video) for v in train + evaluate}
    masks = {v.row: frame_masks(v, frames[v.row], cfg.labels, int(labels_all[v.row])) for v in train + evaluate}
    seen = max(int(np.where(m == VOID, 0, m).max()) for m in masks.values())
    num_classes = 1 + max(seen, len(store.classes) if cfg.labels == "class" else 0)
    per_frame = None
    if cfg.bank_size is not None:
        per_frame = max(1, cfg.bank_size // max(1, sum(len(frames[v.row]) for v in train)))

    tb = time.perf_counter()
    feats, labs = [], []
    for v in train:
        tf = frames[v.row]
        tok = v.tokens()[tf]
        for t in range(len(tf)):
            x = tok[t].reshape(-1, tok.shape[-1])
            lab = patch_labels(masks[v.row][t], v.grid, v.patch_size, num_classes)
            if per_frame is not None and per_frame < len(x):
                keep = rare_class_patches(lab, per_frame, rng)
                x, lab = x[keep], lab[keep]
            feats.append(l2_normalize(x))
            labs.append(lab)
    bank, bank_labels = np.concatenate(feats), np.concatenate(labs)
    bank_s = time.perf_counter() - tb

    gpu = use_faiss_gpu(cfg.device)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    search_s, queries = 0.0, 0
    for i, v in enumerate(evaluate):
        tf = frames[v.row]
        tok = v.tokens()[tf]
        names = v.frame_names()
        fi = v.frame_index()
        q = tok.reshape(-1, tok.shape[-1])
        ts = time.perf_counter()
        sim, idx = search(bank, l2_normalize(q), cfg.k, gpu)
        search_s += time.perf_counter() - ts
        queries += len(q)
        scores = aggregate(sim, bank_labels[idx], cfg.temperature).reshape(len(tf), -1, num_classes)
        for t in range(len(tf)):
            gt = masks[v.row][t]
            pred = label_map_to_ids(scores[t], v.grid, gt.shape)
            valid = gt != VOID
            confusion += np.bincount(gt[valid].astype(np.int64) * num_classes + pred[valid],
                                     minlength=num_classes ** 2).reshape(num_classes, num_classes)
            if cfg.write_masks:
                write_mask(out / "Annotations" / v.name / f"{names[int(fi[tf[t]])]}.png", pred)
        if progress is not None:
            progress(i + 1, len(evaluate))
    m, per_class = miou(confusion)
    results = {"probe": "retrieval", "split": cfg.split, "mIoU": m, "iou_per_class": per_class,
               "num_classes": num_classes, "bank_patches": int(len(bank)), "query_patches": int(queries),
               "selected": {"k": cfg.k, "temperature": cfg.temperature}, "config": to_dict(cfg),
               "run_hash": config_hash({"retrieval": {k: v for k, v in to_dict(cfg).items()
                                                      if k not in ("device", "write_masks")},
                                        "store": store.config_hash}),
               "store": store.url, "config_hash": store.config_hash, "faiss_gpu": gpu,
               "timings": {"total_s": time.perf_counter() - t0, "bank_s": bank_s, "search_s": search_s}}
    save_json(results, out / "results.json")
    return results


def results_table(res: dict, title: str = "Hummingbird retrieval"):
    from rich.table import Table

    t = Table(title=title)
    for c in ("classes", "bank patches", "query patches", "k", "mIoU"):
        t.add_column(c, justify="right")
    t.add_row(str(res["num_classes"]), str(res["bank_patches"]), str(res["query_patches"]), str(res["selected"]["k"]),
              f"{res['mIoU']:.3f}")
    return t
