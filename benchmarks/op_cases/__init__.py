"""One module per operator family; each defines ``cases() -> list[Case]`` (see benchmarks/_bench.py)."""
