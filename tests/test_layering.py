"""The import layering of docs/architecture.md holds: setup.cfg's import-linter contract, no exceptions."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is in the test extra")
def test_layers_contract_is_kept():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "[importlinter:contract:layers]" in cfg and "ignore_imports" not in cfg  # no exception list
    r = subprocess.run(["lint-imports", "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout
