"""Test support code, not collected as tests: in-process servers and their fixtures, random checkpoints,
the operator case table. Import as ``from support.<module> import ...`` (pytest puts tests/ on sys.path,
see pyproject.toml)."""
