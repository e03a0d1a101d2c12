"""vidcache.codec: k-means patch codes (ViDROP-style): train a codebook, encode frames, decode on device.

    cb = train_codebook(read_manifest("train.csv"), CodecConfig(k=4096, patch=10, size=160))
    cb.save("codebook.npz"); cb = load_codebook("codebook.npz")
    codes = cb.encode_frames(frames)                  # uint8 [T, H, W, 3] -> uint16 [T, 16, 16]
    video = CodeDecoder(cb).cuda()(torch.from_numpy(codes[None]).cuda())   # [1, 3, T, 160, 160]
"""

from vidcache.codec.codebook import MAX_K, Codebook, CodecConfig, code_dtype, codebook_from_config, load_codebook
from vidcache.codec.decoder import CodeDecoder, decode_codes_np
from vidcache.codec.evaluate import evaluate_codes, evaluate_store, psnr, write_preview
from vidcache.codec.frames import patchify, preprocess_frames, select_frames, unpatchify
from vidcache.codec.kmeans import NearestCentroid, kmeans
from vidcache.codec.train import fit_codebook, sample_patches, train_codebook, training_digest

__all__ = [
    "MAX_K", "CodecConfig", "Codebook", "CodeDecoder", "NearestCentroid", "code_dtype", "codebook_from_config",
    "decode_codes_np", "evaluate_codes", "evaluate_store", "fit_codebook", "kmeans", "load_codebook", "patchify",
    "preprocess_frames", "psnr", "sample_patches", "select_frames", "train_codebook", "training_digest",
    "unpatchify", "write_preview",
]
