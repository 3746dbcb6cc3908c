"""The git gate of `launch.py --backend sky`: the code a managed job runs is a pushed commit.

A managed job clones its code from the git remote at one commit (SkyPilot's git `workdir`,
`{url, ref}`), so what runs on the nodes is exactly that commit, and `GIT_COMMIT` tells the job
which one. Before anything is launched, `gate()` resolves `--git-ref` to a 40-character commit and
refuses, with the exact command that fixes it:

- a dirty working tree (untracked files count: they would not reach the nodes);
- a commit that no remote branch contains (a branch without upstream counts as unpushed, a detached
  HEAD is judged against every remote branch: ../shared/cases/CASES.md G1, G2);
- a shallow clone, which cannot answer "is it pushed?".

`remote_url_problem()` is the separate check that the chosen remote's URL is one cloud nodes can
clone (https://, ssh://, git@host:path, ...), not a path on this machine or a file:// URL; the
launcher refuses such a URL on a real launch and only warns on a dry run.

Refs (CASES.md G3): a branch, a tag (annotated tags resolve to their commit, not the tag object), a
short id or HEAD; an ambiguous prefix is an error listing the candidates, an unknown ref one naming it.

Errors raise `_config.ConfigError` (one line, exit 2). Only the standard library and git are used;
every git output is read without `\\r` (CASES.md E4).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from _config import ConfigError

SKIP_HINT = "or pass --skip-git-check to launch anyway"


class GitError(ConfigError):
    """A git gate refusal or a ref that cannot be resolved (one line; the fix is in the message)."""


@dataclass(frozen=True)
class GitPin:
    """Where the nodes get the code: `url` of the remote and the 40-character `commit`."""

    url: str
    commit: str
    remote: str


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run `git -C repo args...`; return stdout without `\\r` and trailing white space.

    Raises GitError with git's first error line when `check` and git fails (or git is missing).
    """
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=None,
        )
    except FileNotFoundError:
        raise GitError("git: not found on PATH (needed by the git gate); install git, " + SKIP_HINT) from None
    if check and proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise GitError(f"git {' '.join(args)}: {first}")
    return proc.stdout.replace("\r", "").rstrip()


def _ok(repo: Path, *args: str) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return proc.stdout.replace("\r", "").strip() if proc.returncode == 0 else None


def is_repo(repo: Path) -> bool:
    """True when `repo` is inside a git working tree."""
    try:
        return _ok(repo, "rev-parse", "--is-inside-work-tree") == "true"
    except FileNotFoundError:
        return False


def resolve_ref(repo: Path, ref: str) -> str:
    """The 40-character commit id `ref` names (branch, tag, short id, HEAD, any rev).

    Raises GitError for an empty or unknown ref (naming it) and for an ambiguous short id (listing the
    candidate commits).
    """
    ref = ref.strip()
    if not ref or ref.startswith("-"):
        raise GitError(f"--git-ref {ref!r}: not a git ref")
    commit = _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if commit and len(commit) == 40:
        return commit
    # An ambiguous prefix: git knows the candidates (objects of every type); keep the commits.
    listed = _ok(repo, "rev-parse", "--disambiguate=" + ref) if _is_hex(ref) and len(ref) >= 4 else None
    candidates = []
    for obj in (listed or "").split():
        if _ok(repo, "cat-file", "-t", obj) == "commit":
            candidates.append(obj)
    if len(candidates) > 1:
        shown = ", ".join(
            f"{c[:12]} ({_ok(repo, 'log', '-1', '--format=%s', c) or ''})" for c in candidates[:5]
        )
        raise GitError(
            f"--git-ref {ref!r}: ambiguous, {len(candidates)} commits match: {shown}; use more characters"
        )
    if len(candidates) == 1:
        return candidates[0]
    raise GitError(f"--git-ref {ref!r}: unknown ref (no branch, tag or commit of that name; try git fetch)")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def dirty_paths(repo: Path) -> list[str]:
    """Paths with uncommitted changes, untracked files included (`git status --porcelain`)."""
    out = git(repo, "status", "--porcelain", "--untracked-files=normal")
    return [line[3:] for line in out.splitlines() if line.strip()]


