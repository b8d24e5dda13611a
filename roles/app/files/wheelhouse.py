#!/usr/bin/env python3
"""Builds the wheelhouse of one app release on the controller (role app, run by Ansible).

The app machines cannot reach PyPI, so everything they install comes from here: the app's
own wheel (`pip wheel --no-deps` of the source folder) plus every pinned runtime dependency
of requirements.lock, downloaded as binary wheels for the targets' Python and platform.

The wheelhouse lands in CACHE/<release>/<python tag>-<platform>/ and is reused as long as
the app's source (pyproject.toml, requirements.lock, README.md, src/) is unchanged; a changed
source rebuilds it. It is built in a temporary folder and renamed into place, so an
interrupted build never leaves a half wheelhouse that looks complete.

pip runs with --isolated: the controller's pip configuration (constraints, extra indexes,
find-links) must not leak into what the servers install. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

STAMP = "wheelhouse.json"
# What goes into the app's wheel; a change to any of these is a new build.
SOURCE_FILES = ("pyproject.toml", "requirements.lock", "README.md")
SOURCE_TREE = "src"
SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}
BUILD_LEFTOVERS = ("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".venv*")
RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class BuildError(Exception):
    """The build cannot go on; the message says why and what to change."""


def fingerprint(source: Path) -> str:
    """sha256 over the names and contents of the files that make the app's wheel."""
    digest = hashlib.sha256()
    files = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    tree = source / SOURCE_TREE
    files += sorted(
        path
        for path in tree.rglob("*")
        if path.is_file()
        and not SKIPPED_PARTS.intersection(path.relative_to(source).parts)
        and path.suffix != ".pyc"
        and not any(part.endswith(".egg-info") for part in path.relative_to(source).parts)
    )
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def project_version(source: Path) -> str:
    pyproject = source / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"cannot read project.version from {pyproject}: {error}") from None


def platforms(machine: str, glibc: str) -> list[str]:
    """Every manylinux tag a machine with this glibc runs, newest first."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise BuildError(f"unexpected glibc version {glibc}")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for m, name in legacy.items() if m <= minor]
    return tags


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{' '.join(command[3:6])} ... failed:\n{tail}")


def target_environment(python: str, machine: str) -> dict[str, str]:
    """The PEP 508 marker values of the target machines (Linux, CPython)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": python,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python,
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": "linux",
    }


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(
            n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
        )
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def wheels_by_name(folder: Path) -> dict[str, Path]:
    return {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in folder.glob("*.whl")}


class Builder:
    """Fills one wheelhouse folder for the target machines."""

    def __init__(self, target: Path, python: str, machine: str, glibc: str) -> None:
        self.target = target
        self.environment = target_environment(python, machine)
        self.download_args = [
            "download",
            "--only-binary=:all:",
            *[arg for tag in platforms(machine, glibc) for arg in ("--platform", tag)],
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--dest",
            str(target),
        ]

    def app_wheel(self, source: Path) -> str:
        # pip builds in the project folder (build/, *.egg-info): build from a copy, so the
        # source stays untouched.
        copy = self.target.parent / "source"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
        pip("wheel", "--no-deps", "--wheel-dir", str(self.target), str(copy))
        wheels = sorted(self.target.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(
                f"expected one app wheel from {source}, got {[w.name for w in wheels]}"
            )
        return wheels[0].name

    def pinned(self, lock: Path) -> None:
        pip(*self.download_args, "--requirement", str(lock))

    def complete(self, app_wheel: str) -> list[str]:
        """Adds what the target needs but pip left out; returns the names added.

        pip download evaluates environment markers for the controller's Python, not the
        target's (e.g. redis needs async-timeout below Python 3.11.3): walk the dependencies
        with the target's marker values and fetch what is missing.
        """
        added: list[str] = []
        todo: list[tuple[str, frozenset[str], Requirement | None]] = [
            (canonicalize_name(parse_wheel_filename(app_wheel)[0]), frozenset(), None)
        ]
        seen: set[tuple[str, frozenset[str]]] = set()
        while todo:
            name, extras, wanted = todo.pop()
            if (name, extras) in seen:
                continue
            seen.add((name, extras))
            if name not in wheels_by_name(self.target):
                if wanted is None:
                    raise BuildError(f"the app wheel {app_wheel} is missing")
                pip(*self.download_args, "--no-deps", f"{wanted.name}{wanted.specifier}")
                added.append(name)
            for requirement in wheel_requirements(wheels_by_name(self.target)[name]):
                marker = requirement.marker
                if marker is None or any(
                    marker.evaluate({**self.environment, "extra": extra}) for extra in {"", *extras}
                ):
                    key = canonicalize_name(requirement.name)
                    todo.append((key, frozenset(requirement.extras), requirement))
        return added


def build(source: Path, target: Path, python: str, machine: str, glibc: str) -> dict[str, Any]:
    """Builds the wheelhouse into `target` (a fresh folder)."""
    builder = Builder(target, python, machine, glibc)
    app_wheel = builder.app_wheel(source)
    builder.pinned(source / "requirements.lock")
    added = builder.complete(app_wheel)
    shutil.copy2(source / "requirements.lock", target / "requirements.lock")
    return {"app_wheel": app_wheel, "added_to_lock": added}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the app's project folder")
    parser.add_argument("--cache", type=Path, required=True, help="wheelhouse cache folder")
    parser.add_argument("--release", default="", help="release name (default: the version)")
    parser.add_argument("--python", required=True, help="target Python, e.g. 3.11.2")
    parser.add_argument("--machine", required=True, help="target machine, e.g. x86_64")
    parser.add_argument("--glibc", required=True, help="target glibc version, e.g. 2.36")
    args = parser.parse_args()

    try:
        source = args.source.resolve()
        if not (source / "pyproject.toml").is_file():
            raise BuildError(f"{source} has no pyproject.toml: set app_source_dir to the app")
        if not (source / "requirements.lock").is_file():
            raise BuildError(f"{source} has no requirements.lock (the runtime pins)")
        version = project_version(source)
        release = args.release or version
        if not RELEASE_RE.fullmatch(release):
            raise BuildError(f"release name {release!r} must match {RELEASE_RE.pattern}")
        wanted = {
            "release": release,
            "version": version,
            "fingerprint": fingerprint(source),
            "python": args.python,
            "machine": args.machine,
            "glibc": args.glibc,
        }
        tag = f"cp{args.python}-{args.machine}-glibc{args.glibc}"
        final = args.cache.resolve() / release / tag
        stamp = final / STAMP
        if stamp.is_file():
            built = json.loads(stamp.read_text(encoding="utf-8"))
            if {k: built.get(k) for k in wanted} == wanted:
                print(json.dumps({**built, "path": str(final), "changed": False}))
                return 0
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as work:
            staging = Path(work) / "wheelhouse"
            staging.mkdir()
            built = {**wanted, **build(source, staging, args.python, args.machine, args.glibc)}
            (staging / STAMP).write_text(json.dumps(built, indent=2) + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    except BuildError as error:
        print(json.dumps({"failed": True, "msg": str(error)}))
        return 1
    print(json.dumps({**built, "path": str(final), "changed": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
