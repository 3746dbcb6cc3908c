"""The git gate (scripts/local/_git.py): docs/field-cases.md G1-G3, dirty, unpushed and shallow trees, in
temporary repositories with a local bare remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import _git
import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def sh(repo: Path, *args: str) -> str:
    import os

    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def commit(repo: Path, name: str, text: str = "x") -> str:
    (repo / name).write_text(text)
    sh(repo, "add", name)
    sh(repo, "commit", "-q", "-m", f"add {name}")
    return sh(repo, "rev-parse", "HEAD")


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, Path]:
    """A clone of a bare remote with one pushed commit on main; returns (work tree, remote)."""
    remote = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    work = tmp_path / "work"
    sh(tmp_path, "init", "-q", "-b", "main", str(work))
    sh(work, "remote", "add", "origin", str(remote))
    commit(work, "a.txt")
    sh(work, "push", "-q", "-u", "origin", "main")
    return work, remote


def test_clean_pushed_head_is_pinned(pushed: tuple[Path, Path]) -> None:
    work, remote = pushed
    pin = _git.gate(work, None)
    assert pin == _git.GitPin(url=str(remote), commit=sh(work, "rev-parse", "HEAD"), remote="origin")
    assert len(pin.commit) == 40


def test_g1_detached_head_is_judged_against_all_remote_branches(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    sh(work, "checkout", "-q", "--detach")
    assert _git.current_branch(work) is None
    assert _git.gate(work, None).commit == sh(work, "rev-parse", "HEAD")  # pushed: fine
    commit(work, "b.txt")
    with pytest.raises(
        _git.GitError, match=r"1 unpushed commit at .*detached HEAD: push it to a branch: git push origin"
    ):
        _git.gate(work, None)


def test_g2_branch_without_upstream_counts_its_commits(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    sh(work, "checkout", "-q", "-b", "feature")
    commit(work, "b.txt")
    with pytest.raises(_git.GitError) as info:
        _git.gate(work, None)
    assert "1 unpushed commit (no upstream configured): git push -u origin feature" in str(info.value)
    commit(work, "c.txt")
    with pytest.raises(_git.GitError, match=r"2 unpushed commits \(no upstream configured\)"):
        _git.gate(work, None)
    sh(work, "push", "-q", "-u", "origin", "feature")
    assert _git.gate(work, None).commit == sh(work, "rev-parse", "HEAD")


def test_unpushed_on_tracking_branch_says_git_push(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    commit(work, "b.txt")
    with pytest.raises(
        _git.GitError,
        match=r"1 unpushed commit on main \(upstream origin/main\): git push, or pass --skip-git-check",
    ):
        _git.gate(work, None)


def test_g3_refs_resolve_to_the_commit(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    head = sh(work, "rev-parse", "HEAD")
    sh(work, "tag", "-a", "v1.0", "-m", "release")
    tag_object = sh(work, "rev-parse", "v1.0")
    assert tag_object != head  # an annotated tag is its own object ...
    assert _git.resolve_ref(work, "v1.0") == head  # ... and resolves to its commit
    assert _git.resolve_ref(work, head[:7]) == head
    assert _git.resolve_ref(work, "HEAD") == head
    assert _git.resolve_ref(work, "main") == head
    with pytest.raises(_git.GitError, match=r"--git-ref 'nope': unknown ref"):
        _git.resolve_ref(work, "nope")
    with pytest.raises(_git.GitError, match=r"not a git ref"):
        _git.resolve_ref(work, "--all")


def test_g3_ambiguous_prefix_lists_candidates(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    # 2000 commits in one `git fast-import`: about 30 pairs share a 4-hex-digit prefix.
    stream = "".join(
        f"commit refs/heads/many\ncommitter t <t@e> {1700000000 + i} +0000\ndata {len(str(i))}\n{i}\n"
        for i in range(2000)
    )
    subprocess.run(["git", "-C", str(work), "fast-import", "--quiet"], input=stream, text=True, check=True)
    seen: dict[str, str] = {}
    for c in sh(work, "rev-list", "many").split():
        if c[:4] in seen:
            pair = (seen[c[:4]], c)
            break
        seen[c[:4]] = c
    prefix = pair[0][:4]
    with pytest.raises(_git.GitError) as info:
        _git.resolve_ref(work, prefix)
    message = str(info.value)
    assert f"--git-ref {prefix!r}: ambiguous" in message
    assert pair[0][:12] in message and pair[1][:12] in message
    assert _git.resolve_ref(work, pair[0][:12]) == pair[0]


def test_dirty_tree_untracked_files_count(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    (work / "new.txt").write_text("untracked")
    with pytest.raises(
        _git.GitError, match=r"uncommitted changes \(1 path: new.txt\).*git add -A && git commit"
    ):
        _git.gate(work, None)
    (work / "new.txt").unlink()
    (work / "a.txt").write_text("changed")
    with pytest.raises(_git.GitError, match="uncommitted changes"):
        _git.gate(work, None)


@pytest.fixture
def shallow(pushed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, str, str]:
    """A real `git clone --depth 1 file://...` of a remote whose main has two commits and whose tag
    v1.0 is on the first (so the tag lies beyond the clone's history). Returns (clone, v1.0's
    commit, HEAD)."""
    work, remote = pushed
    first = sh(work, "rev-parse", "HEAD")
    sh(work, "tag", "-a", "v1.0", "-m", "release")
    head = commit(work, "b.txt")
    sh(work, "push", "-q", "--tags", "origin", "main")
    clone = tmp_path / "shallow"
    sh(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote}", str(clone))
    assert sh(clone, "rev-parse", "--is-shallow-repository") == "true"
    return clone, first, head


def test_shallow_clone_of_a_pushed_commit_passes(shallow: tuple[Path, str, str]) -> None:
    """CI's depth-1 checkout of a pushed branch: HEAD is on origin/main, which is proof enough."""
    clone, _, head = shallow
    pin = _git.gate(clone, None)
    assert (pin.commit, pin.remote) == (head, "origin")


