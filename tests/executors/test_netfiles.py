"""/etc/hosts, /etc/resolv.conf and /etc/hostname contents per network mode."""

from __future__ import annotations

import pytest

from pybuild.executors._netfiles import BadExtraHost, hostname_file, hosts_file, parse_extra_host, resolv_conf

HOST_RESOLV = """\
# generated
search corp.example
nameserver 127.0.0.53
nameserver 192.0.2.53
options edns0 trust-ad
"""


def test_hosts_file_names_the_sandbox_and_extra_hosts() -> None:
    text = hosts_file("buildkitsandbox", ("db:10.0.0.5", "v6=fd00::1", "box:[fd00::2]")).decode()
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost buildkitsandbox"
    assert "10.0.0.5\tdb" in lines and "fd00::1\tv6" in lines and "fd00::2\tbox" in lines


@pytest.mark.parametrize("entry", ["nocolon", "db:not-an-ip", ":1.2.3.4", "two words:1.2.3.4"])
def test_bad_extra_hosts_are_rejected(entry: str) -> None:
    with pytest.raises(BadExtraHost):
        parse_extra_host(entry)


def test_resolv_conf_default_uses_slirp_dns_and_keeps_search() -> None:
    text = resolv_conf(HOST_RESOLV, "default").decode()
    assert [l for l in text.splitlines() if l.startswith("nameserver")] == ["nameserver 10.0.2.3"]
    assert "search corp.example" in text and "options edns0 trust-ad" in text


def test_resolv_conf_host_is_the_hosts_file() -> None:
    assert resolv_conf(HOST_RESOLV, "host").decode() == HOST_RESOLV


def test_resolv_conf_none_drops_loopback_resolvers() -> None:
    servers = [l for l in resolv_conf(HOST_RESOLV, "none").decode().splitlines() if l.startswith("nameserver")]
    assert servers == ["nameserver 192.0.2.53"]
    only_loopback = "nameserver 127.0.0.53\n"
    assert "nameserver 8.8.8.8" in resolv_conf(only_loopback, "none").decode()


def test_hostname_file() -> None:
    assert hostname_file("x") == b"x\n"
