"""README: the model table is generated from the registry and current; its commands exist."""
from __future__ import annotations

import re
from pathlib import Path

from zoo.cli import build_parser
from zoo.docs import sync_readme
from zoo.registry import default_registry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_model_table_is_current():
    assert not sync_readme(README, write=False), "README model table is stale: run `python scripts/sync_readme.py`"
    text = README.read_text()
    for info in default_registry():
        assert f"| `{info.name}` |" in text


def test_readme_names_a_test_command_and_real_cli_commands():
    text = README.read_text()
    assert re.search(r"<!-- test-command -->\n```bash\npython -m pytest", text)
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for used in re.findall(r"^zoo (\w+)", text, flags=re.M):
        assert used in commands, f"README uses `zoo {used}`, which the CLI does not have"
