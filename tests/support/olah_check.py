"""Run olah (a real, third-party Hub mirror) over plain git repositories: an independent check that
the download path works against a server we did not write.

olah lives in its own venv so its pins do not touch the project's; point ``ZOO_OLAH_CLI`` at its
``olah-cli`` (.ci/run installs olah 0.5.4 into a venv of its own and sets it). Without it the ``olah``
fixture skips the test.

Config keys (olah 0.5.4, ``olah/configs.py``): ``[basic]`` host, port, repos-path (olah's own cache),
mirrors-path (a LIST of folders holding ``models/<org>/<name>`` git repos, looked up on every request),
hf-scheme / hf-netloc (upstream; 127.0.0.1:9 so nothing leaves the machine), mirror-scheme /
mirror-netloc (the URLs olah hands out); ``[accessibility] offline = true`` (never go upstream).
``olah-cli --log-path`` takes the log folder (default ./logs). With a pinned revision a missing file
raised EntryNotFoundError here; ``model_info`` without a revision fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

OLAH_ENV = "ZOO_OLAH_CLI"
_GIT_ENV = {"GIT_AUTHOR_NAME": "zoo", "GIT_AUTHOR_EMAIL": "zoo@example.invalid", "GIT_COMMITTER_NAME": "zoo",
            "GIT_COMMITTER_EMAIL": "zoo@example.invalid", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_git_repo(mirrors: Path, repo_id: str, files: dict[str, bytes], tag: str | None = None,
                  message: str = "add files") -> str:
    """Commit ``files`` to branch main of the git repo ``mirrors/models/<repo_id>`` (created if needed;
    plain git, no LFS); tag the commit if ``tag``. Returns the commit sha."""
    repo = mirrors / "models" / repo_id
    if not (repo / ".git").exists():
        repo.mkdir(parents=True)
        _git(repo, "init", "-q", "-b", "main")
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    _git(repo, "add", "--", *files)
    _git(repo, "commit", "-q", "-m", message)
    if tag is not None:
        _git(repo, "tag", tag)
    return _git(repo, "rev-parse", "HEAD")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"olah-cli exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"olah-cli did not listen on {port} within {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class OlahMirror:
    """A running olah: ``endpoint`` for the client, ``mirrors`` the folder of git repos it serves."""

    endpoint: str
    mirrors: Path

    def add_repo(self, repo_id: str, files: dict[str, bytes], tag: str | None = None) -> str:
        """See :func:`make_git_repo`; olah looks repos up per request, so this works while it runs."""
        return make_git_repo(self.mirrors, repo_id, files, tag)


def olah_cli_path() -> str:
    """``$ZOO_OLAH_CLI`` if it is an executable file, else skip the calling test."""
    cli = os.environ.get(OLAH_ENV, "")
    if not cli:
        pytest.skip(f"{OLAH_ENV} is not set (point it at olah-cli from a separate venv: pip install olah)")
    if not (os.path.isfile(cli) and os.access(cli, os.X_OK)):
        pytest.skip(f"{OLAH_ENV}={cli!r} is not an executable file")
    return cli


def start_olah(cli: str, workdir: Path, startup_timeout: float = 60.0) -> tuple[subprocess.Popen, OlahMirror]:
    """Write ``workdir/olah.toml`` (offline, mirrors in ``workdir/mirrors``) and start ``cli`` on a
    free port; returns once it listens. The caller terminates the process."""
    mirrors, port = workdir / "mirrors", _free_port()
    (mirrors / "models").mkdir(parents=True, exist_ok=True)
    config = workdir / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{workdir / "olah-repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        'hf-scheme = "http"\n'
        'hf-netloc = "127.0.0.1:9"\n'
        'hf-lfs-netloc = "127.0.0.1:9"\n'
        'mirror-scheme = "http"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "\n[accessibility]\n"
        "offline = true\n"
    )
    log = workdir / "olah-cli.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([cli, "--config", str(config), "--log-path", str(workdir / "logs")],
                                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, log, startup_timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, OlahMirror(f"http://127.0.0.1:{port}", mirrors)


@pytest.fixture
def olah(tmp_path: Path) -> Iterator[OlahMirror]:
    """A running olah-cli (from ``$ZOO_OLAH_CLI``; skipped when unset) over an empty mirrors folder."""
    cli = olah_cli_path()
    workdir = tmp_path / "olah"
    workdir.mkdir()
    proc, mirror = start_olah(cli, workdir)
    try:
        yield mirror
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
