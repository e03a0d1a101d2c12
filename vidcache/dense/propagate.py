"""`vidcache probe propagate STORE -o OUT`: semi-supervised video object segmentation by label propagation.

DINO's `label_propagation` (facebookresearch/dino, eval_video_segmentation.py) on cached frame
tokens instead of a backbone run per frame. For each target frame, in order:

- context: the first frame (its given mask) and the `n_last_frames` last predicted frames (their
  soft label maps, at token resolution);
- affinity: exp(cos(target token, context token) / temperature) between l2-normalised tokens,
  kept only for context tokens within `radius` grid cells (a square window) of the target token;
- each target token keeps its `topk` largest affinities over all context tokens together (ties at
  the k-th value kept), normalised to sum to 1, and takes the weighted mean of their label maps;
- the label map is upsampled bilinearly by the patch size, each object channel min-max normalised,
  the argmax taken and resized (nearest) to the mask's resolution.

The first mask enters at token resolution by a nearest resize to the token grid, as DINO's
`read_seg`. Defaults are DINO's (7 frames, radius 12, top-5, T 0.1); `--preset rvm` gives the
4DS/RVM readout (20 frames, radius 20, top-7, T 0.7). Affinities are computed in chunks of target
tokens (exact: the top-k is per target token), so a 480p grid fits in memory on a CPU.

Frames without their own token frame (tubelets of a video backbone, `frames:N:stride` stores) take
the prediction of the latest token frame at or before them; frames past the last token frame's
span are not evaluated.

Writes `OUT/Annotations/<sequence>/<frame>.png` (indexed, the first mask's palette) at the ground
truth's resolution, `OUT/sequences/<sequence>.json` per finished sequence (a killed run resumes
there), `OUT/config.json` and `OUT/results.json`: J, F and J&F as the DAVIS-2017 toolkit computes
them (`vidcache.dense.metrics`), with the copy-the-first-mask baseline beside them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidcache.config import check, config_hash, save_json, to_dict
from vidcache.data.davis import VOID, write_mask
from vidcache.dense.config import PRESETS, PropagateConfig  # noqa: F401  (re-exported)
from vidcache.dense.data import FrameVideo, frame_videos, open_frame_store
from vidcache.dense.metrics import sequence_scores, summarize
from vidcache.errors import DataError

AFFINITY_BYTES = 256 << 20  # one chunk of the target-by-context affinity matrix


def neighbourhood(h: int, w: int, radius: int) -> torch.Tensor | None:
    """bool [h*w, h*w]: target token (rows) may take labels from context token (columns)."""
    if radius <= 0:
        return None
    i = torch.arange(h).repeat_interleave(w)
    j = torch.arange(w).repeat(h)
    return ((i[:, None] - i[None, :]).abs() <= radius) & ((j[:, None] - j[None, :]).abs() <= radius)


def propagate_step(target: torch.Tensor, context: torch.Tensor, labels: torch.Tensor, topk: int,
                   temperature: float, near: torch.Tensor | None) -> torch.Tensor:
    """Label map [C, hw] of one target frame.

    `target` [hw, D] and `context` [m, hw, D] are l2-normalised tokens, `labels` [m, C, hw] the
    context's label maps, `near` the neighbourhood mask or None.
    """
    m, hw, _ = context.shape
    C = labels.shape[1]
    flat_labels = labels.permute(1, 0, 2).reshape(C, m * hw)  # [C, m*hw], context-major like the keys
    out = torch.empty((C, target.shape[0]), dtype=labels.dtype, device=labels.device)
    chunk = max(1, AFFINITY_BYTES // (4 * m * hw))
    k = min(topk, m * hw)
    for q0 in range(0, target.shape[0], chunk):
        q1 = min(q0 + chunk, target.shape[0])
        aff = torch.exp(torch.einsum("qd,mkd->mqk", target[q0:q1], context) / temperature)  # [m, q, hw]
        if near is not None:
            aff = aff * near[q0:q1].to(aff.dtype)[None]
        aff = aff.permute(0, 2, 1).reshape(m * hw, q1 - q0)  # keys x queries
        kth = torch.topk(aff, k, dim=0).values.min(dim=0).values
        aff = torch.where(aff < kth[None], torch.zeros((), dtype=aff.dtype, device=aff.device), aff)
        aff = aff / aff.sum(dim=0, keepdim=True)
        out[:, q0:q1] = flat_labels @ aff
    return out


def first_labels(mask: np.ndarray, grid: tuple[int, int], num_labels: int) -> torch.Tensor:
    """float32 [C, h, w] one-hot of the first mask, resized (nearest) to the token grid as DINO's read_seg."""
    from PIL import Image

    ids = np.where(mask == VOID, 0, mask).astype(np.uint8)
    small = np.asarray(Image.fromarray(ids).resize((grid[1], grid[0]), Image.NEAREST))
    onehot = np.zeros((num_labels, *grid), np.float32)
    for c in range(num_labels):
        onehot[c] = small == c
    return torch.from_numpy(onehot)


