"""Dense-probe fixtures: a tiny DAVIS tree extracted frame by frame into a store of patch tokens."""

import pytest


def _davis_patch_store(root, make_davis, seqs, size=(24, 32)):
    """(DAVIS root, store url): every frame through `tiny_frame` with 4-pixel patches, all tokens kept.

    Frames are doubled to a 48-pixel short side, so the 4 x 4 still square spans 2 x 2 tokens.
    """
    from vidcache.data.davis import manifest_from_davis
    from vidcache.extract.clips import ClipExtractConfig, extract_clips

    make_davis(root, seqs=seqs, size=size)
    cfg = ClipExtractConfig(backbone="tiny_frame", backbone_options={"patch_size": 4}, protocol="frames:all",
                            tokens="full", short_side=48, size_multiple=8, workers=0)
    extract_clips(manifest_from_davis(root), root / "s.zarr", cfg)
    return root, root / "s.zarr"


@pytest.fixture(scope="session")
def davis_patch_store(make_davis):
    """davis_patch_store(root, seqs, size=(24, 32)) -> (root, store url); see `_davis_patch_store`."""
    return lambda root, seqs, size=(24, 32): _davis_patch_store(root, make_davis, seqs, size)
