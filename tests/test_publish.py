"""`make publish`: the built HTML book reaches the gh-pages branch of a remote (ghp-import).

Each test runs the project's Makefile (``make -f``) inside a throwaway git repository whose
remote is a bare repository in tmp_path, with a fake built book: nothing touches this
checkout's own git repository or its _build/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A commit identity and no user or system git configuration (a global commit.gpgsign or hook
# would break the throwaway commits).
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}


def _git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                         capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout


def _publish(repo: Path, **variables: str) -> subprocess.CompletedProcess:
    """`make publish` of this project's Makefile, run in ``repo`` with this interpreter."""
    args = [f"{k}={v}" for k, v in {"PY": sys.executable, **variables}.items()]
    return subprocess.run(["make", "-s", "-C", str(repo), "-f", str(ROOT / "Makefile"), "publish", *args],
                          env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def site(tmp_path) -> dict[str, Path]:
    """A bare remote, a one-commit repository on ``main``, and a fake built book."""
    bare = tmp_path / "remote.git"
    _git("init", "--quiet", "--bare", str(bare))
    repo = tmp_path / "project"
    _git("init", "--quiet", "-b", "main", str(repo))
    (repo / "README.md").write_text("a tiny project\n")
    _git("add", "README.md", cwd=repo)
    _git("commit", "--quiet", "-m", "first", cwd=repo)
    html = tmp_path / "book-html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html>the book, first build</html>\n")
    (html / "_static" / "book.css").write_text("body {}\n")
    return {"bare": bare, "repo": repo, "html": html}


def test_publish_pushes_the_built_book_to_gh_pages(site):
    pytest.importorskip("ghp_import", reason="ghp-import (the book extra) is not installed in this environment")
    out = _publish(site["repo"], REMOTE=str(site["bare"]), BUILD_HTML=str(site["html"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"published {site['html']} to the gh-pages branch of {site['bare']}" in out.stdout
    git_dir = f"--git-dir={site['bare']}"
    assert _git(git_dir, "show", "gh-pages:index.html") == "<html>the book, first build</html>\n"
    files = set(_git(git_dir, "ls-tree", "-r", "--name-only", "gh-pages").split())
    # .nojekyll: GitHub Pages would otherwise drop _static/ (Jekyll skips folders named _*).
    assert files == {".nojekyll", "index.html", "_static/book.css"}
    head = _git("rev-parse", "--short", "HEAD", cwd=site["repo"]).strip()
    assert _git(git_dir, "log", "-1", "--format=%s", "gh-pages").strip() == f"the book, built from {head}"
    # The project's own branch is untouched on the remote: only gh-pages was pushed.
    assert _git(git_dir, "branch", "--format=%(refname:short)").split() == ["gh-pages"]

    # A second build replaces the first: a file the new build lacks is gone from the branch.
    (site["html"] / "_static" / "book.css").unlink()
    (site["html"] / "index.html").write_text("<html>the book, second build</html>\n")
    out = _publish(site["repo"], REMOTE=str(site["bare"]), BUILD_HTML=str(site["html"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert _git(git_dir, "show", "gh-pages:index.html") == "<html>the book, second build</html>\n"
    assert set(_git(git_dir, "ls-tree", "-r", "--name-only", "gh-pages").split()) == {".nojekyll", "index.html"}


def test_publish_without_a_built_book_says_to_build_it(site):
    (site["html"] / "index.html").unlink()
    out = _publish(site["repo"], REMOTE=str(site["bare"]), BUILD_HTML=str(site["html"]))
    assert out.returncode != 0
    assert f"make publish: {site['html']}/index.html is missing; run make book first" in out.stderr
    assert _git(f"--git-dir={site['bare']}", "branch").strip() == ""  # nothing was pushed


def test_publish_refuses_the_checked_out_branch(site, monkeypatch):
    # A BRANCH in the environment is ignored (some CI services set one)...
    monkeypatch.setenv("BRANCH", "main")
    monkeypatch.setenv("REMOTE", "nowhere")
    out = subprocess.run(["make", "-s", "-C", str(site["repo"]), "-f", str(ROOT / "Makefile"), "help"],
                         capture_output=True, text=True, check=True).stdout
    assert "push the built book to the gh-pages branch of origin" in out
    # ...and naming the checked-out branch on the command line stops before any commit.
    out = _publish(site["repo"], REMOTE=str(site["bare"]), BUILD_HTML=str(site["html"]), BRANCH="main")
    assert out.returncode != 0
    assert "make publish: BRANCH=main is the branch checked out here" in out.stderr
    assert _git("log", "--format=%s", "main", cwd=site["repo"]).split() == ["first"]
