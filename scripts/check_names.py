"""Every variable a role defines carries the role's name: `<role>_name`, or `<role>__name` for
the role's private ones.

Reads each role under roles/ and reports, with file and line, every variable that breaks the
rule where it is defined:

- the keys of defaults/main.yml (`<role>_`) and of the files in vars/ (private: `<role>__`);
- in tasks/ and handlers/: `register:`, the keys of `set_fact`, `loop_control.loop_var`, the
  keys of `vars:` of a task or block, and the files `include_vars` loads. The `vars:` of an
  `include_role`/`import_role` task set the variables of the role it calls, so there they may
  carry that role's name instead (`sysctl_settings` for role sysctl, `core_unit` for core).

    .venv/bin/python scripts/check_names.py      exit 1 and list the names that break the rule
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "roles"
INCLUDE_ROLE = {
    "include_role",
    "import_role",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
}
SET_FACT = {"set_fact", "ansible.builtin.set_fact"}
INCLUDE_VARS = {"include_vars", "ansible.builtin.include_vars"}
SET_FACT_OPTIONS = {"cacheable"}
BLOCK_KEYS = ("block", "rescue", "always")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    name: str
    what: str
    prefixes: tuple[str, ...]

    def __str__(self) -> str:
        wanted = " or ".join(self.prefixes)
        relative = self.path.relative_to(ROOT)
        return f"{relative}:{self.line}: {self.what} {self.name!r} does not start with {wanted}"


def _has_prefix(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


def _mapping(node: yaml.Node | None) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]


def _get(node: yaml.Node, key: str) -> yaml.Node | None:
    for name, value in _mapping(node):
        if name.value == key:
            return value
    return None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _compose(path: Path) -> yaml.Node | None:
    # Ansible's tags (!unsafe, !vault) are kept as plain nodes: only the keys matter here.
    return yaml.compose(path.read_text(), Loader=yaml.SafeLoader)


def _top_keys(path: Path, prefix: str, what: str) -> Iterator[Finding]:
    for key, _value in _mapping(_compose(path)):
        if not _has_prefix(key.value, (prefix,)):
            yield Finding(path, _line(key), key.value, what, (prefix,))


def _module(task: yaml.Node, names: set[str]) -> tuple[str, yaml.Node] | None:
    for key, value in _mapping(task):
        if key.value in names:
            return key.value, value
    return None


def _called_role(task: yaml.Node) -> str | None:
    found = _module(task, INCLUDE_ROLE)
    if found is None:
        return None
    name = _get(found[1], "name")
    return name.value if isinstance(name, yaml.ScalarNode) else None


def _tasks(node: yaml.Node | None) -> Iterator[yaml.Node]:
    """Every task and block of a task list, blocks' own tasks included."""
    if not isinstance(node, yaml.SequenceNode):
        return
    for task in node.value:
        yield task
        for key in BLOCK_KEYS:
            yield from _tasks(_get(task, key))


def _task_findings(path: Path, task: yaml.Node, role: str) -> Iterator[Finding]:
    own = (f"{role}_",)
    register = _get(task, "register")
    if isinstance(register, yaml.ScalarNode) and not _has_prefix(register.value, own):
        yield Finding(path, _line(register), register.value, "register", own)
    loop_var = _get(_get(task, "loop_control") or yaml.MappingNode("", []), "loop_var")
    if isinstance(loop_var, yaml.ScalarNode) and not _has_prefix(loop_var.value, own):
        yield Finding(path, _line(loop_var), loop_var.value, "loop_var", own)
    set_fact = _module(task, SET_FACT)
    if set_fact is not None:
        for key, _value in _mapping(set_fact[1]):
            if key.value not in SET_FACT_OPTIONS and not _has_prefix(key.value, own):
                yield Finding(path, _line(key), key.value, "set_fact", own)
    include_vars = _module(task, INCLUDE_VARS)
    if include_vars is not None:
        yield from _include_vars(path, include_vars[1], role)
    called = _called_role(task)
    allowed = own if called is None else (f"{role}_", f"{called}_")
    for key, _value in _mapping(_get(task, "vars")):
        if not _has_prefix(key.value, allowed):
            yield Finding(path, _line(key), key.value, "task variable", allowed)


def _include_vars(path: Path, args: yaml.Node, role: str) -> Iterator[Finding]:
    """The keys of a vars file of the role that include_vars loads (a literal file name)."""
    name = args if isinstance(args, yaml.ScalarNode) else _get(args, "file")
    if not isinstance(name, yaml.ScalarNode) or "{{" in name.value:
        return
    loaded = path.parent.parent / "vars" / name.value
    if loaded.is_file() and loaded.parent != path.parent.parent / "vars":
        yield from _top_keys(loaded, f"{role}__", "include_vars variable")


def check_role(role_dir: Path) -> list[Finding]:
    role = role_dir.name
    findings: list[Finding] = []
    defaults = role_dir / "defaults" / "main.yml"
    if defaults.is_file():
        findings += _top_keys(defaults, f"{role}_", "default")
    for path in sorted((role_dir / "vars").glob("*.yml")):
        findings += _top_keys(path, f"{role}__", "private variable")
    for folder in ("tasks", "handlers"):
        for path in sorted((role_dir / folder).glob("*.yml")):
            for task in _tasks(_compose(path)):
                findings += _task_findings(path, task, role)
    return findings


def main() -> int:
    findings = [
        finding
        for role_dir in sorted(ROLES.iterdir())
        if role_dir.is_dir()
        for finding in check_role(role_dir)
    ]
    for finding in findings:
        print(finding)
    if findings:
        print(
            f"check_names: {len(findings)} variable(s) without their role's prefix "
            "(<role>_ for the role's variables, <role>__ for its private ones)",
            file=sys.stderr,
        )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
