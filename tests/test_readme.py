"""CI runs README.md's first code block verbatim: pin its shape so the two commands cannot drift."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reader():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_first_block_is_the_two_commands():
    commands = _reader().first_block_commands((ROOT / "README.md").read_text())
    assert len(commands) == 2
    demo, tests = commands
    assert "pip install -e ." in demo and "vidcache demo" in demo
    assert 'pip install -e ".[test]"' in tests and "pytest" in tests


def test_reader_skips_comments_and_stops_at_the_fence():
    text = "# t\n\n```bash\n# a comment\nfirst cmd  # why\n\nsecond\n```\n```\nthird\n```\n"
    assert _reader().first_block_commands(text) == ["first cmd  # why", "second"]
