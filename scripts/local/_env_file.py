"""The .env layer of the laptop-side configuration (_config.py has the precedence): reading the file,
merging it with the other layers, and refusing merged values the nodes must not get (check_values).

The .env file is read with python-dotenv (`dotenv.parser.parse_stream`) plus small, tested corrections
for the cases where python-dotenv is known to be wrong or silent (docs/field-cases.md E1-E9):
CRLF line endings, a comment taken for a value, a line it cannot parse (only a warning there, and the
key vanishes), keys that no environment accepts, and `${VAR}` expansion, which follows the same
precedence as everything else and the file's order: a line sees the lines above it, never those
below, and a `${VAR}` defined only below is an error (resolve_values has the rules).

Errors a user can cause raise `ConfigError` with one line naming the flag, key or `file:line`.
Nothing here reads `os.environ`: callers pass the process environment in.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _config
from _config import ENV_KEY_RE, ConfigError


@dataclass(frozen=True)
class EnvLine:
    """One `KEY=value` of a .env file. `value` is None for a bare `KEY` line (docs/field-cases.md E5)."""

    key: str
    value: str | None
    line: int
    interpolate: bool = True


_COMMENT_AS_VALUE_RE = re.compile(r"^\s*(?:export\s+)?[^=\s]+\s*=[ \t]+#")


def env_file_path(flag: Path | None, repo: Path) -> Path | None:
    """The .env file a command reads: --env-file, else `<repo>/.env` when there is one (never a parent
    folder's, docs/field-cases.md E7); None when there is none."""
    if flag is not None:
        return flag
    return repo / ".env" if (repo / ".env").is_file() else None


def read_env_file(path: Path) -> list[EnvLine]:
    """Parse a .env file with python-dotenv, corrected for docs/field-cases.md E1-E8.

    Returns the lines in file order. Raises ConfigError (`file:line: ...`) for a line python-dotenv
    cannot parse, for keys no environment accepts (all listed in one line), or a file that is not UTF-8.
    """
    from dotenv.parser import parse_stream

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--env-file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8") from None
    # E4: no \r may survive into any value, quoted ones included.
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    entries: list[EnvLine] = []
    bad_keys: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts blank lines before a binding as part of it: report the key's own line.
        original = binding.original.string
        line = binding.original.line + original[: len(original) - len(original.lstrip())].count("\n")
        if binding.error:
            key = original.strip().split("=", 1)[0].strip() if "=" in original else ""
            what = f"the value of {key}" if key else "this line"
            hint = (
                " (unclosed quote?)"
                if "=" in original and original.split("=", 1)[1].lstrip()[:1] in "'\""
                else ""
            )
            raise ConfigError(f"{path}:{line}: cannot parse {what}{hint}")
        if binding.key is None:
            continue
        value = binding.value
        # E2: `KEY=   # comment` is an empty value, never the comment's text.
        if value is not None and _COMMENT_AS_VALUE_RE.match(original) and value.lstrip().startswith("#"):
            value = ""
        if not ENV_KEY_RE.match(binding.key):
            bad_keys.append(f"{binding.key} (line {line})")
            continue
        after_eq = original.split("=", 1)[1].lstrip() if "=" in original else ""
        entries.append(EnvLine(binding.key, value, line, interpolate=not after_eq.startswith("'")))
    if bad_keys:
        raise ConfigError(
            f"{path}: invalid keys {', '.join(bad_keys)}: a key must match [A-Za-z_][A-Za-z0-9_]*"
        )
    return entries


def _expand_line(
    entry: EnvLine,
    *,
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    above: Mapping[str, tuple[str, tuple[str, ...]]],
    defined_at: Mapping[str, Sequence[int]],
    defaults: Mapping[str, str | None],
    file_label: str,
) -> tuple[str, tuple[str, ...]]:
    """Expand one .env line as the file is read top to bottom (see resolve_values for the rules).

    `above` maps each key defined on an earlier line to (its expanded value, the names it came from).
    Returns the expanded value and every name it came from, through earlier lines too (so a secret
    reached through another key is still seen). Raises ConfigError for a forward reference.
    """
    from dotenv.variables import Literal, Variable, parse_variables

    parts: list[str] = []
    names: dict[str, None] = {}
    for atom in parse_variables(entry.value or ""):
        if isinstance(atom, Literal) or not isinstance(atom, Variable):
            parts.append(atom.value if isinstance(atom, Literal) else "")
            continue
        name, default = atom.name, atom.default
        names[name] = None
        if name in flags:
            parts.append(flags[name])
        elif name in environ:
            parts.append(environ[name])
        elif name in above:
            text, came_from = above[name]
            parts.append(text)
            names.update(dict.fromkeys(came_from))
        else:
            below = [n for n in defined_at.get(name, ()) if n > entry.line]
            if below and default is None and name != entry.key:
                raise ConfigError(
                    f"{file_label}:{entry.line}: {entry.key} uses ${{{name}}}, which is defined only below"
                    f" (line {below[0]}); move {name} above {entry.key}"
                )
            found = defaults.get(name)
            parts.append(found if found is not None else (default or ""))
    return "".join(parts), tuple(names)


def parse_set_flags(items: Sequence[str]) -> dict[str, str]:
    """`--set KEY=VALUE` items to a dict (later wins). Raises ConfigError naming the flag."""
    result: dict[str, str] = {}
    bad: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if not ENV_KEY_RE.match(key):
            bad.append(key or "''")
            continue
        result[key] = value.replace("\r\n", "\n").replace("\r", "\n")
    if bad:
        raise ConfigError(f"--set: invalid keys {', '.join(bad)}: a key must match [A-Za-z_][A-Za-z0-9_]*")
    return result


@dataclass(frozen=True)
class Resolved:
    """Resolved configuration values with the layer each one came from."""

    values: dict[str, str]
    sources: dict[str, str]  # key -> "flag" | "environment" | "<file>:<line>" | "job.yaml"
    missing: tuple[str, ...] = ()  # secrets declared null and supplied by nobody
    expanded_from: dict[str, list[str]] = field(default_factory=dict)  # key -> ${VARS} it expanded


def _layer_value(
    key: str,
    entry: EnvLine | None,
    *,
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    defaults: Mapping[str, str | None],
    file_label: str,
) -> tuple[str, str] | None:
    """`key`'s value and the layer it comes from, before any `${VAR}` is expanded: its flag, else the
    environment, else its last .env line (`entry`), else job.yaml; None when no layer has one (a secret
    nobody supplied). Raises ConfigError for a bare .env line that nothing above it supplies."""
    if key in flags:
        return flags[key], "flag"
    if key in environ:
        return environ[key], "environment"
    if entry is not None:
        if entry.value is None:
            raise ConfigError(
                f"{file_label}:{entry.line}: {key} has no value; set it in the environment or with"
                f" --set {key}=..., or write {key}= for an empty value"
            )
        return entry.value, f"{file_label}:{entry.line}"
    if (default := defaults.get(key)) is not None:
        return default, "job.yaml"
    return None


def _expand_file(
    file_entries: Sequence[EnvLine],
    *,
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    defined_at: Mapping[str, Sequence[int]],
    defaults: Mapping[str, str | None],
    file_label: str,
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each key the file sets, and no flag or the environment does: its last line's value, expanded as the
    file is read top to bottom (each line sees the lines above it, never those below), and the names it
    came from (see _expand_line)."""
    above: dict[str, tuple[str, tuple[str, ...]]] = {}
    for entry in file_entries:
        if entry.key in flags or entry.key in environ or entry.value is None:
            continue
        if entry.interpolate and "$" in entry.value:
            above[entry.key] = _expand_line(
                entry,
                flags=flags,
                environ=environ,
                above=above,
                defined_at=defined_at,
                defaults=defaults,
                file_label=file_label,
            )
        else:
            above[entry.key] = (entry.value, ())
    return above


def resolve_values(
    *,
    defaults: Mapping[str, str | None],
    file_entries: Sequence[EnvLine],
    environ: Mapping[str, str],
    flags: Mapping[str, str],
    file_label: str,
) -> Resolved:
    """Merge the four layers for every key any layer names: flags > environ > file > defaults.

    `defaults` are job.yaml's envs and secrets (None: a secret that must be supplied at launch).
    `file_entries` are the .env lines in file order; when a key repeats, its last line wins.

    `${B}` in a .env value expands as the file is read top to bottom (bash's `set -a; source .env`
    and python-dotenv's `load_dotenv` read it the same way), with the same precedence as everything
    else (docs/field-cases.md E6). `${B}` is, first match wins:
      1. B's flag, else B from the process environment (they win inside `${...}` too);
      2. B's value on the nearest line above (as expanded there), so `P=/a` then `P=${P}:/b` gives
         `/a:/b`; a self-reference `KEY=${KEY}/x` with no `KEY` line above means job.yaml's KEY;
      3. job.yaml's B: job.yaml is the lowest layer, defined before the file;
      4. the default of `${B:-default}`, else an empty string.
    A forward reference, `${B}` where B is defined only on a line below (and by no flag or the
    environment), raises ConfigError (`file:line`, naming both keys): bash and python-dotenv
    silently give an empty value there, and taking the later line's value instead would hide the
    mistake. With a default, `${B:-default}` is not an error: it gives what rules 3-4 give, as bash
    does, since B is not yet set at that line. Single-quoted values are not expanded (python-dotenv's rule); a line
    whose key a flag or the environment sets is never used, so it is not expanded either.

    Raises ConfigError for a bare .env key that neither the environment nor a flag supplies, and for
    a forward reference.
    """
    file_map: dict[str, EnvLine] = {}
    defined_at: dict[str, list[int]] = {}
    for line in file_entries:
        file_map[line.key] = line  # later lines win, as in python-dotenv
        defined_at.setdefault(line.key, []).append(line.line)
    keys = list(dict.fromkeys([*defaults, *file_map, *flags]))

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    missing: list[str] = []
    expanded_from: dict[str, list[str]] = {}
    for key in keys:
        found = _layer_value(key, file_map.get(key), flags=flags, environ=environ, defaults=defaults,
                             file_label=file_label)  # fmt: skip
        if found is None:
            missing.append(key)
        else:
            values[key], sources[key] = found
    above = _expand_file(
        file_entries,
        flags=flags,
        environ=environ,
        defined_at=defined_at,
        defaults=defaults,
        file_label=file_label,
    )
    for key in file_map:
        if key not in flags and key not in environ:  # the value is the key's last line (bare: raised)
            values[key] = above[key][0]
            if above[key][1]:
                expanded_from[key] = list(above[key][1])
    return Resolved(values, sources, tuple(missing), expanded_from)


def check_values(resolved: Resolved, task: _config.TaskFile, shown: Mapping[str, str]) -> None:
    """Refuse resolved values the nodes must never get or could not take: a credential-like key not
    declared a secret, a secret expanded into a plaintext env, a typed env the node side would reject,
    a key the nodes set themselves, and envs too large for a process environment. `shown` names where
    each value came from. Raises ConfigError."""
    task_name = task.path.name
    leaked = _config.secret_like_keys(resolved.values, task.secrets)
    if leaked:
        where = shown[leaked[0]]
        raise ConfigError(
            f"{where}: {', '.join(leaked)} looks like a credential: declare it under secrets: in {task_name}"
            " so it is never sent as a plaintext env"
        )
    for key, names in resolved.expanded_from.items():
        exposed = [n for n in names if n in task.secrets and key not in task.secrets]
        if exposed:
            raise ConfigError(
                f"{shown[key]}: {key} expands the secret {exposed[0]} into a plaintext env;"
                f" declare {key} under secrets: in {task_name} or drop the reference"
            )
    _config.check_typed_envs(resolved.values, shown)
    owned = sorted(k for k in resolved.values if k in _config.NODE_OWNED_ENVS)
    if owned:
        raise ConfigError(
            f"{shown[owned[0]]}: {', '.join(owned)} is set on each node (by SkyPilot, configure_environment.py"
            " or run.py) and would be replaced there; remove it"
        )
    total = sum(len(k) + 2 + len(v.encode()) for k, v in resolved.values.items())
    if total > _config.MAX_ENV_TOTAL:
        raise ConfigError(
            f"envs and secrets total {total} bytes (limit {_config.MAX_ENV_TOTAL}): pass large data as a file path"
        )
    for key, value in resolved.values.items():
        if len(key) + 1 + len(value.encode()) >= _config.MAX_ENV_ENTRY:
            raise ConfigError(
                f"{key} (from {shown[key]}): {len(value.encode())} bytes is too long for an"
                f" environment variable (limit {_config.MAX_ENV_ENTRY - 1} bytes with its name); pass a file path instead"
            )
