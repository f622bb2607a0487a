"""Fuzzed ``hf-hub:`` ids and revisions: zoo.hubconfig.parse_hf_hub gives a safe revision or UnknownModelError."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zoo.errors import UnknownModelError
from zoo.hubconfig import parse_hf_hub

SETTINGS = settings(max_examples=400, deadline=None, database=None)
PIECES = ["a", "Z", "0", ".", "..", "/", "//", "-", "_", "@", " ", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85",
          "\u2028", "%2e", "~", ":", "\\", "é", "main", "v1.0", "refs/pr/1", "0123456789abcdef" * 2 + "01234567"]
pieces = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
revisions = st.none() | st.text(max_size=20) | pieces
names = st.one_of(
    st.text(max_size=30),
    st.builds(lambda s: "hf-hub:" + s, st.text(max_size=30)),
    st.builds(lambda o, r, rev: f"hf-hub:{o}/{r}" + ("" if rev is None else "@" + rev), pieces, pieces, st.none() | pieces),
)


def _check_revision(rev: str) -> None:
    assert rev, "an empty revision"
    assert ".." not in rev and not rev.startswith("/") and "//" not in rev, rev
    assert not any(unicodedata.category(ch) == "Cc" for ch in rev), rev


@SETTINGS
@given(names, revisions)
@example("hf-hub:org/repo@main\n", None)
@example("hf-hub:org/repo", "main\n")
@example("hf-hub:org/repo@../../etc", None)
@example("hf-hub:org/repo", "/abs")
@example("hf-hub:org/repo", "a//b")
@example("hf-hub:org/repo", "a\x7fb")
def test_hub_ids_parse_to_safe_revisions_or_raise(name, revision):
    try:
        parsed = parse_hf_hub(name, revision)
    except UnknownModelError as exc:
        assert name.startswith("hf-hub:") and str(exc)
        return
    if not name.startswith("hf-hub:"):
        assert parsed is None
        return
    repo, rev = parsed
    assert repo.count("/") == 1 and not any(unicodedata.category(ch) == "Cc" for ch in repo), repo
    assert name.startswith(f"hf-hub:{repo}")
    if rev is not None:
        _check_revision(rev)


@pytest.mark.parametrize("name,revision,expected", [
    ("hf-hub:org/repo", None, ("org/repo", None)),
    ("hf-hub:org/repo@v1.0", None, ("org/repo", "v1.0")),
    ("hf-hub:org/repo@main", "refs/pr/1", ("org/repo", "refs/pr/1")),
    ("resnet50", None, None),
])
def test_good_hub_ids(name, revision, expected):
    assert parse_hf_hub(name, revision) == expected
