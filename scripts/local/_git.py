"""The git gate of `launch.py --backend sky`: the code a managed job runs is a pushed commit.

A managed job clones its code from the git remote at one commit (SkyPilot's git `workdir`,
`{url, ref}`), so what runs on the nodes is exactly that commit, and `GIT_COMMIT` tells the job
which one. Before anything is launched, `gate()` resolves `--git-ref` to a 40-character commit and
refuses, with the exact command that fixes it:

- a dirty working tree (untracked files count: they would not reach the nodes);
- a commit that no remote-tracking branch contains. "Pushed" means exactly that: the commit is
  reachable from some `refs/remotes/<remote>/<branch>`, whatever the checked-out branch tracks, so a
  detached HEAD (docs/field-cases.md G1) and a branch without upstream whose commit is already on a remote branch
  (G2) both pass; a branch without upstream with commits of its own is refused with `git push -u`.
  The pin's URL is that of a remote that holds the commit (the upstream's, else origin, else any);
- a shallow clone that lacks the ref, or whose truncated history cannot show the commit on a remote
  branch: the refusal says the clone is shallow and gives `git fetch --unshallow --tags`. A shallow
  clone whose commit IS on a remote-tracking branch (CI's `actions/checkout` of a pushed branch)
  passes: reachability within the fetched history is proof enough.

`remote_url_problem()` is the separate check that the chosen remote's URL is one cloud nodes can
clone (https://, ssh://, git@host:path, ...), not a path on this machine or a file:// URL; the
launcher refuses such a URL on a real launch and only warns on a dry run.

Refs (docs/field-cases.md G3): a branch, a tag (annotated tags resolve to their commit, not the tag object), a
short id or HEAD; an ambiguous prefix is an error listing the candidates, an unknown ref one naming it
(in a shallow clone: one saying the clone is shallow, since the ref may lie beyond its history).

Errors raise `_config.ConfigError` (one line, exit 2). Only the standard library and git are used;
every git output is read without `\\r` (docs/field-cases.md E4).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from _config import ConfigError

SKIP_HINT = "or pass --skip-git-check to launch anyway"
UNSHALLOW = "git fetch --unshallow --tags"


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

    Raises GitError for an empty or unknown ref (naming it; in a shallow clone saying so and giving
    `git fetch --unshallow --tags`) and for an ambiguous short id (listing the candidate commits).
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
    if is_shallow(repo):
        raise GitError(
            f"--git-ref {ref!r}: not in this shallow clone (its history is cut off, so the ref may lie"
            f" beyond it): run {UNSHALLOW}, then retry"
        )
    raise GitError(f"--git-ref {ref!r}: unknown ref (no branch, tag or commit of that name; try git fetch)")


def is_shallow(repo: Path) -> bool:
    """True for a shallow clone (`git rev-parse --is-shallow-repository`, git >= 2.15)."""
    return _ok(repo, "rev-parse", "--is-shallow-repository") == "true"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def dirty_paths(repo: Path) -> list[str]:
    """Paths with uncommitted changes, untracked files included (`git status --porcelain`; with
    --no-optional-locks, so a look at the tree never takes the index lock from a concurrent git)."""
    out = git(repo, "--no-optional-locks", "status", "--porcelain", "--untracked-files=normal")
    return [line[3:] for line in out.splitlines() if line.strip()]


def unpushed_count(repo: Path, commit: str) -> int:
    """How many commits reachable from `commit` no remote-tracking branch contains (0: pushed)."""
    return int(git(repo, "rev-list", "--count", commit, "--not", "--remotes") or 0)


def remotes_containing(repo: Path, commit: str, names: list[str]) -> list[str]:
    """The remotes (of `names`) with a remote-tracking branch that contains `commit`, in `names` order."""
    refs = _ok(repo, "for-each-ref", "--format=%(refname)", "--contains", commit, "refs/remotes/") or ""
    found = set()
    for ref in refs.splitlines():
        rest = ref.removeprefix("refs/remotes/")
        # Remote names may contain "/": take the longest configured name the ref starts with.
        match = max((n for n in names if rest.startswith(n + "/")), key=len, default=None)
        if match is not None:
            found.add(match)
    return [n for n in names if n in found]


def current_branch(repo: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD (docs/field-cases.md G1)."""
    return _ok(repo, "symbolic-ref", "--quiet", "--short", "HEAD")


def upstream(repo: Path, branch: str) -> str | None:
    """`remote/branch` the branch tracks, or None when it has no upstream (docs/field-cases.md G2)."""
    return _ok(repo, "rev-parse", "--abbrev-ref", "--symbolic-full-name", f"{branch}@{{u}}")


def remotes(repo: Path) -> list[str]:
    return git(repo, "remote").split()


def gate(repo: Path, ref: str | None) -> GitPin:
    """Resolve `ref` (default HEAD) and check that the nodes can clone exactly that commit.

    Pushed means: reachable from a remote-tracking branch (`git rev-list COMMIT --not --remotes` is
    empty), whichever branch is checked out and whether or not it has an upstream. Returns the pin:
    the commit and the URL of a remote that holds it (the upstream's remote, else origin, else the
    first that does). Raises GitError, with the command that fixes it, for a repository without a
    remote, a dirty tree, a commit no remote branch contains, and a shallow clone that lacks the ref
    or the history to show the commit on a remote branch (`git fetch --unshallow --tags`).
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
    dirty = dirty_paths(repo)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise GitError(
            f"uncommitted changes ({len(dirty)} path{'s' if len(dirty) != 1 else ''}: {shown}) would not reach the nodes:"
            f" commit them (git add -A && git commit) and push, or stash them (git stash -u), {SKIP_HINT}"
        )
    branch = current_branch(repo)
    tracked = upstream(repo, branch) if branch else None
    tracked_remote = next(
        (n for n in sorted(names, key=len, reverse=True) if tracked and tracked.startswith(n + "/")), None
    )
    count = unpushed_count(repo, commit)
    if count:
        default = tracked_remote or ("origin" if "origin" in names else names[0])
        plural = f"{count} unpushed commit{'s' if count != 1 else ''}"
        if is_shallow(repo):  # the walk may have stopped at the cut-off, not at a pushed commit
            raise GitError(
                f"shallow clone: cannot tell whether {commit[:12]} is pushed ({plural} within the fetched"
                f" history): run {UNSHALLOW}, then push what is still unpushed, {SKIP_HINT}"
            )
        if branch is None:
            fix = f"detached HEAD: push it to a branch: git push {default} {commit[:12]}:refs/heads/<branch>"
            raise GitError(f"{plural} at {commit[:12]} ({fix}), {SKIP_HINT}")
        if tracked is None:
            raise GitError(f"{plural} (no upstream configured): git push -u {default} {branch}, {SKIP_HINT}")
        raise GitError(f"{plural} on {branch} (upstream {tracked}): git push, {SKIP_HINT}")
    holders = remotes_containing(repo, commit, names)
    preferred = [n for n in (tracked_remote, "origin") if n in holders]
    remote = (preferred or holders or [tracked_remote or ("origin" if "origin" in names else names[0])])[0]
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


def worktree_matches(repo: Path, commit: str | None) -> bool:
    """True when the working tree is exactly `commit`: a git repository, `commit` is HEAD, and
    nothing is uncommitted or untracked (`git status --porcelain`). What --skip-git-check uploads
    then is that commit; otherwise the job's code matches no commit (GIT_DIRTY=1)."""
    if commit is None or not is_repo(repo) or head_commit(repo) != commit:
        return False
    try:
        return not dirty_paths(repo)
    except GitError:
        return False