def test_shallow_clone_without_the_ref_says_shallow_not_unknown(
    shallow: tuple[Path, str, str], pushed: tuple[Path, Path]
) -> None:
    clone, first, head = shallow
    for ref in ("v1.0", first, first[:10]):
        with pytest.raises(_git.GitError) as info:
            _git.gate(clone, ref)
        message = str(info.value)
        assert message == (
            f"--git-ref {ref!r}: not in this shallow clone (its history is cut off, so the ref may lie"
            " beyond it): run git fetch --unshallow --tags, then retry"
        )
    work, _ = pushed  # the same tag in a full clone resolves; a made-up one is unknown there
    assert _git.resolve_ref(work, "v1.0") == first
    with pytest.raises(_git.GitError, match=r"--git-ref 'v9': unknown ref"):
        _git.resolve_ref(work, "v9")
    sh(clone, "fetch", "-q", "--unshallow", "--tags")  # the advised fix works
    assert _git.gate(clone, "v1.0").commit == first and _git.gate(clone, None).commit == head


def test_shallow_clone_that_cannot_show_the_commit_pushed_says_shallow(
    shallow: tuple[Path, str, str],
) -> None:
    """A commit the fetched history does not show on a remote branch: the walk stopped at the
    cut-off, so the gate cannot tell; it says so instead of counting "unpushed" commits."""
    clone, _, _ = shallow
    local = commit(clone, "c.txt")
    with pytest.raises(_git.GitError) as info:
        _git.gate(clone, None)
    assert str(info.value) == (
        f"shallow clone: cannot tell whether {local[:12]} is pushed (1 unpushed commit within the"
        " fetched history): run git fetch --unshallow --tags, then push what is still unpushed,"
        " or pass --skip-git-check to launch anyway"
    )


def test_g2_branch_without_upstream_on_a_pushed_commit_passes(
    pushed: tuple[Path, Path], tmp_path: Path
) -> None:
    """Pushed means reachable from a remote-tracking branch, whatever the branch tracks: a new branch
    without upstream on a pushed commit is launched, not refused."""
    work, remote = pushed
    head = sh(work, "rev-parse", "HEAD")
    sh(work, "checkout", "-q", "-b", "feature")
    assert _git.upstream(work, "feature") is None
    assert _git.gate(work, None) == _git.GitPin(url=str(remote), commit=head, remote="origin")


def test_pin_names_a_remote_that_holds_the_commit(pushed: tuple[Path, Path], tmp_path: Path) -> None:
    """A commit pushed only to a second remote (a fork) is pinned to that remote's URL: the nodes
    clone from where the commit is, not from origin, which lacks it."""
    work, _ = pushed
    fork = tmp_path / "fork.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(fork))
    sh(work, "remote", "add", "fork", str(fork))
    sh(work, "checkout", "-q", "-b", "feature")
    head = commit(work, "b.txt")
    sh(work, "push", "-q", "fork", "feature")  # no upstream set
    assert _git.gate(work, None) == _git.GitPin(url=str(fork), commit=head, remote="fork")
    sh(work, "push", "-q", "-u", "origin", "feature")  # now on both: the upstream's remote wins
    assert _git.gate(work, None).remote == "origin"


def test_no_remote_and_not_a_repo(tmp_path: Path) -> None:
    with pytest.raises(_git.GitError, match="not a git repository"):
        _git.gate(tmp_path, None)
    sh(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "a.txt")
    with pytest.raises(_git.GitError, match=r"no git remote .*git remote add origin"):
        _git.gate(tmp_path, None)


def test_explicit_ref_must_be_pushed_too(pushed: tuple[Path, Path]) -> None:
    work, _ = pushed
    pushed_head = sh(work, "rev-parse", "HEAD")
    local_only = commit(work, "b.txt")
    assert _git.gate(work, pushed_head[:8]).commit == pushed_head
    with pytest.raises(_git.GitError, match="unpushed"):
        _git.gate(work, local_only)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("https://github.com/org/repo.git", False),
        ("http://git.example.com/repo", False),
        ("ssh://git@github.com/org/repo.git", False),
        ("git://example.com/repo.git", False),
        ("git@github.com:org/repo.git", False),
        ("github.com:org/repo.git", False),  # scp-like without a user
        ("[::1]:repo.git", False),
        ("/work/main", True),
        ("/tmp/x/remote.git", True),
        ("../remote.git", True),
        ("remote.git", True),
        ("~/repos/x.git", True),
        ("./a:b", True),  # a slash before the colon: a path
        ("file:///tmp/remote.git", True),
        ("FILE:///tmp/remote.git", True),
        ("C:\\repos\\x.git", True),
        ("", True),
    ],
)
def test_remote_url_the_nodes_can_clone(url: str, local: bool) -> None:
    assert _git.is_local_url(url) is local
    problem = _git.remote_url_problem("origin", url)
    if local:
        assert problem is not None and "\n" not in problem
        assert problem.startswith(f"git remote origin is {url!r}, a path on this machine")
        assert "push to a hosted remote" in problem and "--skip-git-check" in problem
    else:
        assert problem is None


def test_gate_pins_a_local_bare_remote_url_as_is(pushed: tuple[Path, Path]) -> None:
    """The gate judges commits only; whether the URL can be cloned is remote_url_problem's job (the
    launcher applies both), so these tests keep using a local bare remote."""
    work, remote = pushed
    pin = _git.gate(work, None)
    assert pin.url == str(remote) and _git.remote_url_problem(pin.remote, pin.url) is not None
