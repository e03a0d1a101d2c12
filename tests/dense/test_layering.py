"""Dense evaluations read stores and masks only: they never import the extraction stage or the CLI."""

import ast
from pathlib import Path

import vidcache.dense


def test_dense_imports_no_extract_or_cli():
    bad = []
    for f in Path(vidcache.dense.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{f.name}: {n}" for n in names if n.startswith(("vidcache.extract", "vidcache.cli"))]
    assert not bad


def test_frames_folders_live_on_the_ground_floor():
    """The frames-folder reader sits in video/ (ground floor), which imports no stage such as data/."""
    import vidcache.video

    for f in Path(vidcache.video.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidcache."):
                assert node.module.split(".")[1] in ("errors", "video", "config", "device"), (f.name, node.module)
