"""The patch codebook (ViDROP-style): k-means centroids of p x p RGB patches, and its file format.

A frame resized to `size x size` becomes an (size/p) x (size/p) grid of codes, one integer per patch:
uint16 when K > 256 (ViDROP: 10x10 patches, K = 65,536, 300 bytes -> 2 bytes = 150x), uint8 when
K <= 256. Decoding is one gather: code -> centroid -> p x p tile.

File format (`.npz`, loaded with `allow_pickle=False`, so no code runs on load):
- `centroids`: float32 [K, p*p*3], patch vectors laid out as in `vidcache.codec.frames.patchify`,
  in the codebook's pixel space ("rgb255": 0..255, "rgb01": 0..1);
- `config`: a JSON string with the `CodecConfig` fields plus what training saw (`n_train_patches`,
  `train_digest` = sha256 of the sorted (path, frame indices) list, `faiss_version`, ...).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from vidcache.codec.config import MAX_K, PIXEL_SPACES, CodecConfig  # noqa: F401  (re-exported)
from vidcache.codec.frames import patchify, preprocess_frames
from vidcache.codec.kmeans import SEARCH_BATCH, NearestCentroid
from vidcache.config import check, to_dict
from vidcache.errors import ConfigError, DataError

FORMAT = "vidcache-codebook"
FORMAT_VERSION = 1


def code_dtype(k: int) -> np.dtype:
    """uint8 for K <= 256, uint16 up to 65,536; larger K is refused."""
    if k > MAX_K:
        raise ConfigError([f"k={k} centroids do not fit in uint16 codes (at most {MAX_K}); lower --k"], "codec")
    return np.dtype(np.uint8) if k <= 256 else np.dtype(np.uint16)


class Codebook:
    """Centroids plus their config; encodes frames to codes and decodes codes to pixels."""

    def __init__(self, centroids: np.ndarray, config: dict, device: str = "auto"):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.config = dict(config)
        self.device = device
        problems = _validate(self.centroids, self.config)
        if problems:
            raise DataError("invalid codebook: " + "; ".join(problems))
        self._search: NearestCentroid | None = None

    # ---------------------------------------------------------------- properties
    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def patch(self) -> int:
        return int(self.config["patch"])

    @property
    def size(self) -> int:
        return int(self.config["size"])

    @property
    def pixel_space(self) -> str:
        return str(self.config["pixel_space"])

    @property
    def dtype(self) -> np.dtype:
        return code_dtype(self.k)

    @property
    def grid(self) -> int:
        """Codes per frame side (size / patch)."""
        return self.size // self.patch

    @property
    def scale(self) -> float:
        """Multiplier from the codebook's pixel space to 0..255."""
        return 255.0 if self.pixel_space == "rgb01" else 1.0

    def centroids_255(self) -> np.ndarray:
        """Centroids in 0..255 pixel units, float32 [K, p*p*3]."""
        return self.centroids * np.float32(self.scale)

    def compression(self) -> float:
        """Raw uint8 RGB bytes per code byte: 3 p^2 / itemsize (ViDROP 10x10, uint16: 150)."""
        return 3 * self.patch ** 2 / self.dtype.itemsize

    # ---------------------------------------------------------------- encode / decode
    def preprocess_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3] (short-side resize + centre crop)."""
        return preprocess_frames(frames, self.size)

    def to_space(self, patches: np.ndarray) -> np.ndarray:
        """uint8 patch vectors -> float32 in the codebook's pixel space."""
        x = patches.astype(np.float32)
        return x / np.float32(255.0) if self.pixel_space == "rgb01" else x

    def searcher(self) -> NearestCentroid:
        if self._search is None:
            self._search = NearestCentroid(self.centroids, self.device)
        return self._search

    def encode_frames(self, frames: np.ndarray, preprocess: bool = True) -> np.ndarray:
        """uint8 frames [T, H, W, 3] -> codes [T, size/p, size/p] (uint8 when K <= 256, else uint16).

        With `preprocess=False` the frames must already be `size x size` (e.g. from `preprocess_frames`).
        """
        frames = self.preprocess_frames(frames) if preprocess else np.asarray(frames)
        if frames.shape[1:] != (self.size, self.size, 3):
            raise DataError(f"frames are {frames.shape[1:3]}, the codebook needs {self.size}x{self.size} "
                            f"(call with preprocess=True)")
        grid = patchify(frames, self.patch)
        flat = grid.reshape(-1, grid.shape[-1])
        codes = np.empty(len(flat), dtype=self.dtype)
        search = self.searcher()
        for s in range(0, len(flat), SEARCH_BATCH):
            codes[s:s + SEARCH_BATCH] = search.search(self.to_space(flat[s:s + SEARCH_BATCH]))[1]
        return codes.reshape(grid.shape[:-1])

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [..., h, w] -> float32 frames [..., h*p, w*p, 3] in 0..255 (see `decode_codes_np`)."""
        from vidcache.codec.decoder import decode_codes_np

        return decode_codes_np(codes, self.centroids_255(), self.patch)

    # ---------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the `.npz` file atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, centroids=self.centroids, config=np.array(json.dumps(self.full_config(), sort_keys=True)))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path

    def full_config(self) -> dict:
        return {**self.config, "format": FORMAT, "format_version": FORMAT_VERSION, "k": self.k}

    def store_attrs(self, fps: float | None = None, max_frames: int | None = None) -> dict:
        """Attributes for a code store's `codes/codebook` array (DESIGN.md §2), with the full codec config.

        Store `centroids_255()` as the array so readers need no pixel-space conversion.
        """
        return {"patch": self.patch, "height": self.size, "width": self.size, "fps": fps,
                "max_frames": max_frames, "pixel_space": "rgb255", "codec": self.full_config()}

    @classmethod
    def from_store_array(cls, centroids: np.ndarray, attrs: dict, device: str = "auto") -> "Codebook":
        """Rebuild a codebook from a code store's `codes/codebook` array and its attributes
        (`Store.codebook()` returns both)."""
        cfg = dict(attrs.get("codec") or {})
        if not cfg:
            cfg = {"patch": attrs.get("patch"), "size": attrs.get("height"), "pixel_space": "rgb255"}
        cfg["pixel_space"] = attrs.get("pixel_space", "rgb255")
        return cls(np.asarray(centroids), cfg, device=device)

    def __repr__(self) -> str:
        return (f"Codebook(k={self.k}, patch={self.patch}, size={self.size}, pixel_space={self.pixel_space!r}, "
                f"dtype={self.dtype.name}, compression={self.compression():.0f}x)")


def _validate(centroids: np.ndarray, cfg: dict) -> list[str]:
    p = []
    for key in ("patch", "size", "pixel_space"):
        if key not in cfg:
            p.append(f"config has no {key!r}")
    if p:
        return p
    if centroids.ndim != 2:
        return [f"centroids must be [K, p*p*3], got shape {centroids.shape}"]
    k, d = centroids.shape
    patch, size = int(cfg["patch"]), int(cfg["size"])
    if k > MAX_K:
        p.append(f"k={k} centroids do not fit in uint16 codes (at most {MAX_K})")
    if k < 1:
        p.append("no centroids")
    if d != patch * patch * 3:
        p.append(f"centroids have {d} entries, patch {patch} needs {patch * patch * 3}")
    if patch < 1 or size % patch:
        p.append(f"size {size} is not divisible by patch {patch}")
    if cfg["pixel_space"] not in PIXEL_SPACES:
        p.append(f"pixel_space {cfg['pixel_space']!r} is not one of {', '.join(PIXEL_SPACES)}")
    if "k" in cfg and int(cfg["k"]) != k:
        p.append(f"config says k={cfg['k']} but there are {k} centroids")
    if k and not np.isfinite(centroids).all():
        p.append("centroids contain NaN or inf")
    return p


def load_codebook(path: str | Path, device: str = "auto") -> Codebook:
    """Read and validate a codebook `.npz` (no pickles); every problem is reported at once."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"codebook not found: {path} (train one with `vidcache codec train MANIFEST -o {path}`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "centroids" not in z or "config" not in z:
                raise DataError(f"{path} is not a vidcache codebook (needs 'centroids' and 'config' entries)")
            centroids = z["centroids"]
            cfg = json.loads(str(z["config"]))
    except DataError:
        raise
    except Exception as e:  # not a zip, truncated file, bad JSON
        raise DataError(f"{path} is not a readable codebook ({type(e).__name__}: {e})") from None
    if cfg.get("format") != FORMAT:
        raise DataError(f"{path} is not a vidcache codebook (format {cfg.get('format')!r})")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{path} has codebook format {cfg['format_version']}; this vidcache reads up to "
                        f"{FORMAT_VERSION}: upgrade vidcache")
    if centroids.dtype != np.float32:
        raise DataError(f"{path}: centroids must be float32, got {centroids.dtype}")
    try:
        return Codebook(centroids, cfg, device=device)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def codebook_from_config(centroids: np.ndarray, cfg: CodecConfig, **info) -> Codebook:
    """A codebook from trained centroids, its training config and training facts (digest, counts...)."""
    check(cfg)
    return Codebook(centroids, {**to_dict(cfg), **info}, device=cfg.device)
