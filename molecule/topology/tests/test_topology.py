"""The whole topology, checked from a client machine on the lab network."""

from collections.abc import Callable

from testinfra.host import Host


def test_every_machine_is_reachable(machine: Callable[[str], Host]) -> None:
    for name in ["lb1", "lb2", "app1", "app2", "redis1", "redis2", "redis3", "client1"]:
        assert machine(name).run("true").rc == 0
