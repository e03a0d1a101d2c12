"""vidcache.video: reading videos (ground floor: imports no stage).

Every stage that touches pixels (`extract`, `codec`, `pretrain`'s mp4 loader) decodes through
`open_video`; see `vidcache.video.decode` for the backends and the failure rules.
"""

from vidcache.video.decode import (
    BACKENDS,
    DecodeError,
    VideoReader,
    decode_problems,
    iter_frames,
    open_video,
    probe_video,
    read_all,
    resample_indices,
)

__all__ = ["BACKENDS", "DecodeError", "VideoReader", "decode_problems", "iter_frames", "open_video",
           "probe_video", "read_all", "resample_indices"]
