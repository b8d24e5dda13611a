"""The variable tables of the role READMEs, generated so that they cannot drift.

For every role under roles/, reads meta/argument_specs.yml (entry point `main` first, then
any other) and defaults/main.yml, and writes a table (variable, type, default, required,
choices, description) into the role's README.md between two marker comments. A README
without the markers gets them in its "Role Variables" section, in place of the hand-written
variables table there (the prose around it stays).

Defaults come from the argument spec's `default`, else from defaults/main.yml as written
(Jinja expressions shown verbatim); secrets (`no_log: true`) show none.

It also checks that argument_specs and defaults/main.yml describe the same variables: every
variable of defaults/main.yml must be in argument_specs, and every option of argument_specs
must be in defaults/main.yml unless it is required or shown there as a commented example
(`# name: ...`, for values set elsewhere, such as secrets or per-host variables).

    .venv/bin/python scripts/role_docs.py           write the tables
    .venv/bin/python scripts/role_docs.py --check   change nothing; exit 1 on drift or gaps
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "roles"
COMMAND = ".venv/bin/python scripts/role_docs.py"
BEGIN = "<!-- BEGIN generated variables: scripts/role_docs.py -->"
END = "<!-- END generated variables: scripts/role_docs.py -->"
HINT = (
    "<!-- Do not edit this table: edit meta/argument_specs.yml or defaults/main.yml, "
    f"then run {COMMAND} -->"
)
HEADER = "| variable | type | default | required | choices | description |"
RULE = "| --- | --- | --- | --- | --- | --- |"
MAX_CELL = 120  # longer values (not Jinja) are left to defaults/main.yml
SEE_DEFAULTS = "see [defaults/main.yml](defaults/main.yml)"


class _Loader(yaml.SafeLoader):
    """safe_load that keeps values with Ansible's tags (!unsafe, !vault) as plain text."""


def _tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_Loader.add_multi_constructor("!", _tagged)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