def propagate_video(tokens: np.ndarray | torch.Tensor, first: torch.Tensor, *, n_last_frames: int, radius: int,
                    topk: int, temperature: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Soft label maps [n, C, h, w] of every token frame; frame 0 is the given `first` [C, h, w]."""
    x = torch.as_tensor(tokens, dtype=torch.float32, device=device)
    n, h, w, D = x.shape
    feats = F.normalize(x.reshape(n, h * w, D), dim=-1)
    first = first.to(device)
    C = first.shape[0]
    near = neighbourhood(h, w, radius)
    near = near.to(device) if near is not None else None
    out = torch.empty((n, C, h * w), dtype=torch.float32, device=device)
    out[0] = first.reshape(C, h * w)
    recent: list[int] = []  # indices of the last predicted frames, oldest first
    for t in range(1, n):
        ctx = [0] + recent
        out[t] = propagate_step(feats[t], feats[ctx], out[ctx], topk, temperature, near)
        recent.append(t)
        if len(recent) > n_last_frames:
            recent.pop(0)
    return out.reshape(n, C, h, w)


def labels_to_mask(soft: torch.Tensor, patch: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] ids from a label map [C, h, w]: bilinear x patch, per-channel min-max, argmax, nearest resize."""
    from PIL import Image

    up = F.interpolate(soft[None], scale_factor=patch, mode="bilinear", align_corners=False,
                       recompute_scale_factor=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    normed = torch.where(hi > 0, (up - lo) / torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi)), up)
    ids = normed.argmax(dim=0).to(torch.uint8).cpu().numpy()
    if ids.shape != tuple(size):
        ids = np.asarray(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))
    return ids


def token_frame_of(frame_index: np.ndarray, num_frames: int, span: int = 1) -> tuple[np.ndarray, int]:
    """(token frame of every evaluated frame, number of evaluated frames from frame 0).

    A token frame covers the frames up to the next one's start; the last covers as many as the one
    before it (or `span` frames when there is only one)."""
    step = int(frame_index[1] - frame_index[0]) if len(frame_index) > 1 else span
    last = min(num_frames - 1, int(frame_index[-1]) + step - 1)
    frames = np.arange(last + 1)
    return np.searchsorted(frame_index, frames, side="right") - 1, last + 1


def _palette(path: Path) -> np.ndarray | None:
    from PIL import Image

    with Image.open(path) as im:
        pal = im.getpalette()
    return None if pal is None else np.asarray(pal, np.uint8)


