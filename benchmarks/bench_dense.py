"""Dense evaluation on cached frame tokens (DESIGN.md §6).

(a) Retrieval: Hummingbird's k = 30 search of a patch bank, faiss (the probes' exact `search`) vs
    brute-force numpy (one GEMM + argpartition) on the same bank and queries; the neighbour sets
    must agree. Also faiss's time against the matrix-multiply lower bound of the same search
    (2 * queries * bank * dim FLOPs at the GEMM rate measured here on a large float32 product).
    Targets: faiss >= 1x brute force; faiss within 4x of the GEMM bound.
(b) Propagation: DINO label propagation frames/s from the cache (store read + propagate) vs the
    reference way (decode each frame, resize, run the backbone, then propagate), same sequences,
    same backbone (tiny_frame, 8-pixel patches), on a DAVIS-format tree of real photographs
    (scikit-learn's sample images, cut-out objects moving over them). Target: cache >= 2x.
(c) PQ vs f16 tokens: a faiss ProductQuantizer (8-bit codes, M sub-vectors) trained on the train
    split's tokens, the val tokens encoded and decoded, propagation J&F on decoded vs f16 tokens.
    Target: >= 16x fewer bytes per token for <= 0.01 J&F lost. (PQ codes are measured here only;
    stores keep f16 tokens.)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import vidcache  # noqa: F401  (package OpenMP defaults before torch)
from benchmarks.common import Report, best_of, parser


def gemm_rate(n: int = 1024, repeat: int = 3) -> float:
    """float32 GEMM FLOP/s of this machine (numpy's BLAS), best of `repeat`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    t = best_of(lambda: a @ b, repeat)
    return 2 * n ** 3 / t


def bench_retrieval(rep: Report, bank_n: int, queries_n: int, dim: int, k: int = 30) -> None:
    from vidcache.probe.knn import l2_normalize, search

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, dim), dtype=np.float32)
    bank = l2_normalize(centres[rng.integers(0, 64, bank_n)] + 0.7 * rng.standard_normal((bank_n, dim),
                                                                                          dtype=np.float32))
    q = l2_normalize(centres[rng.integers(0, 64, queries_n)] + 0.7 * rng.standard_normal((queries_n, dim),
                                                                                       dtype=np.float32))
    out = {}

    def run_faiss():
        out["faiss"] = search(bank, q, k)[1]

    def run_brute():
        ids = np.empty((queries_n, k), np.int64)
        for s in range(0, queries_n, 1024):
            sim = q[s:s + 1024] @ bank.T
            part = np.argpartition(-sim, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1, kind="stable")
            ids[s:s + 1024] = np.take_along_axis(part, order, 1)
        out["brute"] = ids

    t_faiss, t_brute = best_of(run_faiss, 2), best_of(run_brute, 2)
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(out["faiss"], out["brute"])]))
    rate = gemm_rate()
    bound = 2 * queries_n * bank_n * dim / rate
    rep.figure("retrieval_bank_patches", bank_n)
    rep.figure("retrieval_queries", queries_n)
    rep.figure("retrieval_faiss_s", t_faiss)
    rep.figure("retrieval_bruteforce_s", t_brute)
    rep.figure("retrieval_neighbour_agreement", agree)
    rep.figure("gemm_gflops", rate / 1e9)
    rep.figure("retrieval_gemm_bound_s", bound)
    rep.target("retrieval_faiss_vs_bruteforce", t_brute / t_faiss, ">=", 1.0, unit="x")
    rep.target("retrieval_faiss_over_gemm_bound", t_faiss / bound, "<=", 4.0, unit="x")
    rep.target("retrieval_neighbour_agreement", agree, ">=", 0.999)


def make_tree(root: Path, sequences: int, frames: int, size: tuple[int, int]) -> Path:
    from sklearn.datasets import load_sample_images

    from vidcache.data.davis import write_cutout_davis

    return write_cutout_davis(root, load_sample_images().images, sequences=sequences, frames=frames, size=size,
                              seed=0)


