"""`vidcache probe linseg STORE -o OUT`: linear semantic segmentation on patch tokens, mIoU.

DINOv2's linear segmentation evaluation (a linear layer on each patch token, its logits upsampled
bilinearly to the mask and arg-maxed) on cached frame tokens, trained with the probes' shared grid
loop (`vidcache.probe.train.train_grid`: one linear head per lr x wd, all trained in one pass, the
same standardisation and schedule as `vidcache probe linear`).

- a training sample is one patch token with the majority class of its pixels (the mask resized to
  the token grid's pixel size; void 255 counts as background), from `frames_per_video` evenly
  spaced frames of every train video;
- every head of the grid is scored by its mIoU on the val frames (pixel level, void ignored); the
  best is selected (`--report test`, reported on the test split when the store has one) or the
  best val mIoU is the result (`--report best-val`, DINOv2's practice);
- classes are as `vidcache probe retrieval`: mask ids (`--labels masks`) or 1 + the video's label
  on object pixels (`--labels class`).

DINOv2 trains its heads with a pixel-level loss on upsampled logits; here the loss is per patch on
the majority label, which keeps the probe a plain linear classifier of stored tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidcache.config import check, config_hash, save_json, to_dict
from vidcache.data.davis import VOID, write_mask
from vidcache.dense.config import LinsegConfig  # noqa: F401  (re-exported)
from vidcache.dense.data import FrameVideo, frame_videos, open_frame_store
from vidcache.dense.retrieval import frame_masks, frames_used, label_map_to_ids, miou, patch_labels
from vidcache.errors import DataError
from vidcache.probe.data import ProbeData
from vidcache.probe.linear import LinearHead
from vidcache.probe.train import train_grid


@dataclass
class _Split:
    x: np.ndarray            # float16 [patches, D]
    y: np.ndarray            # int64 [patches], majority class
    frames: list             # (video, token frame, gt mask) per frame, in order
    grids: list              # (h, w) per frame


def _load(videos: list[FrameVideo], cfg: LinsegConfig, labels_all: np.ndarray, num_classes: int | None) -> tuple:
    xs, ys, frames, grids, seen = [], [], [], [], 0
    masks_of = {}
    for v in videos:
        tf = frames_used(v, cfg.frames_per_video)
        masks_of[v.row] = (tf, frame_masks(v, tf, cfg.labels, int(labels_all[v.row])))
        seen = max(seen, int(np.where(masks_of[v.row][1] == VOID, 0, masks_of[v.row][1]).max()))
    k = num_classes or seen + 1
    for v in videos:
        tf, masks = masks_of[v.row]
        tok = v.tokens()[tf]
        for t in range(len(tf)):
            m = masks[t] if num_classes is None else \
                np.where(masks[t] == VOID, VOID, np.minimum(masks[t], k - 1)).astype(np.uint8)
            dist = patch_labels(m, v.grid, v.patch_size, k)
            xs.append(tok[t].reshape(-1, tok.shape[-1]).astype(np.float16))
            ys.append(dist.argmax(1))
            frames.append((v, int(tf[t]), masks[t]))
            grids.append(v.grid)
    return _Split(np.concatenate(xs), np.concatenate(ys).astype(np.int64), frames, grids), k


def _miou_of(probs: np.ndarray, split: _Split, num_classes: int) -> tuple[float, list[float], list[np.ndarray]]:
    """mIoU of one head's patch probabilities [patches, K] over the split's frames, and the masks."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    preds, start = [], 0
    for (v, _, gt), grid in zip(split.frames, split.grids):
        n = grid[0] * grid[1]
        pred = label_map_to_ids(probs[start:start + n], grid, gt.shape)
        start += n
        valid = gt != VOID
        g = np.minimum(gt[valid], num_classes - 1).astype(np.int64)
        conf += np.bincount(g * num_classes + pred[valid], minlength=num_classes ** 2).reshape(num_classes,
                                                                                                  num_classes)
        preds.append(pred)
    m, per = miou(conf)
    return m, per, preds


