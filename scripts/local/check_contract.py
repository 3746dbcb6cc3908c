#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["pyyaml==6.0.4", "python-dotenv==1.2.4"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Check the copies of the contract's env keys against the one table, scripts/remote/_contract.py KEYS.

usage: check_contract.py [--write]

Checks (exit 1 with one line per difference, 0 when all agree):
- job.yaml `envs`: every key the table says job.yaml lists, with the table's default, and no other;
- .env.example: every key, as `KEY=default` or `# KEY=default`, with the table's default;
- docs/contract.md: the "Env keys" table between `<!-- contract:keys -->` markers is the generated one
  (`--write` regenerates it);
- README.md: each configuration row whose keys and backquoted defaults pair up has the table's defaults.
`nox -s contract` runs it (part of `make lint`, so CI runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import _config
import _contract

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- contract:keys -->", "<!-- /contract:keys -->"
_ENV_LINE_RE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def keys_table() -> str:
    """docs/contract.md's "Env keys" table, generated from KEYS."""
    rows = ["| key | default | read by | meaning |", "|---|---|---|---|"]
    for k in _contract.KEYS:
        default = f"`{k.default}`" if k.default else '`""`'
        optional = "" if k.in_job_yaml else " (optional: not in job.yaml)"
        readers = ", ".join(f"`{r}`" for r in k.readers)
        rows.append(f"| `{k.name}` | {default} | {readers} | {k.doc}{optional} |")
    return "\n".join(rows)


def check_job_yaml(path: Path) -> list[str]:
    envs = _config.load_task_file(path).envs
    problems = []
    for k in _contract.KEYS:
        if k.in_job_yaml and envs.get(k.name) != k.default:
            problems.append(
                f"{path.name}: envs.{k.name} is {envs.get(k.name)!r}, the contract says {k.default!r}"
            )
    problems += [
        f"{path.name}: envs.{name} is not in the contract" for name in envs if name not in _contract.KEY
    ]
    return problems


def check_env_example(path: Path) -> list[str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _ENV_LINE_RE.match(line.strip())
        if match and match.group(1) in _contract.KEY:
            found.setdefault(match.group(1), match.group(2).strip())
    return [
        f"{path.name}: {k.name} is {found[k.name]!r}, the contract says {k.default!r}"
        if k.name in found
        else f"{path.name}: {k.name} is missing (add `# {k.name}={k.default}`)"
        for k in _contract.KEYS
        if k.name not in {"JOB", "JOB_ARGS", "RUN_ID"} and found.get(k.name) != k.default
    ]


def check_contract_md(path: Path, write: bool) -> list[str]:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return [f"{path.name}: no {BEGIN} ... {END} markers around the Env keys table"]
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = f"{head}{BEGIN}\n{keys_table()}\n{END}{tail}"
    if want == text:
        return []
    if write:
        path.write_text(want)
        return []
    return [f"{path.name}: the Env keys table differs from the contract (run check_contract.py --write)"]


def check_readme(path: Path) -> list[str]:
    problems = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        if not names or any(n not in _contract.KEY for n in names) or len(names) != len(defaults):
            continue
        for name, default in zip(names, defaults, strict=True):
            if default != _contract.KEY[name].default:
                problems.append(
                    f"{path.name}: {name}'s default is `{default}`, the contract says {_contract.KEY[name].default!r}"
                )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_contract.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--write", action="store_true", help="regenerate docs/contract.md's Env keys table")
    args = parser.parse_args(argv)
    problems = [
        *check_job_yaml(ROOT / "job.yaml"),
        *check_env_example(ROOT / ".env.example"),
        *check_contract_md(ROOT / "docs" / "contract.md", args.write),
        *check_readme(ROOT / "README.md"),
    ]
    for problem in problems:
        print(f"check_contract.py: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_contract.py: {len(_contract.KEYS)} keys agree with job.yaml, .env.example, docs/contract.md, README.md",
            file=sys.stderr,
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