def bench_propagation(rep: Report, work: Path, sequences: int, frames: int, size: tuple[int, int],
                      pq_m: int) -> None:
    import torch

    from vidcache.cache import Store
    from vidcache.data.davis import manifest_from_davis
    from vidcache.dense.data import frame_videos, open_frame_store
    from vidcache.dense.metrics import sequence_scores, summarize
    from vidcache.dense.propagate import PRESETS, first_labels, labels_to_mask, propagate_video
    from vidcache.extract.clips import ClipExtractConfig, extract_clips
    from vidcache.extract.sampling import frame_size
    from vidcache.extract.transforms import frames_tensor
    from vidcache.models import create_backbone
    from vidcache.video.decode import open_video

    root = make_tree(work / "davis", sequences, frames, size)
    short = min(size)
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 8}, protocol="frames:all",
                            tokens="full", short_side=short, size_multiple=8, workers=0)
    t = time.perf_counter()
    extract_clips(manifest_from_davis(root), work / "s.zarr", cfg)
    rep.figure("extract_s", time.perf_counter() - t)
    store = open_frame_store(work / "s.zarr")
    videos = frame_videos(store, "val")
    params = PRESETS["dino"]
    backbone = create_backbone("tiny_frame", patch_size=8).eval()

    def predict(tokens, video, gt0):
        n_labels = int(gt0.max()) + 1
        soft = propagate_video(tokens, first_labels(gt0, video.grid, n_labels), **params)
        return np.stack([gt0] + [labels_to_mask(soft[k], video.patch_size, gt0.shape) for k in range(1, len(soft))])

    def from_cache():
        for v in videos:
            predict(v.tokens(), v, v.masks([0])[0])

    def reference():
        for v in videos:
            with open_video(v.path) as video:
                h, w = frame_size(video.height, video.width, short, 8)
                toks = []
                for f in range(video.num_frames):  # one frame at a time, as DINO's script
                    x = frames_tensor(video.get_frames([f]), h, w, backbone.mean, backbone.std)
                    with torch.inference_mode():
                        toks.append(backbone.encode_frames(x.transpose(0, 1)).reshape(h // 8, w // 8, -1))
            predict(torch.stack(toks).numpy(), v, v.masks([0])[0])

    n_frames = sum(v.num_frames for v in videos)
    t_cache, t_ref = best_of(from_cache, 2), best_of(reference, 2)
    rep.figure("propagation_frames", n_frames)
    rep.figure("propagation_cache_fps", n_frames / t_cache)
    rep.figure("propagation_reference_fps", n_frames / t_ref)
    rep.target("propagation_cache_over_reference", t_ref / t_cache, ">=", 2.0, unit="x")

    # J&F with f16 tokens, with PQ-decoded tokens, and of copying the first mask
    import faiss

    train_tok = np.concatenate([v.tokens().reshape(-1, store.attrs["embed_dim"]) for v in frame_videos(store, "train")])
    D = train_tok.shape[1]
    quantizers = {}
    for m in (pq_m, 2 * pq_m):
        pq = faiss.ProductQuantizer(D, m, 8)
        pq.cp.min_points_per_centroid = 4  # small quick-mode training sets: no under-sampling warning
        pq.train(np.ascontiguousarray(train_tok, dtype=np.float32))
        quantizers[m] = pq
    scores = {"f16": {}, "copy": {}, **{f"pq{m}": {} for m in quantizers}}
    for v in videos:
        gt = v.masks()
        tok = v.tokens()
        scores["f16"][v.name] = sequence_scores(gt, predict(tok, v, gt[0]))
        scores["copy"][v.name] = sequence_scores(gt, np.broadcast_to(gt[0], gt.shape))
        for m, pq in quantizers.items():
            dec = pq.decode(pq.compute_codes(np.ascontiguousarray(tok.reshape(-1, D)))).reshape(tok.shape)
            scores[f"pq{m}"][v.name] = sequence_scores(gt, predict(dec, v, gt[0]))
    jf = {k: summarize(s)["JF_mean"] for k, s in scores.items()}
    rep.figure("jf_f16", jf["f16"])
    rep.figure("jf_copy_first", jf["copy"])
    rep.figure("bytes_per_token_f16", 2 * D, unit="B")
    for m, pq in quantizers.items():
        rep.figure(f"jf_pq_m{m}", jf[f"pq{m}"])
        rep.figure(f"bytes_per_token_pq_m{m}", pq.code_size, unit="B")
    rep.target("pq_compression", 2 * D / quantizers[pq_m].code_size, ">=", 16.0, unit="x")
    rep.target("pq_jf_lost", jf["f16"] - jf[f"pq{pq_m}"], "<=", 0.01)
    rep.target("propagation_over_copy_first_jf", jf["f16"] - jf["copy"], ">=", 0.1)
    Store.open(work / "s.zarr")  # the store is still readable after the run


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    quick = args.quick
    cfg = {"quick": quick,
           "retrieval": {"bank": 20_000 if quick else 100_000, "queries": 2_000 if quick else 4_000, "dim": 96},
           "propagation": {"sequences": 2 if quick else 4, "frames": 8 if quick else 24,
                           "size": [120, 160] if quick else [240, 320], "pq_m": 12}}
    rep = Report("dense", cfg, args.device)
    r = cfg["retrieval"]
    bench_retrieval(rep, r["bank"], r["queries"], r["dim"])
    p = cfg["propagation"]
    with tempfile.TemporaryDirectory() as tmp:
        bench_propagation(rep, Path(tmp), p["sequences"], p["frames"], tuple(p["size"]), p["pq_m"])
    rep.finish(args.out)


if __name__ == "__main__":
    main()
