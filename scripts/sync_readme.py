"""Regenerate the model table in README.md from registry.yaml."""
from pathlib import Path

from zoo.cards.index import sync_readme

if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "README.md"
    print("README.md model table", "updated" if sync_readme(readme) else "already current")
