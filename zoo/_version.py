"""The package version, importable without importing the whole package (``zoo/__init__`` imports everything)."""
__version__ = "0.1.0"
