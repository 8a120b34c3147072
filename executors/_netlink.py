"""The few rtnetlink requests a step's veth needs, with the standard library's sockets.

Why not pyroute2 here: the sandbox side runs in the zygote (``python -I -S``,
no site-packages), importing pyroute2 costs 125-190 ms (more under load),
and its Python-level requests measured 25-65 ms for one veth's setup on this
machine, several times what starting slirp4netns costs a step (~7 ms).  Each
request below is one message and its acknowledgement: the kernel does the work.

A ``Netlink`` socket belongs to the network namespace it was opened in, so a
monitor opens one before it unshares its network namespace (the host's side)
and one after (the step's side).

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

_NETLINK_ROUTE = 0
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_DELLINK, _RTM_SETLINK = 16, 17, 19
_RTM_NEWADDR, _RTM_NEWROUTE, _RTM_NEWNEIGH = 20, 24, 28
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
_NLA_F_NESTED = 0x8000

_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MASTER, _IFLA_PROTINFO = 1, 3, 10, 12
_IFLA_LINKINFO, _IFLA_NET_NS_FD = 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA = 1, 2
_VETH_INFO_PEER = 1
_IFLA_BRPORT_LEARNING, _IFLA_BRPORT_UNICAST_FLOOD, _IFLA_BRPORT_ISOLATED = 8, 9, 33
_NDA_DST, _NDA_LLADDR = 1, 2
_NUD_NOARP, _NUD_PERMANENT = 0x40, 0x80
_NTF_MASTER = 0x04
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_GATEWAY, _RTA_OIF = 5, 4
_RT_TABLE_MAIN, _RTPROT_BOOT, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 3, 0, 1
_AF_BRIDGE = 7
IFF_UP = 0x1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_NDMSG = struct.Struct("=BBHiHBB")  # ndmsg
_ATTR = struct.Struct("=HH")  # rtattr


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | _NLA_F_NESTED, b"".join(attrs))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


def mac_for(address: str) -> bytes:
    """A locally administered MAC made from an IPv4 address, as Docker does (02:42 + the address):
    an address handed out again comes with the same MAC, so no neighbour cache is stale."""
    return b"\x02\x42" + ipaddress.IPv4Address(address).packed


class Netlink:
    """An rtnetlink socket in the current network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        """Send one request and wait for its acknowledgement; a refusal is an OSError."""
        self.seq += 1
        header = _HEADER.pack(_HEADER.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self.seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
                if reply == _NLMSG_ERROR and seq == self.seq:
                    code = struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                offset += max(length, _HEADER.size) + (-length % 4)

    # -- links ----------------------------------------------------------------

    def add_bridge(self, name: str) -> None:
        linkinfo = nested(_IFLA_LINKINFO, attr(_IFLA_INFO_KIND, b"bridge"))
        self.request(_RTM_NEWLINK, ifinfo() + attr(_IFLA_IFNAME, name.encode() + b"\0") + linkinfo, _NLM_F_CREATE | _NLM_F_EXCL)

    def delete_link(self, name: str) -> None:
        self.request(_RTM_DELLINK, ifinfo() + attr(_IFLA_IFNAME, name.encode() + b"\0"))

    def set_up(self, index: int) -> None:
        self.request(_RTM_NEWLINK, ifinfo(index, IFF_UP, IFF_UP))

    def add_veth(self, name: str, master: int, peer: str, peer_netns_fd: int, peer_mac: bytes) -> None:
        """A veth pair: ``name`` here, down and a port of ``master``; ``peer`` (down) in the namespace of ``peer_netns_fd``."""
        peer_info = ifinfo() + attr(_IFLA_IFNAME, peer.encode() + b"\0") + attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        peer_info += attr(_IFLA_ADDRESS, peer_mac)
        linkinfo = nested(_IFLA_LINKINFO, attr(_IFLA_INFO_KIND, b"veth"), nested(_IFLA_INFO_DATA, attr(_VETH_INFO_PEER, peer_info)))
        body = ifinfo() + attr(_IFLA_IFNAME, name.encode() + b"\0") + attr(_IFLA_MASTER, struct.pack("=I", master))
        self.request(_RTM_NEWLINK, body + linkinfo, _NLM_F_CREATE | _NLM_F_EXCL)

    def isolate_port(self, index: int) -> None:
        """Make a bridge port isolated: it reaches the bridge itself but no other isolated port;
        and locked to its static entry: the bridge learns no address from what it sends (another
        source MAC cannot draw a neighbour's traffic to it) and floods it no unknown unicast."""
        protinfo = nested(
            _IFLA_PROTINFO,
            attr(_IFLA_BRPORT_ISOLATED, b"\x01"),
            attr(_IFLA_BRPORT_LEARNING, b"\x00"),
            attr(_IFLA_BRPORT_UNICAST_FLOOD, b"\x00"),
        )
        self.request(_RTM_SETLINK, ifinfo(index, family=_AF_BRIDGE) + protinfo)

    def add_static_fdb(self, port: int, mac: bytes) -> None:
        """The bridge forwards frames for ``mac`` to ``port`` (``bridge fdb replace MAC dev PORT master static``)."""
        body = _NDMSG.pack(_AF_BRIDGE, 0, 0, port, _NUD_NOARP, _NTF_MASTER, 0) + attr(_NDA_LLADDR, mac)
        self.request(_RTM_NEWNEIGH, body, _NLM_F_CREATE | _NLM_F_REPLACE)

    def add_permanent_neighbour(self, index: int, address: str, mac: bytes) -> None:
        """``address`` is ``mac`` on interface ``index``, whatever ARP says later (``ip neigh replace ... nud permanent``)."""
        body = _NDMSG.pack(socket.AF_INET, 0, 0, index, _NUD_PERMANENT, 0, 0)
        body += attr(_NDA_DST, ipaddress.IPv4Address(address).packed) + attr(_NDA_LLADDR, mac)
        self.request(_RTM_NEWNEIGH, body, _NLM_F_CREATE | _NLM_F_REPLACE)

    # -- addresses and routes -----------------------------------------------

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        packed = ipaddress.IPv4Address(address).packed
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, _RT_SCOPE_UNIVERSE, index) + attr(_IFA_LOCAL, packed) + attr(_IFA_ADDRESS, packed)
        self.request(_RTM_NEWADDR, body, _NLM_F_CREATE | _NLM_F_EXCL)

    def add_default_route(self, gateway: str, index: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT, _RT_SCOPE_UNIVERSE, _RTN_UNICAST, 0)
        body += attr(_RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed) + attr(_RTA_OIF, struct.pack("=I", index))
        self.request(_RTM_NEWROUTE, body, _NLM_F_CREATE | _NLM_F_EXCL)


def link_index(name: str) -> int | None:
    """The index of the interface ``name`` in the current network namespace, or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None
