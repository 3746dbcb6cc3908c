"""The task as a plain SkyPilot YAML config: resource patches and rendering, shared by both backends.

Pure functions on dicts: no SkyPilot import, no I/O. `patch_resources` applies the launch flags
(--gpus, --cpus, --spot/--no-spot, --max-restarts) to the top level and to every `any_of` / `ordered`
candidate of job.yaml's `resources`, keeping the shape (docs/field-cases.md Y2); `dump_yaml`
renders a config the way SkyPilot's YAML reads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from _config import ConfigError

REDACTED = "<redacted>"


def _accelerator_items(value: Any, where: str) -> list[tuple[str, Any]]:
    """(name, count) of every candidate in an accelerators value of any shape."""
    if isinstance(value, str):
        name, _, count = value.partition(":")
        return [(name.strip(), count.strip() or "1")]
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        return [item for v in value for item in _accelerator_items(v, where)]
    raise ConfigError(f"{where}: unsupported value {value!r} (use A100:8, {{A100: 8, H100: 8}} or a list)")


def check_accelerators(value: Any, where: str) -> None:
    """Raise ConfigError naming `where` if any candidate's count is not a number > 0 (docs/field-cases.md Y2)."""
    for name, count in _accelerator_items(value, where):
        try:
            number = float(count)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name}: count {count!r} is not a number") from None
        if not name or number <= 0:
            raise ConfigError(
                f"{where}: {name or '?'}:{count}: the count must be > 0 (use --gpus 0 or drop it for CPU)"
            )


def set_accelerator_count(value: Any, count: int) -> Any:
    """`value` with every candidate's count set to `count`, in the same shape: `A100:8`,
    `{A100: 8, H100: 8}` (any of) or `["A100:8", "H100:8"]` (ordered preference)."""
    if isinstance(value, str):
        return f"{value.split(':', 1)[0].strip()}:{count}"
    if isinstance(value, dict):
        return {name: count for name in value}
    if isinstance(value, list):
        return [set_accelerator_count(v, count) for v in value]
    raise ConfigError(f"resources.accelerators: unsupported value {value!r}")


def _dedupe(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in candidates:
        if c not in out:
            out.append(c)
    return out


def patch_resources(
    resources: Mapping[str, Any] | None,
    *,
    gpus: int | None = None,
    cpus: str | None = None,
    use_spot: bool | None = None,
    max_restarts: int | None = None,
    task: str = "job.yaml",
) -> dict[str, Any]:
    """The task's `resources` with the launch flags applied to the top level AND every `any_of` /
    `ordered` candidate, so no candidate keeps overriding a flag (a candidate's keys win in SkyPilot).

    - gpus: the count of every accelerator candidate, shape kept; 0 removes accelerators (CPU);
    - cpus: `8` or `8+`; use_spot: True/False; max_restarts: job_recovery.max_restarts_on_errors.

    Candidates that become identical are merged; a single one left is folded into the top level.
    Raises ConfigError for a count <= 0 or --gpus N on a task that names no accelerator type (the
    message names the task file, `task`).
    Returns a new dict; the input is not modified.
    """
    res: dict[str, Any] = copy.deepcopy(dict(resources or {}))
    kinds = [k for k in ("any_of", "ordered") if k in res]
    if len(kinds) > 1:
        raise ConfigError("resources: use any_of or ordered, not both")
    kind = kinds[0] if kinds else None
    candidates: list[dict[str, Any]] = []
    if kind:
        if not isinstance(res[kind], list) or not all(isinstance(c, dict) for c in res[kind]):
            raise ConfigError(f"resources.{kind}: must be a list of mappings")
        candidates = res[kind]
    holders = [("resources", res), *((f"resources.{kind}[{i}]", c) for i, c in enumerate(candidates))]
    for where, holder in holders:
        if holder.get("accelerators") is not None:
            check_accelerators(holder["accelerators"], f"{where}.accelerators")

    if gpus is not None:
        found = False
        for _, holder in holders:
            if holder.get("accelerators") is not None:
                found = True
                if gpus == 0:
                    del holder["accelerators"]
                else:
                    holder["accelerators"] = set_accelerator_count(holder["accelerators"], gpus)
        if gpus > 0 and not found:
            raise ConfigError(
                f"--gpus {gpus}: {task} names no accelerator type; set resources.accelerators (e.g. H100:8)"
            )
    for key, value in (("cpus", cpus), ("use_spot", use_spot)):
        if value is not None:
            for _, holder in holders[1:]:
                holder.pop(key, None)
            res[key] = value
    if max_restarts is not None:
        for _, holder in holders:
            if holder is res or "job_recovery" in holder:
                recovery = holder.get("job_recovery")
                recovery = {"strategy": recovery} if isinstance(recovery, str) else dict(recovery or {})
                recovery["max_restarts_on_errors"] = max_restarts
                holder["job_recovery"] = recovery
    if kind:
        merged = _dedupe(candidates)
        if len(merged) == 1:
            del res[kind]
            res.update(merged[0])
        elif merged and all(not c for c in merged):
            del res[kind]
        else:
            res[kind] = merged
    return res


def dump_yaml(config: Mapping[str, Any]) -> str:
    """Block-style YAML, keys in order, multi-line strings as `|` blocks, no anchors."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, str_presenter)
    return yaml.dump(
        dict(config), Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
