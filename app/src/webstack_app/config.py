"""Settings from WEBSTACK_* environment variables and an optional KEY=VALUE file.

Every setting is read and checked here, once, at start-up. A missing or bad value raises
ConfigError whose message is one line that starts with the setting's name; the callers
(wsgi.py, check_config.py) print it as `config error: <message>` and exit non-zero.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

PREFIX = "WEBSTACK_"
CONFIG_FILE_VAR = "WEBSTACK_CONFIG_FILE"
# prometheus_client's own variable: set, the metrics of several worker processes are kept in
# files there (see metrics.py). Read from the environment only, where prometheus_client reads it.
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
_METRICS_DIR_LEGACY_VAR = "prometheus_multiproc_dir"

CookieSecure = Literal["auto", "always", "never"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = tuple[str, int]

DEFAULT_REDIS_ADDRESS: Address = ("127.0.0.1", 6379)
SECRET_KEY_MIN_LENGTH = 32
SESSION_TTL_RANGE = (60, 2_592_000)  # one minute .. 30 days
MAX_BODY_RANGE = (1_024, 10 * 1024 * 1024)
REDIS_TIMEOUT_RANGE = (0.05, 30.0)
REDIS_RETRIES_RANGE = (0, 5)
REDIS_WAIT_REPLICAS_RANGE = (0, 5)
REDIS_WAIT_TIMEOUT_RANGE = (0.01, 10.0)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_INSTANCE_NAME_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,98}[\x21-\x7e])?")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

T = TypeVar("T")
N = TypeVar("N", int, float)


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line naming the setting."""


@dataclass(frozen=True)
class Settings:
    """The app's whole configuration, validated."""

    secret_key: str = field(repr=False)
    redis_address: Address | None = DEFAULT_REDIS_ADDRESS  # None when Sentinel is used
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    sentinel_addresses: tuple[Address, ...] = ()
    sentinel_service: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    redis_timeout: float = 0.5
    redis_retries: int = 1
    redis_wait_replicas: int = 0  # a session write waits until this many replicas have it
    redis_wait_timeout: float = 0.5  # seconds it waits at most, else the request fails
    session_ttl: int = 3600
    cookie_secure: CookieSecure = "auto"
    trusted_proxies: tuple[Network, ...] = ()
    key_prefix: str = "webstack"
    max_body_bytes: int = 65_536
    instance_name: str = field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    metrics_dir: Path | None = None  # None: one process, the metrics in memory

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinel_addresses)

    def summary(self) -> list[str]:
        """Human-readable `NAME=value` lines, secrets left out."""
        if self.uses_sentinel:
            sentinels = ",".join(_format_address(a) for a in self.sentinel_addresses)
            redis = [
                f"WEBSTACK_SENTINEL_ADDRESSES={sentinels}",
                f"WEBSTACK_SENTINEL_SERVICE={self.sentinel_service}",
                f"WEBSTACK_SENTINEL_USERNAME={self.sentinel_username or ''}",
                f"WEBSTACK_SENTINEL_PASSWORD={'(set)' if self.sentinel_password else '(unset)'}",
            ]
        else:
            address = self.redis_address or DEFAULT_REDIS_ADDRESS
            redis = [f"WEBSTACK_REDIS_ADDRESS={_format_address(address)}"]
        return [
            *redis,
            f"WEBSTACK_REDIS_USERNAME={self.redis_username or ''}",
            f"WEBSTACK_REDIS_PASSWORD={'(set)' if self.redis_password else '(unset)'}",
            f"WEBSTACK_REDIS_TIMEOUT={self.redis_timeout}",
            f"WEBSTACK_REDIS_RETRIES={self.redis_retries}",
            f"WEBSTACK_REDIS_WAIT_REPLICAS={self.redis_wait_replicas}",
            f"WEBSTACK_REDIS_WAIT_TIMEOUT={self.redis_wait_timeout}",
            f"WEBSTACK_SESSION_TTL={self.session_ttl}",
            f"WEBSTACK_COOKIE_SECURE={self.cookie_secure}",
            "WEBSTACK_SECRET_KEY=(set)",
            f"WEBSTACK_TRUSTED_PROXIES={','.join(str(n) for n in self.trusted_proxies)}",
            f"WEBSTACK_KEY_PREFIX={self.key_prefix}",
            f"WEBSTACK_MAX_BODY_BYTES={self.max_body_bytes}",
            f"WEBSTACK_INSTANCE_NAME={self.instance_name}",
            f"WEBSTACK_LOG_LEVEL={self.log_level}",
            f"{METRICS_DIR_VAR}={self.metrics_dir or ''}",
        ]


