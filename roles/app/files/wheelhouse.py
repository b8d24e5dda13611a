#!/usr/bin/env python3
"""Builds the wheelhouse of one app release on the controller (role app, run by Ansible).

The app machines cannot reach PyPI, so everything they install comes from here, by two pip
commands and nothing unpinned:

- `pip wheel --no-deps` of the app's source folder: the app's own wheel, whose sha256 is
  written to app-wheel.lock (`webstack-app==<version> --hash=sha256:...`);
- `pip download --require-hashes --only-binary=:all:` of requirements.lock, the hash-pinned
  lock of every runtime dependency, for the targets' CPython version, ABI and manylinux
  platforms (given on the command line, read on the targets).

The targets then install both locks with `pip install --no-index --require-hashes`: every
file they install is checked against a hash made on the controller.

The wheelhouse lands in CACHE/<release>/cp<python>-<machine>-glibc<version>/ and is reused as
long as the app's source (pyproject.toml, requirements.lock, README.md, src/) is unchanged; a
changed source rebuilds it. It is built in a temporary folder and renamed into place, so an
interrupted build never leaves a half wheelhouse that looks complete.

pip runs with --isolated: the controller's pip configuration (constraints, extra indexes,
find-links) must not leak into what the servers install. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

STAMP = "wheelhouse.json"
LOCK = "requirements.lock"
APP_LOCK = "app-wheel.lock"
# What goes into the app's wheel; a change to any of these is a new build.
SOURCE_FILES = ("pyproject.toml", LOCK, "README.md")
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


def project(source: Path) -> tuple[str, str]:
    """The project's name and version, from pyproject.toml."""
    pyproject = source / "pyproject.toml"
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        return str(table["name"]), str(table["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"cannot read name and version from {pyproject}: {error}") from None


def platforms(machine: str, glibc: str) -> list[str]:
    """Every manylinux tag a machine with this glibc runs, newest first.

    pip download takes the platform tags literally (it does not widen manylinux_2_36 to the
    older manylinux tags the machine also runs), so all of them are given.
    """
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
        raise BuildError(f"pip {' '.join(args[:2])} ... failed:\n{tail}")


def build(source: Path, target: Path, python: str, machine: str, glibc: str) -> dict[str, Any]:
    """Builds the wheelhouse into `target` (a fresh folder); returns the app wheel's name."""
    name, version = project(source)
    # pip builds in the project folder (build/, *.egg-info): build from a copy, so the source
    # stays untouched.
    copy = target.parent / "source"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    pip("wheel", "--no-deps", "--wheel-dir", str(target), str(copy))
    wheels = sorted(target.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one app wheel from {source}, got {[w.name for w in wheels]}")
    app_wheel = wheels[0]
    digest = hashlib.sha256(app_wheel.read_bytes()).hexdigest()
    (target / APP_LOCK).write_text(f"{name}=={version} --hash=sha256:{digest}\n", encoding="utf-8")

    major, minor = python.split(".")[:2]
    pip(
        "download",
        "--require-hashes",
        "--only-binary=:all:",
        f"--python-version={python}",
        "--implementation=cp",
        f"--abi=cp{major}{minor}",
        *[f"--platform={tag}" for tag in platforms(machine, glibc)],
        f"--requirement={source / LOCK}",
        f"--dest={target}",
    )
    shutil.copy2(source / LOCK, target / LOCK)
    return {"app_wheel": app_wheel.name}


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
        if not (source / LOCK).is_file():
            raise BuildError(f"{source} has no {LOCK} (the hash-pinned runtime dependencies)")
        version = project(source)[1]
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