def propagate_one(video: FrameVideo, params: dict, device, frames_per_token: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ids [T', H, W], ground truth [T', H, W]) for the evaluated frames of one video."""
    fi = video.frame_index()
    if len(fi) == 0 or fi[0] != 0:
        raise DataError(f"{video.path}: the store's first token frame is not frame 0; label propagation "
                        f"starts from the first frame's mask (extract with --protocol frames:all)")
    which, count = token_frame_of(fi, video.num_frames, frames_per_token)
    gt = video.masks(list(range(count)))
    num_labels = int(np.where(gt[0] == VOID, 0, gt[0]).max()) + 1
    first = first_labels(gt[0], video.grid, num_labels)
    soft = propagate_video(video.tokens(), first, device=device, **params)
    pred = np.zeros_like(gt)
    cache: dict[int, np.ndarray] = {}
    for f in range(count):
        k = int(which[f])
        if k == 0:
            pred[f] = np.where(gt[0] == VOID, 0, gt[0])
            continue
        if k not in cache:
            cache[k] = labels_to_mask(soft[k], video.patch_size, (video.height, video.width))
        pred[f] = cache[k]
    return pred, gt


def run_propagate(store, out_dir: str | Path, cfg: PropagateConfig | None = None, progress=None,
                  overwrite: bool = False) -> dict:
    """Propagate the first mask through every video of `cfg.split`; write masks and results (see module doc)."""
    from vidcache.device import resolve_device

    t0 = time.perf_counter()
    cfg = check(cfg or PropagateConfig(), "propagate config")
    store = open_frame_store(store)
    videos = frame_videos(store, cfg.split)
    params = cfg.resolved()
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    run_hash = config_hash({"propagate": {k: v for k, v in to_dict(cfg).items() if k != "device"},
                            "store": store.config_hash})
    _claim(out, run_hash, overwrite)
    save_json(cfg, out / "config.json")
    fpt = int(store.attrs.get("frames_per_token", 1))
    scores, baseline, frames_done, prop_s = {}, {}, 0, 0.0
    for i, video in enumerate(videos):
        seq_file = out / "sequences" / f"{video.name}.json"
        done = _read_json(seq_file)
        if done is None or done.get("run_hash") != run_hash:
            ts = time.perf_counter()
            pred, gt = propagate_one(video, params, device, fpt)
            seconds = time.perf_counter() - ts
            palette = _palette(video.mask_file(0))
            names = video.frame_names()
            for f in range(len(pred)):
                write_mask(out / "Annotations" / video.name / f"{names[f]}.png", pred[f], palette)
            copy = np.broadcast_to(np.where(gt[0] == VOID, 0, gt[0]), gt.shape)
            done = {"run_hash": run_hash, "row": video.row, "path": video.path, "frames": len(pred),
                    "seconds": seconds,
                    "scores": _plain(sequence_scores(gt, pred, cfg.bound_th)),
                    "copy_first": _plain(sequence_scores(gt, copy, cfg.bound_th))}
            save_json(done, seq_file)
        scores[video.name] = {int(k): v for k, v in done["scores"].items()}
        baseline[video.name] = {int(k): v for k, v in done["copy_first"].items()}
        frames_done += int(done["frames"])
        prop_s += float(done["seconds"])
        if progress is not None:
            progress(i + 1, len(videos))
    summary = summarize(scores)
    copy = summarize(baseline)
    for name, seq in summary["sequences"].items():
        seq["copy_first_JF"] = copy["sequences"][name]["JF_mean"]
    results = {"probe": "propagate", "split": cfg.split, **{k: summary[k] for k in ("J_mean", "F_mean", "JF_mean")},
               "num_objects": summary["num_objects"], "num_sequences": len(videos),
               "sequences": summary["sequences"],
               "baseline": {"copy_first": {k: copy[k] for k in ("J_mean", "F_mean", "JF_mean")}},
               "selected": params, "config": to_dict(cfg), "run_hash": run_hash,
               "store": store.url, "config_hash": store.config_hash,
               "backbone": (store.config.get("backbone") or {}).get("name"),
               "timings": {"total_s": time.perf_counter() - t0, "propagate_s": prop_s,
                           "frames": frames_done, "frames_per_s": frames_done / max(prop_s, 1e-9)}}
    save_json(results, out / "results.json")
    return results


def _claim(out: Path, run_hash: str, overwrite: bool) -> None:
    """Refuse an output folder holding another run (another config or store) unless `overwrite`."""
    prev = _read_json(out / "results.json") or {}
    if prev.get("run_hash") and prev["run_hash"] != run_hash and not overwrite:
        raise DataError(f"{out} holds a propagation run with another config or store; use another -o folder "
                        f"or --overwrite")
    if overwrite and (out / "sequences").is_dir():
        import shutil

        shutil.rmtree(out / "sequences")
        shutil.rmtree(out / "Annotations", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _plain(scores: dict) -> dict:
    return {str(k): {"J": v["J"], "F": v["F"]} for k, v in scores.items()}


def results_table(res: dict, title: str = "label propagation"):
    """Per-sequence J, F, J&F with the copy-the-first-mask baseline, and the overall row."""
    from rich.table import Table

    t = Table(title=title)
    for c in ("sequence", "objects", "J", "F", "J&F", "copy-first J&F"):
        t.add_column(c, justify="left" if c == "sequence" else "right")
    for name, s in res["sequences"].items():
        t.add_row(name, str(len(s["objects"])), f"{s['J_mean']:.3f}", f"{s['F_mean']:.3f}", f"{s['JF_mean']:.3f}",
                  f"{s['copy_first_JF']:.3f}")
    b = res["baseline"]["copy_first"]
    t.add_row("[bold]all", str(res["num_objects"]), f"{res['J_mean']:.3f}", f"{res['F_mean']:.3f}",
              f"{res['JF_mean']:.3f}", f"{b['JF_mean']:.3f}")
    return t