# Every setting this module reads; anything else that starts with WEBSTACK_ is a typo.
KNOWN_SETTINGS = frozenset(
    {
        CONFIG_FILE_VAR,
        "WEBSTACK_REDIS_ADDRESS",
        "WEBSTACK_REDIS_USERNAME",
        "WEBSTACK_REDIS_PASSWORD",
        "WEBSTACK_SENTINEL_ADDRESSES",
        "WEBSTACK_SENTINEL_SERVICE",
        "WEBSTACK_SENTINEL_USERNAME",
        "WEBSTACK_SENTINEL_PASSWORD",
        "WEBSTACK_REDIS_TIMEOUT",
        "WEBSTACK_REDIS_RETRIES",
        "WEBSTACK_REDIS_WAIT_REPLICAS",
        "WEBSTACK_REDIS_WAIT_TIMEOUT",
        "WEBSTACK_SESSION_TTL",
        "WEBSTACK_COOKIE_SECURE",
        "WEBSTACK_SECRET_KEY",
        "WEBSTACK_TRUSTED_PROXIES",
        "WEBSTACK_KEY_PREFIX",
        "WEBSTACK_MAX_BODY_BYTES",
        "WEBSTACK_INSTANCE_NAME",
        "WEBSTACK_LOG_LEVEL",
    }
)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from `environ` (normally os.environ), over the file WEBSTACK_CONFIG_FILE names.

    An empty value counts as unset, as an empty line in a systemd EnvironmentFile would.
    PROMETHEUS_MULTIPROC_DIR is the exception: prometheus_client counts it as set.
    """
    metrics_dir = _metrics_dir(environ)
    values: dict[str, str] = {}
    config_file = environ.get(CONFIG_FILE_VAR, "").strip()
    if config_file:
        values.update(read_env_file(Path(config_file)))
    values.update({k: v for k, v in environ.items() if k.startswith(PREFIX)})
    _reject_unknown(values)
    get = _Reader({k: v.strip() for k, v in values.items() if v.strip()})

    sentinel_addresses = get.parse("WEBSTACK_SENTINEL_ADDRESSES", _parse_address_list, ())
    if sentinel_addresses:
        if get.has("WEBSTACK_REDIS_ADDRESS"):
            raise ConfigError(
                "WEBSTACK_REDIS_ADDRESS and WEBSTACK_SENTINEL_ADDRESSES are both set; "
                "set only one (Sentinel finds the master itself)"
            )
        redis_address = None
        sentinel_service = get.required(
            "WEBSTACK_SENTINEL_SERVICE",
            "is required when WEBSTACK_SENTINEL_ADDRESSES is set (the monitored master's name)",
        )
    else:
        redis_address = get.parse("WEBSTACK_REDIS_ADDRESS", _parse_address, DEFAULT_REDIS_ADDRESS)
        sentinel_service = None

    secret_key = get.required(
        "WEBSTACK_SECRET_KEY",
        f"is required (at least {SECRET_KEY_MIN_LENGTH} characters, e.g. the output of "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
    )
    if len(secret_key) < SECRET_KEY_MIN_LENGTH:
        raise ConfigError(
            f"WEBSTACK_SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} characters, "
            f"got {len(secret_key)}"
        )

    return Settings(
        secret_key=secret_key,
        redis_address=redis_address,
        redis_username=get.optional("WEBSTACK_REDIS_USERNAME"),
        redis_password=get.optional("WEBSTACK_REDIS_PASSWORD"),
        sentinel_addresses=sentinel_addresses,
        sentinel_service=sentinel_service,
        sentinel_username=get.optional("WEBSTACK_SENTINEL_USERNAME"),
        sentinel_password=get.optional("WEBSTACK_SENTINEL_PASSWORD"),
        redis_timeout=get.number("WEBSTACK_REDIS_TIMEOUT", float, 0.5, REDIS_TIMEOUT_RANGE),
        redis_retries=get.number("WEBSTACK_REDIS_RETRIES", int, 1, REDIS_RETRIES_RANGE),
        redis_wait_replicas=get.number(
            "WEBSTACK_REDIS_WAIT_REPLICAS", int, 0, REDIS_WAIT_REPLICAS_RANGE
        ),
        redis_wait_timeout=get.number(
            "WEBSTACK_REDIS_WAIT_TIMEOUT", float, 0.5, REDIS_WAIT_TIMEOUT_RANGE
        ),
        session_ttl=get.number("WEBSTACK_SESSION_TTL", int, 3600, SESSION_TTL_RANGE),
        cookie_secure=get.choice("WEBSTACK_COOKIE_SECURE", ("auto", "always", "never"), "auto"),
        trusted_proxies=get.parse("WEBSTACK_TRUSTED_PROXIES", _parse_networks, ()),
        key_prefix=get.pattern("WEBSTACK_KEY_PREFIX", _KEY_PREFIX_RE, "webstack", _KEY_PREFIX_HELP),
        max_body_bytes=get.number("WEBSTACK_MAX_BODY_BYTES", int, 65_536, MAX_BODY_RANGE),
        instance_name=get.pattern(
            "WEBSTACK_INSTANCE_NAME", _INSTANCE_NAME_RE, socket.gethostname(), _INSTANCE_NAME_HELP
        ),
        log_level=get.choice("WEBSTACK_LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
        metrics_dir=metrics_dir,
    )


_KEY_PREFIX_HELP = "1 to 64 characters from A-Z a-z 0-9 _ . : -"
_INSTANCE_NAME_HELP = "1 to 100 printable ASCII characters, no leading or trailing space"


def _metrics_dir(environ: Mapping[str, str]) -> Path | None:
    """The directory of the multiprocess metrics, or None when the variable is not set.

    prometheus_client switches to files as soon as the variable exists, even empty, so an
    empty or unusable value is an error here rather than a silent fallback.
    """
    if _METRICS_DIR_LEGACY_VAR in environ and METRICS_DIR_VAR not in environ:
        raise ConfigError(
            f"{_METRICS_DIR_LEGACY_VAR} is the deprecated name: set {METRICS_DIR_VAR} instead"
        )
    raw = environ.get(METRICS_DIR_VAR)
    if raw is None:
        return None
    path = Path(raw)
    if not raw.strip() or not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{METRICS_DIR_VAR} must name a directory this process can write (unset it for a "
            f"single process), got {raw!r}"
        )
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (a common subset).

    Blank lines and lines starting with # or ; are skipped; one pair of matching quotes
    around a value is removed; keys that do not start with WEBSTACK_ are ignored, so the
    file can be shared with the unit's other variables.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"{CONFIG_FILE_VAR}: cannot read {path}: {reason}") from None
    values: dict[str, str] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _ENV_KEY_RE.fullmatch(key):
            raise ConfigError(
                f"{CONFIG_FILE_VAR}: {path} line {number}: expected KEY=VALUE, got {line[:60]!r}"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key.startswith(PREFIX):
            values[key] = value
    return values


def _reject_unknown(values: Mapping[str, str]) -> None:
    for name in sorted(values):
        if name not in KNOWN_SETTINGS:
            close = difflib.get_close_matches(name, KNOWN_SETTINGS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{name} is not a known setting{hint}")


class _Reader:
    """Typed access to the raw string values, raising ConfigError with the setting's name."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def has(self, name: str) -> bool:
        return name in self._values

    def optional(self, name: str) -> str | None:
        return self._values.get(name)

    def required(self, name: str, why: str) -> str:
        value = self._values.get(name)
        if value is None:
            raise ConfigError(f"{name} {why}")
        return value

    def parse(self, name: str, parser: Callable[[str], T], default: T) -> T:
        raw = self._values.get(name)
        if raw is None:
            return default
        try:
            return parser(raw)
        except ValueError as error:
            raise ConfigError(f"{name} {error}, got {raw!r}") from None

    def number(self, name: str, kind: type[N], default: N, bounds: tuple[N, N]) -> N:
        raw = self._values.get(name)
        if raw is None:
            return default
        low, high = bounds
        noun = "an integer" if kind is int else "a number"
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ConfigError(f"{name} must be {noun} between {low} and {high}, got {raw!r}")
        return value

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, *, upper: bool = False
    ) -> str:
        raw = self._values.get(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    def pattern(self, name: str, regex: re.Pattern[str], default: str, help_text: str) -> str:
        raw = self._values.get(name)
        if raw is None:
            return default
        if not regex.fullmatch(raw):
            raise ConfigError(f"{name} must be {help_text}, got {raw!r}")
        return raw


def _parse_address(raw: str) -> Address:
    """`host:port` or `[ipv6]:port`."""
    host, sep, port_text = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c in host for c in " /[]") or not port_text.isdigit():
        raise ValueError("must be host:port (e.g. 127.0.0.1:6379)")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("must be host:port with a port from 1 to 65535")
    return host, port


def _parse_address_list(raw: str) -> tuple[Address, ...]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return tuple(_parse_address(item) for item in items)
    except ValueError:
        raise ValueError("must be a comma-separated list of host:port") from None


def _parse_networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"must be a comma-separated list of IP addresses or CIDR networks ({item!r} is not)"
            ) from None
    return tuple(networks)


def _format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
