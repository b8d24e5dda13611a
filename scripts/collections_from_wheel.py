"""Install the collections pinned in requirements.yml without Ansible Galaxy.

The `ansible` package on PyPI bundles the community collections. This script downloads
that one wheel (cached under .cache/), extracts only the collections requirements.yml
names into collections/ansible_collections/, and fails if a bundled version differs from
the pin. Collections already present at the pinned version are left alone, so a second run
does nothing.

    python scripts/collections_from_wheel.py [--bundle 12.3.0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "collections" / "ansible_collections"
CACHE = ROOT / ".cache" / "wheels"
BUNDLE = "12.3.0"  # the ansible release whose collections requirements.yml pins


def installed_version(name: str) -> str | None:
    manifest = DEST.joinpath(*name.split("."), "MANIFEST.json")
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def bundle_wheel(bundle: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"ansible-{bundle}-*.whl"))
    if found:
        return found[0]
    print(f"collections: downloading the ansible {bundle} wheel (about 55 MB) from PyPI")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(CACHE),
            f"ansible=={bundle}",
        ],
        check=True,
    )
    return sorted(CACHE.glob(f"ansible-{bundle}-*.whl"))[0]


def extract(wheel: zipfile.ZipFile, name: str, version: str) -> None:
    prefix = "ansible_collections/" + name.replace(".", "/") + "/"
    try:
        manifest = json.loads(wheel.read(prefix + "MANIFEST.json"))
    except KeyError:
        sys.exit(f"collections: {name} is not in the ansible wheel; install it from Galaxy")
    bundled = manifest["collection_info"]["version"]
    if bundled != version:
        sys.exit(
            f"collections: requirements.yml pins {name} {version} but the wheel has "
            f"{bundled}; change the pin or the bundle version"
        )
    target = DEST.joinpath(*name.split("."))
    shutil.rmtree(target, ignore_errors=True)
    for member in wheel.namelist():
        if member.startswith(prefix) and not member.endswith("/"):
            wheel.extract(member, DEST.parent)
    print(f"collections: installed {name} {version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=BUNDLE, help="version of the ansible package")
    args = parser.parse_args()

    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    missing = [c for c in wanted if installed_version(c["name"]) != str(c["version"])]
    if not missing:
        print("collections: all pinned collections are installed")
        return
    with zipfile.ZipFile(bundle_wheel(args.bundle)) as wheel:
        for collection in missing:
            extract(wheel, collection["name"], str(collection["version"]))


if __name__ == "__main__":
    main()
