"""vidcache benchmarks: one script per area; `python -m benchmarks` runs them all in quick mode."""
