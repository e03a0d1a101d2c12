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
