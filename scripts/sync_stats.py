"""Recompute zoo/model_stats.json (parameters and GFLOPs per registry entry; see zoo/stats.py).

    python scripts/sync_stats.py            # entries that are missing or whose arch/args/input_size changed
    python scripts/sync_stats.py --force    # every entry (after changing a model's code)
"""
import argparse

from zoo.cards.stats import stats_path, sync_stats

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="recompute every entry, not only missing or stale ones")
    args = parser.parse_args()
    changed = sync_stats(force=args.force)
    print(f"{stats_path().name}:", "updated " + ", ".join(changed) if changed else "already current")