def unpushed_count(repo: Path, commit: str) -> int:
    """How many commits reachable from `commit` no remote-tracking branch contains."""
    return int(git(repo, "rev-list", "--count", commit, "--not", "--remotes") or 0)


def current_branch(repo: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD (CASES.md G1)."""
    return _ok(repo, "symbolic-ref", "--quiet", "--short", "HEAD")


def upstream(repo: Path, branch: str) -> str | None:
    """`remote/branch` the branch tracks, or None when it has no upstream (CASES.md G2)."""
    return _ok(repo, "rev-parse", "--abbrev-ref", "--symbolic-full-name", f"{branch}@{{u}}")


def remotes(repo: Path) -> list[str]:
    return git(repo, "remote").split()


def gate(repo: Path, ref: str | None) -> GitPin:
    """Resolve `ref` (default HEAD) and check that the nodes can clone exactly that commit.

    Returns the pin (remote URL and commit). Raises GitError, with the command that fixes it, for a
    repository without a remote, a shallow clone, a dirty tree or a commit no remote branch contains.
    """
    if not is_repo(repo):
        raise GitError(
            f"{repo}: not a git repository; the nodes clone the job's code from a git remote ({SKIP_HINT})"
        )
    commit = resolve_ref(repo, ref or "HEAD")
    names = remotes(repo)
    if not names:
        raise GitError(
            f"{repo}: no git remote to clone from: git remote add origin <url> && git push -u origin HEAD, {SKIP_HINT}"
        )
    if _ok(repo, "rev-parse", "--is-shallow-repository") == "true":
        raise GitError(
            f"shallow clone: cannot tell whether {commit[:12]} is pushed: run git fetch --unshallow, {SKIP_HINT}"
        )
    dirty = dirty_paths(repo)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise GitError(
            f"uncommitted changes ({len(dirty)} path{'s' if len(dirty) != 1 else ''}: {shown}) would not reach the nodes:"
            f" commit them (git add -A && git commit) and push, or stash them (git stash -u), {SKIP_HINT}"
        )
    branch = current_branch(repo)
    tracked = upstream(repo, branch) if branch else None
    remote = tracked.split("/", 1)[0] if tracked else ("origin" if "origin" in names else names[0])
    count = unpushed_count(repo, commit)
    if count:
        plural = f"{count} unpushed commit{'s' if count != 1 else ''}"
        if branch is None:
            fix = f"detached HEAD: push it to a branch: git push {remote} {commit[:12]}:refs/heads/<branch>"
            raise GitError(f"{plural} at {commit[:12]} ({fix}), {SKIP_HINT}")
        if tracked is None:
            raise GitError(f"{plural} (no upstream configured): git push -u {remote} {branch}, {SKIP_HINT}")
        raise GitError(f"{plural} on {branch} (upstream {tracked}): git push, {SKIP_HINT}")
    url = git(repo, "remote", "get-url", remote)
    return GitPin(url=url, commit=commit, remote=remote)


def is_local_url(url: str) -> bool:
    """True when `url` names a repository on this machine's file system: a path (absolute, relative,
    `~`), a `file://` URL, or nothing. Follows git's reading of a remote URL (git-clone(1), GIT
    URLS): `scheme://...` is a URL (local only for file://); `[user@]host:path` with no `/` before
    the first `:` is scp-like ssh (a Windows drive letter `C:` excepted); anything else is a path."""
    url = url.strip()
    if not url:
        return True
    if "://" in url:
        return url.split("://", 1)[0].lower() == "file"
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        return colon == 1 and url[0].isalpha()  # C:\repo or C:/repo is a path
    return True


def remote_url_problem(remote: str, url: str) -> str | None:
    """None when cloud nodes can clone `url` (the URL of git remote `remote`); otherwise the one-line
    refusal that names the remote and the fix. Pure: no git call."""
    if not is_local_url(url):
        return None
    return (
        f"git remote {remote} is {url!r}, a path on this machine that the cloud nodes cannot clone:"
        f" push to a hosted remote (git remote set-url {remote} https://<host>/<repo>.git or"
        f" git@<host>:<repo>.git, then git push), or pass --skip-git-check to upload the working tree"
    )


def head_commit(repo: Path) -> str | None:
    """HEAD's commit id, or None outside a git repository (used with --skip-git-check)."""
    return _ok(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}") if is_repo(repo) else None
