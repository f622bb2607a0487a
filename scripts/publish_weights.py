"""Publish weights for a registry model to the Hub: same as `zoo publish` (see `--help`)."""
import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
