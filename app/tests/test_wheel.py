"""The tests exercise the app as the servers run it: installed from its built wheel (not an
editable install of src/), and built from the source as it is now (not a stale install)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from support import subprocess_env

SOURCE = Path(__file__).resolve().parents[1] / "src" / "webstack_app"
DISTRIBUTION = "webstack-app"


def imported_from() -> Path:
    """Where a fresh interpreter, as the tests' gunicorn servers start, imports the app from."""
    result = subprocess.run(
        [sys.executable, "-c", "import webstack_app; print(webstack_app.__file__)"],
        env=subprocess_env({}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return Path(result.stdout.strip()).parent


def test_the_app_is_installed_from_its_wheel_not_editable():
    distribution = importlib.metadata.distribution(DISTRIBUTION)
    # pip records where a package installed from a path came from (PEP 610).
    origin = json.loads(distribution.read_text("direct_url.json") or "{}")
    assert not origin.get("dir_info", {}).get("editable"), (
        f"{DISTRIBUTION} is an editable install of {origin.get('url')}: install its wheel"
    )
    assert origin.get("url", "").endswith(".whl"), f"not installed from a wheel: {origin}"
    location = imported_from()
    assert location != SOURCE, f"webstack_app is imported from the source folder {location}"
    assert "site-packages" in location.parts, location


def test_the_installed_wheel_holds_the_current_source():
    installed = imported_from()
    source_files = {
        p.relative_to(SOURCE) for p in SOURCE.rglob("*") if p.suffix in {".py", ".typed"}
    }
    stale = sorted(
        str(name)
        for name in source_files
        if not (installed / name).is_file()
        or (installed / name).read_bytes() != (SOURCE / name).read_bytes()
    )
    assert not stale, f"the installed app differs from src/ in {stale}: rebuild and reinstall"
    version = importlib.metadata.version(DISTRIBUTION)
    pyproject = (SOURCE.parents[1] / "pyproject.toml").read_text()
    assert f'version = "{version}"' in pyproject, f"installed {version}, not the source's"
