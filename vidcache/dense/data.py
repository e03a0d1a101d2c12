"""What every dense evaluation reads: a video's patch-token frames and its masks, through the store API.

    store = open_frame_store("davis.zarr")               # refuses a store without frame tokens
    for video in frame_videos(store, "val"):
        tokens = video.tokens()                          # float32 [n, h, w, D], padding cut off
        gt = video.masks()                               # uint8 [T, H, W] object ids per frame

Frame tokens are one chunk per video (`clips/frame_tokens`), so a video is one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidcache.cache import Store
from vidcache.data.davis import frame_names, mask_path, read_mask, sequence_name
from vidcache.errors import DataError

TOKENS = "clips/frame_tokens"


def open_frame_store(store: str | Path | Store) -> Store:
    """Open a clip store and check it holds per-frame patch tokens."""
    s = store if isinstance(store, Store) else Store.open(store, kind="clips")
    if TOKENS not in s.data_arrays:
        raise DataError(f"{s.url} holds no per-frame patch tokens; extract a frame-token store with "
                        f"`vidcache extract clips MANIFEST -o STORE --protocol frames:all --tokens full`")
    return s


@dataclass
class FrameVideo:
    """One done video of a frame-token store."""

    store: Store
    row: int
    path: str
    name: str
    mask_dir: str
    num_frames: int
    height: int
    width: int
    num_token_frames: int
    grid: tuple[int, int]

    @property
    def patch_size(self) -> int:
        return int(self.store.attrs.get("patch_size", 1))

    def tokens(self) -> np.ndarray:
        """float32 [num_token_frames, h, w, D]."""
        t = self.store.read_rows(TOKENS, np.array([self.row]))[0]
        h, w = self.grid
        return np.ascontiguousarray(t[:self.num_token_frames, :h, :w], dtype=np.float32)

    def frame_index(self) -> np.ndarray:
        """int64 [num_token_frames]: the first video frame of each token frame."""
        return self.store.read_rows("clips/frame_index", np.array([self.row]))[0][:self.num_token_frames].astype(np.int64)

    def frame_names(self) -> list[str]:
        return frame_names(self.path, self.num_frames)

    def mask_file(self, frame: int) -> Path:
        return mask_path(self.mask_dir, self.frame_names()[frame])

    def masks(self, frames: list[int] | None = None) -> np.ndarray:
        """uint8 [len(frames), H, W] object ids (all frames by default); a missing or mis-sized mask is refused."""
        names = self.frame_names()
        frames = list(range(self.num_frames)) if frames is None else list(frames)
        out = np.zeros((len(frames), self.height, self.width), np.uint8)
        for k, f in enumerate(frames):
            m = read_mask(mask_path(self.mask_dir, names[f]))
            if m.shape != (self.height, self.width):
                raise DataError(f"mask {mask_path(self.mask_dir, names[f])} is {m.shape[1]}x{m.shape[0]} but "
                                f"the video's frames are {self.width}x{self.height}; masks must match the frames")
            out[k] = m
        return out


def frame_videos(store: Store, split: str | None, need_masks: bool = True) -> list[FrameVideo]:
    """The done videos of a split (all when None) with their sizes; videos without masks are refused."""
    rows = store.rows(split, "done")
    if len(rows) == 0:
        raise DataError(f"{store.url} has no done videos in split {split!r}; finish the extraction first")
    v = store.videos()
    masks = v.get("masks")
    names: dict[str, int] = {}
    out = []
    for r in rows.tolist():
        mask_dir = str(masks[r]) if masks is not None else ""
        if need_masks and not mask_dir:
            raise DataError(f"video {v['path'][r]} has no mask folder: give the manifest a masks column "
                            f"(`vidcache data manifest ROOT --format davis`, or `vidcache data synth`) "
                            f"and extract again")
        if need_masks and not Path(mask_dir).is_dir():
            raise DataError(f"mask folder {mask_dir} of video {v['path'][r]} does not exist")
        name = sequence_name(str(v["path"][r]))
        if name in names:  # two videos with one name: keep folders apart
            name = f"{name}-{r}"
        names[name] = r
        out.append(FrameVideo(store, r, str(v["path"][r]), name, mask_dir, int(v["num_frames"][r]),
                              int(v["height"][r]), int(v["width"][r]), int(v["num_token_frames"][r]),
                              (int(v["grid_h"][r]), int(v["grid_w"][r]))))
    return out
