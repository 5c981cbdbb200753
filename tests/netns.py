"""Network namespaces joined to the root namespace by veth links, for tests that cut a network
(../shared/FIELD-NOTES.md, "Networks for tests").

Every address is in 127.0.0.0/8, so test traffic stays on this machine: each link is a /30
(root side ``.1``, namespace side ``.2``) with ``route_localnet=1`` on both ends (set per
device: the root namespace's ``all`` is left as it is). In the root namespace the link's /30
route is more specific than ``local 127.0.0.0/8``, so root processes reach the namespace
side through the link, and the namespace reaches the root side's address (a local address
of the root namespace: a root daemon bound to it, or to 0.0.0.0, answers).

:meth:`Link.cut` takes the namespace's end down: packets from the root side go into the
veth and are dropped (a connection attempt times out, an open connection goes silent), as
across a real partition, rather than being refused at once. :meth:`Link.heal` brings it up.

Names carry the test process's pid, so runs of several worktrees at once do not collide;
:meth:`Netns.close` deletes the namespace and the root ends of its links and never fails.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

import pytest


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def _used_nets() -> set[tuple[int, int]]:
    """The 127.A.B.0 networks some interface of the root namespace already has an address in."""
    out = _ip("-o", "-4", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        addr = parts[parts.index("inet") + 1].split("/")[0]
        a, b, c, _ = (int(x) for x in addr.split("."))
        if a == 127:
            used.add((b, c))
    return used


@dataclass
class Link:
    ns: str
    root_dev: str
    ns_dev: str
    root_ip: str
    ns_ip: str

    def cut(self) -> None:
        _ip("-n", self.ns, "link", "set", self.ns_dev, "down")

    def heal(self) -> None:
        _ip("-n", self.ns, "link", "set", self.ns_dev, "up")


class Netns:
    def __init__(self, tag: str = "") -> None:
        self.name = f"asrt-{os.getpid()}{tag}"
        self.links: list[Link] = []
        res = _ip("netns", "add", self.name, check=False)
        if res.returncode != 0 and ("not permitted" in res.stderr or "Permission denied" in res.stderr):
            why = f"network namespaces are not available here (ip netns add: {res.stderr.strip()})"
            if os.environ.get("CI"):   # CI runs as root: a partition test must not pass by skipping
                pytest.fail(why)
            pytest.skip(why)
        assert res.returncode == 0, f"ip netns add {self.name} failed: {res.stderr.strip()}"
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            self._sysctl_ns("all")
        except BaseException:
            self.close()
            raise

    def exec(self) -> tuple[str, ...]:
        """The prefix that runs a command inside the namespace (it execs the command)."""
        return ("ip", "netns", "exec", self.name)

    def _sysctl_ns(self, dev: str) -> None:
        res = subprocess.run([*self.exec(), "sh", "-c", f"echo 1 > /proc/sys/net/ipv4/conf/{dev}/route_localnet"],
                             capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 0, res.stderr

    def link(self) -> Link:
        """A new veth link between the root namespace and this one, both ends up."""
        n = len(self.links)
        root_dev, ns_dev = f"at{os.getpid() % 100000}{n}r", f"at{os.getpid() % 100000}{n}n"
        used = _used_nets()
        rng = random.Random(f"{os.getpid()}-{n}")
        while True:   # a free /30 in 127.100.0.0 - 127.199.255.255
            b, c = rng.randrange(100, 200), rng.randrange(0, 256)
            if (b, c) not in used:
                break
        root_ip, ns_ip = f"127.{b}.{c}.1", f"127.{b}.{c}.2"
        _ip("link", "add", root_dev, "type", "veth", "peer", "name", ns_dev)
        link = Link(self.name, root_dev, ns_dev, root_ip, ns_ip)
        self.links.append(link)
        _ip("link", "set", ns_dev, "netns", self.name)
        with open(f"/proc/sys/net/ipv4/conf/{root_dev}/route_localnet", "w") as f:
            f.write("1")
        self._sysctl_ns(ns_dev)
        _ip("addr", "add", f"{root_ip}/30", "dev", root_dev)
        _ip("-n", self.name, "addr", "add", f"{ns_ip}/30", "dev", ns_dev)
        _ip("link", "set", root_dev, "up")
        _ip("-n", self.name, "link", "set", ns_dev, "up")
        return link

    def close(self) -> None:
        """Delete the namespace (its ends of the links go with it) and the root ends. Call it
        after the processes inside have been stopped: a namespace lives while a process is in it."""
        _ip("netns", "del", self.name, check=False)
        for link in self.links:
            _ip("link", "del", link.root_dev, check=False)

    def leftovers(self) -> list[str]:
        """What of this namespace still exists (for a test's own check that it left nothing)."""
        names = _ip("netns", "list").stdout.split()
        devs = [lk.root_dev for lk in self.links if _ip("link", "show", lk.root_dev, check=False).returncode == 0]
        return ([self.name] if self.name in names else []) + devs
