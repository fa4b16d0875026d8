"""lgprune benchmarks: `python -m benchmarks` (see `--help`)."""
