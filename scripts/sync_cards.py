"""Regenerate the registry-derived parts of every model card (front matter, paper, weights, transforms, usage)."""
from zoo.cards import sync_all

if __name__ == "__main__":
    changed = sync_all()
    print("updated:", ", ".join(changed) if changed else "nothing (all cards current)")
