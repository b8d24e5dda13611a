"""The scenario's Redis machines as the tests reach them: redis-cli on them, and the cluster
as its Sentinels describe it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import testinfra

# The cross-role contract (README of the role): ports, Sentinel's name for the primary, keys.
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASTER_NAME = "webstack"
KEY_PREFIX = "webstack:"


@dataclass
class Machine:
    """One Redis machine of the scenario, reached over SSH like the converge reaches it."""

    name: str
    address: str
    host: testinfra.host.Host
    secrets: dict[str, str]

    def cli(self, port: int, password: str, args: tuple[str, ...], at: str, user: str = "") -> str:
        """redis-cli against port at address `at`; the password goes in the environment."""
        argv = ["redis-cli", "--no-auth-warning", "-h", at, "-p", str(port)]
        if user:
            argv += ["--user", user]
        argv += list(args)
        prefix = f"env REDISCLI_AUTH={shlex.quote(password)} " if password else ""
        result = self.host.run(prefix + shlex.join(argv))
        return (result.stdout + result.stderr).strip()

    def redis(self, *args: str, user: str = "admin", at: str = "127.0.0.1") -> str:
        """Runs a Redis command here as the admin, the app user or nobody ("none")."""
        password = {
            "admin": self.secrets["redis_password"],
            "app": self.secrets["redis_app_password"],
            "none": "",
        }[user]
        name = self.secrets["redis_app_user"] if user == "app" else ""
        return self.cli(REDIS_PORT, password, args, at, name)

    def sentinel(self, *args: str, password: str | None = None, at: str = "127.0.0.1") -> str:
        """Runs a Sentinel command on this machine's Sentinel."""
        secret = self.secrets["redis_sentinel_password"] if password is None else password
        return self.cli(SENTINEL_PORT, secret, args, at)

    def role(self) -> list[str]:
        return self.redis("ROLE").splitlines()

    def journal(self, *units: str) -> str:
        names = " ".join(f"-u {shlex.quote(unit)}" for unit in units)
        return self.host.run(f"journalctl --no-pager -n 40 {names}").stdout


@dataclass
class Cluster:
    """The three machines, and what their Sentinels say."""

    machines: dict[str, Machine]

    def by_address(self, address: str) -> Machine:
        return next(m for m in self.machines.values() if m.address == address)

    def sentinel_views(self) -> dict[str, str]:
        """Machine name -> the primary's address as that machine's Sentinel names it."""
        views = {}
        for machine in self.machines.values():
            answer = machine.sentinel("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            views[machine.name] = answer.splitlines()[0] if answer else ""
        return views

    def primary(self) -> Machine:
        """The machine every Sentinel names as primary (fails when they disagree)."""
        views = self.sentinel_views()
        assert len(set(views.values())) == 1, f"the Sentinels disagree on the primary: {views}"
        return self.by_address(next(iter(views.values())))

    def replicas(self) -> list[Machine]:
        primary = self.primary()
        return [m for m in self.machines.values() if m.name != primary.name]