@dataclass
class Role:
    name: str
    path: Path
    specs: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    defaults_text: str

    @classmethod
    def read(cls, path: Path) -> Role:
        specs_file = path / "meta" / "argument_specs.yml"
        defaults_file = path / "defaults" / "main.yml"
        specs = (load_yaml(specs_file) or {}).get("argument_specs") or {}
        text = defaults_file.read_text() if defaults_file.is_file() else ""
        defaults = (load_yaml(defaults_file) or {}) if text else {}
        return cls(path.name, path, specs, defaults, text)

    def entry_points(self) -> list[str]:
        """`main` first, then the others in file order."""
        return sorted(self.specs, key=lambda name: name != "main")

    def options(self, entry_point: str) -> dict[str, dict[str, Any]]:
        return self.specs[entry_point].get("options") or {}

    def all_options(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for entry_point in self.entry_points():
            merged.update(self.options(entry_point))
        return merged


# --- Cells --------------------------------------------------------------------------------


def is_jinja(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def code(text: str) -> str:
    """A code span that survives a table cell: pipes escaped, backticks fenced."""
    text = text.replace("|", "\\|")
    if "`" not in text:
        return f"`{text}`"
    fence = "``" if "``" not in text else "```"
    return f"{fence} {text} {fence}"


def plain(text: str) -> str:
    """Prose for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def scalar_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else " ".join(value.split())
    if isinstance(value, int | float):
        return str(value)
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return " ".join(dumped.split())


def value_cell(value: object) -> str:
    text = scalar_text(value)
    if len(text) > MAX_CELL and not is_jinja(value):
        return SEE_DEFAULTS
    return code(text)


def default_cell(name: str, option: dict[str, Any], defaults: dict[str, Any]) -> str:
    if option.get("no_log"):
        return "*secret*"
    if "default" in option:
        return value_cell(option["default"])
    if name in defaults:
        return value_cell(defaults[name])
    return "" if option.get("required") else "*unset*"


def type_cell(option: dict[str, Any]) -> str:
    kind = str(option.get("type", "str"))
    if "elements" in option:
        kind += f" of {option['elements']}"
    return kind


def description_cell(option: dict[str, Any]) -> str:
    description = option.get("description", "")
    if isinstance(description, list):
        description = " ".join(str(line) for line in description)
    return plain(str(description))


def choices_cell(option: dict[str, Any]) -> str:
    return ", ".join(code(scalar_text(choice)) for choice in option.get("choices") or [])


def rows(
    options: dict[str, dict[str, Any]], defaults: dict[str, Any], prefix: str = ""
) -> list[str]:
    lines = []
    for name, option in options.items():
        option = option or {}
        full = prefix + name
        cells = [
            code(full),
            type_cell(option),
            default_cell(full, option, defaults if not prefix else {}),
            "yes" if option.get("required") else "no",
            choices_cell(option),
            description_cell(option),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if option.get("options"):
            child = f"{full}[]." if option.get("type") == "list" else f"{full}."
            lines += rows(option["options"], defaults, child)
    return lines


def table(options: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> list[str]:
    return [HEADER, RULE, *rows(options, defaults)]


def block(role: Role) -> str:
    """The generated section of the README, markers included."""
    lines = [BEGIN, HINT, ""]
    main = role.options("main") if "main" in role.specs else {}
    for entry_point in role.entry_points():
        options = role.options(entry_point)
        if entry_point != "main":
            short = plain(str(role.specs[entry_point].get("short_description", "")))
            lines.append(f"Entry point `{entry_point}` (`tasks_from: {entry_point}`): {short}")
            if options == main:
                lines[-1] += " It takes the same variables as `main`."
                lines.append("")
                continue
            lines.append("")
        lines += [*table(options, role.defaults), ""]
    lines.append(END)
    return "\n".join(lines)


# --- Gaps between argument_specs and defaults/main.yml -----------------------------------------


def gaps(role: Role) -> list[str]:
    found = []
    if not role.specs:
        return [f"roles/{role.name}: meta/argument_specs.yml has no entry point"]
    options = role.all_options()
    for name in role.defaults:
        if name not in options:
            found.append(
                f"roles/{role.name}: {name} is in defaults/main.yml, not in argument_specs"
            )
    for name, option in options.items():
        option = option or {}
        if name in role.defaults:
            if "default" in option and option["default"] != role.defaults[name]:
                found.append(
                    f"roles/{role.name}: {name} defaults to {scalar_text(option['default'])!r} "
                    f"in argument_specs but {scalar_text(role.defaults[name])!r} in "
                    "defaults/main.yml"
                )
        elif not option.get("required") and not re.search(
            rf"^#\s*{re.escape(name)}:", role.defaults_text, re.MULTILINE
        ):
            found.append(
                f"roles/{role.name}: {name} is in argument_specs, not in defaults/main.yml "
                "(give it a default, mark it required, or show it there as a commented example)"
            )
        if not option.get("description"):
            found.append(f"roles/{role.name}: {name} has no description in argument_specs")
    return found


# --- The README ---------------------------------------------------------------------------------

_MARKED = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
_VARIABLES_HEADING = re.compile(r"^(#{2,3}) .*variables", re.IGNORECASE)
_TABLE_HEADER = re.compile(r"^\|\s*`?(variable|name)`?\s*\|", re.IGNORECASE)


def _section(lines: list[str]) -> tuple[int, int] | None:
    """Start and end (exclusive) of the README's "Role Variables" section."""
    for start, line in enumerate(lines):
        match = _VARIABLES_HEADING.match(line)
        if not match:
            continue
        level = len(match.group(1))
        end = start + 1
        while end < len(lines):
            heading = re.match(r"^(#{1,6}) ", lines[end])
            if heading and len(heading.group(1)) <= level:
                break
            end += 1
        return start, end
    return None


def _tables(lines: list[str], start: int, end: int) -> list[tuple[int, int]]:
    """Variables tables (header naming a variable) between start and end, as line ranges."""
    found = []
    index = start
    while index < end:
        if _TABLE_HEADER.match(lines[index]):
            last = index
            while last < end and lines[last].startswith("|"):
                last += 1
            found.append((index, last))
            index = last
        else:
            index += 1
    return found


def with_block(text: str, generated: str) -> str:
    """The README with its generated section replaced, or put in place of its variables table."""
    if _MARKED.search(text):
        return _MARKED.sub(lambda _match: generated, text, count=1)
    lines = text.split("\n")
    section = _section(lines)
    if section is None:
        # No "Role Variables" section: add one before Dependencies, or at the end.
        where = next(
            (i for i, line in enumerate(lines) if re.match(r"^## Dependencies", line)), None
        )
        new = ["## Role Variables", "", *generated.split("\n"), ""]
        if where is None:
            while lines and lines[-1] == "":
                lines.pop()
            return "\n".join([*lines, "", *new])
        return "\n".join(lines[:where] + new + lines[where:])
    start, end = section
    found = _tables(lines, start, end)
    if not found:
        # Prose only: the table goes at the end of the section.
        while end > start + 1 and lines[end - 1] == "":
            end -= 1
        return "\n".join([*lines[:end], "", *generated.split("\n"), *lines[end:]])
    first_start, first_end = found[0]
    out = lines[:first_start] + generated.split("\n")
    cursor = first_end
    for table_start, table_end in found[1:]:
        out += lines[cursor:table_start]
        cursor = table_end
    out += lines[cursor:]
    return "\n".join(out)


# --- Main ---------------------------------------------------------------------------------------


def roles() -> list[Path]:
    return sorted(path.parent.parent for path in ROLES.glob("*/meta/argument_specs.yml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on drift or gaps"
    )
    args = parser.parse_args(argv)

    problems: list[str] = []
    drifted: list[str] = []
    for path in roles():
        role = Role.read(path)
        problems += gaps(role)
        readme = path / "README.md"
        shown = readme.relative_to(ROOT)
        if not readme.is_file():
            print(f"role_docs: {shown} does not exist: no variable table written", file=sys.stderr)
            continue
        text = readme.read_text()
        wanted = with_block(text, block(role))
        if wanted == text:
            continue
        if args.check:
            drifted.append(str(shown))
        else:
            readme.write_text(wanted)
            print(f"role_docs: wrote the variable table of {shown}")

    for problem in problems:
        print(f"role_docs: {problem}", file=sys.stderr)
    for name in drifted:
        print(f"role_docs: {name}: the variable table is out of date", file=sys.stderr)
    if drifted:
        print(f"role_docs: to fix, run {COMMAND}", file=sys.stderr)
    return 1 if problems or drifted else 0


if __name__ == "__main__":
    sys.exit(main())
