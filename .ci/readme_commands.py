"""Print the commands of README.md's first fenced code block, one per line.

CI runs exactly these, so the commands a user reads are the commands CI proves. Comment-only and
blank lines are skipped; a trailing `# comment` stays (bash ignores it).
"""

import sys
from pathlib import Path


def first_block_commands(text: str) -> list[str]:
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("```"))
    except StopIteration:
        raise SystemExit("README.md has no fenced code block")
    commands = []
    for line in lines[start + 1:]:
        if line.lstrip().startswith("```"):
            return commands
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            commands.append(stripped)
    raise SystemExit("README.md's first code block is not closed")


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    for command in first_block_commands(path.read_text()):
        print(command)
