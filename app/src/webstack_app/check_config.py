"""`webstack-app-check-config`: validate the settings the app would start with.

Exit status 0 when they are valid, 1 (with one `config error: ...` line on stderr) when not.
Reads the same environment and WEBSTACK_CONFIG_FILE as the app, connects to nothing; meant
for systemd's ExecStartPre and for Ansible before a restart.
"""

from __future__ import annotations

import argparse
import os
import sys

from webstack_app.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webstack-app-check-config",
        description="Validate the WEBSTACK_* settings (environment and WEBSTACK_CONFIG_FILE).",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the settings are valid"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print("config ok")
        for line in settings.summary():
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
