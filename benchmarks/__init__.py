"""vidcache benchmarks: one script per area; `python -m benchmarks` runs them all in quick mode."""

import vidcache  # noqa: F401  (first: sets vidcache's OpenMP defaults before torch is imported)
