"""`python -m vidcache ...`, which is also what `torchrun -m vidcache ...` runs."""

from vidcache.cli import main

if __name__ == "__main__":
    main()
