"""`python -m vidcache ...`, which is also what `torchrun -m vidcache ...` runs."""

import sys

if __name__ == "__main__":
    try:
        from vidcache.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the CLI is still importing
        print("interrupted: nothing was started; rerun the command", file=sys.stderr)
        sys.exit(130)
    main()
