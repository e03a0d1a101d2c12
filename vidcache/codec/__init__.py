"""vidcache.codec: k-means patch codes (ViDROP-style): train a codebook, encode frames, decode on device.

    cb = train_codebook(read_manifest("train.csv"), CodecConfig(k=4096, patch=10, size=160))
    cb.save("codebook.npz"); cb = load_codebook("codebook.npz")
    codes = cb.encode_frames(frames)                  # uint8 [T, H, W, 3] -> uint16 [T, 16, 16]
    video = CodeDecoder(cb).cuda()(torch.from_numpy(codes[None]).cuda())   # [1, 3, T, 160, 160]
"""

from vidcache._lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "vidcache.codec.config": ["MAX_K", "CodecConfig"],
    "vidcache.codec.codebook": ["Codebook", "code_dtype", "codebook_from_config",
        "load_codebook"],
    "vidcache.codec.decoder": ["CodeDecoder", "decode_codes_np"],
    "vidcache.codec.evaluate": ["evaluate_codes", "evaluate_store", "psnr", "write_preview"],
    "vidcache.codec.frames": ["patchify", "preprocess_frames", "select_frames", "unpatchify"],
    "vidcache.codec.kmeans": ["NearestCentroid", "kmeans"],
    "vidcache.codec.train": ["fit_codebook", "sample_patches", "train_codebook", "training_digest"],
})