def run_linseg(store, out_dir: str | Path, cfg: LinsegConfig | None = None, progress=None) -> dict:
    """Train the grid on train patches, select by val mIoU, report (see module doc)."""
    t0 = time.perf_counter()
    cfg = check(cfg or LinsegConfig(), "linseg config")
    store = open_frame_store(store)
    labels_all = store.videos()["label"]
    splits = set(np.asarray(store.videos()["split"]).tolist())
    if cfg.val_split not in splits:
        raise DataError(f"{store.url} has no {cfg.val_split!r} split to select the head on; splits: "
                        f"{', '.join(sorted(splits))}")
    train_v = frame_videos(store, cfg.train_split)
    val_v = frame_videos(store, cfg.val_split)
    test_v = frame_videos(store, cfg.test_split) if cfg.test_split and cfg.test_split in splits else []
    train, k = _load(train_v, cfg, labels_all, None)
    if cfg.labels == "class":
        k = max(k, 1 + len(store.classes))
    val, _ = _load(val_v, cfg, labels_all, k)
    test = _load(test_v, cfg, labels_all, k)[0] if test_v else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out / "config.json")

    dim = train.x.shape[1]
    as_data = lambda s: ProbeData(s.x[:, None], s.y)  # noqa: E731  one patch = one sample, one view
    grid = cfg.grid()
    res = train_grid(lambda: LinearHead(dim, k), grid, as_data(train), as_data(val), cfg,
                     on_step=(lambda d, n: progress(d, n)) if progress else None)
    val_probs = res.scores(as_data(val), device=cfg.device if cfg.device != "auto" else "cpu")
    val_miou = [_miou_of(p, val, k)[0] for p in val_probs]
    best = int(np.nanargmax(val_miou))
    rows = [{**g, "val_mIoU": m, "val_patch_top1": v["top1"]} for g, m, v in zip(grid, val_miou, res.val)]
    report: dict = {"val": {"mIoU": val_miou[best]}}
    shown = (val, val_probs[best], cfg.val_split)
    if test is not None and cfg.report == "test":
        test_probs = res.scores(as_data(test), heads=[best], device="cpu")[0]
        m, per, _ = _miou_of(test_probs, test, k)
        report["test"] = {"mIoU": m, "iou_per_class": per}
        shown = (test, test_probs, cfg.test_split)
    if cfg.write_masks:
        split, probs, _ = shown
        _, _, preds = _miou_of(probs, split, k)
        for (v, t, _), pred in zip(split.frames, preds):
            write_mask(out / "Annotations" / v.name / f"{v.frame_names()[int(v.frame_index()[t])]}.png", pred)
    results = {"probe": "linseg", "report": cfg.report, **report, "num_classes": k,
               "selected": {"lr": grid[best]["lr"], "wd": grid[best]["wd"], "index": best}, "grid": rows,
               "num_train_patches": int(len(train.y)), "config": to_dict(cfg), "seed": cfg.seed,
               "run_hash": config_hash({"linseg": {kk: vv for kk, vv in to_dict(cfg).items()
                                                   if kk not in ("device", "write_masks")},
                                        "store": store.config_hash}),
               "store": store.url, "config_hash": store.config_hash, "masks_of": shown[2],
               "timings": {"total_s": time.perf_counter() - t0, "fit_s": res.seconds}}
    if test is None and cfg.report == "test":
        results["warnings"] = [f"no {cfg.test_split!r} split in the store: only val is reported"]
    save_json(results, out / "results.json")
    return results


def results_table(res: dict, title: str = "linear segmentation"):
    from rich.table import Table

    t = Table(title=title)
    for c in ("selected", "val mIoU", "test mIoU", "classes", "train patches"):
        t.add_column(c, justify="right")
    test = res.get("test", {}).get("mIoU")
    t.add_row(f"lr={res['selected']['lr']:g}, wd={res['selected']['wd']:g}", f"{res['val']['mIoU']:.3f}",
              "-" if test is None else f"{test:.3f}", str(res["num_classes"]), str(res["num_train_patches"]))
    return t
