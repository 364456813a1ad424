"""The client's local addresses: which ``host`` address talks to which node.

``JobCluster(host=...)`` may name several local addresses (a multi-homed computer). A
connection to a node is made from the given address on the node's network: the one the
kernel's routing table would pick as the source toward the node, when it is among the
given ones, else the first given address of the node's family (IPv4 or IPv6). Asking the
routing table means ``connect()``ing a UDP socket, which sends nothing.

Also this host's own addresses (:func:`local_addresses`, which discovery asks directly:
a broadcast does not reach a node on the same host in every network setup), its IPv4
networks with their broadcast addresses (:func:`ipv4_networks`, where discovery sends a
directed broadcast: 255.255.255.255 has no route on a LAN without a default route), and
the address dispynode and dispyscheduler serve when started without ``-i``
(:func:`default_ip_addr`).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from typing import Any, NamedTuple

from dispy_core.errors import ConfigError

__all__ = ["canonical", "local_address", "interface_index", "is_ipv6", "host_list", "check_ping_interval",
           "PING_INTERVAL_RANGE", "default_ip_addr", "choose_ip_addr", "local_addresses", "check_ext_addrs",
           "announced_addr", "Network", "ipv4_networks"]


def canonical(host: str) -> str:
    """An IP address in its canonical text form (``[::1]`` and ``0:0::1`` become ``::1``);
    anything else (a host name) unchanged."""
    text = host.strip()
    try:
        return str(ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text))
    except ValueError:
        return text


def is_ipv6(host: str) -> bool:
    return ":" in host


def _route_source(target: str) -> str | None:
    family = socket.AF_INET6 if is_ipv6(target) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))  # UDP: no packet is sent, the kernel only picks a route
            return str(s.getsockname()[0]).split("%", 1)[0]
    except OSError:
        return None


def local_address(hosts: list[str], node: str) -> str | None:
    """The address of ``hosts`` to connect to ``node`` from; None to let the kernel choose
    (no ``hosts``, or none of the node's family)."""
    if not hosts:
        return None
    try:
        target = str(ipaddress.ip_address(node))
    except ValueError:  # a host name: resolved by the connection itself
        return hosts[0]
    same = [h for h in hosts if is_ipv6(h) == is_ipv6(target)]
    if not same:
        return None
    if len(same) > 1:
        source = _route_source(target)
        if source in same:
            return source
    return same[0]


def interface_index(ip: str) -> int:
    """The index of the interface holding IPv6 address ``ip`` (for IPV6_MULTICAST_IF);
    0 (the kernel's choice) when it can't be told."""
    try:
        packed = ipaddress.IPv6Address(ip.split("%", 1)[0]).packed.hex()
        with open("/proc/net/if_inet6", encoding="ascii") as f:  # Linux
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[0] == packed:
                    return int(fields[1], 16)
    except (OSError, ValueError):
        pass
    return 0


# -- validating the cluster's networking options -------------------------------------
def host_list(option: str, value: Any, *, resolve: bool) -> list[str]:
    """``host`` / ``ext_host`` as a list of addresses: None gives [], a string a list of
    one. IP addresses are made canonical; with ``resolve`` host names become the first
    address they resolve to (a ConfigError if they don't resolve)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(h, str) and h.strip() for h in items):
        raise ConfigError(f"{option} must be a host name or IP address, or a list of them, not {value!r}")
    hosts = []
    for item in items:
        host = canonical(item)
        if resolve and not _is_ip(host):
            try:
                host = canonical(str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]))
            except OSError as exc:
                raise ConfigError(f"{option} {item!r} is not an IP address or known host name ({exc})") from None
        hosts.append(host)
    return hosts


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


#: Allowed range of ``ping_interval`` (seconds), as in dispy.
PING_INTERVAL_RANGE = (1.0, 1000.0)


def check_ping_interval(value: Any) -> float | None:
    """``ping_interval`` in seconds (None: don't repeat discovery), or a ConfigError."""
    if value is None:
        return None
    low, high = PING_INTERVAL_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"ping_interval must be a number of seconds from {low:g} to {high:g} "
                          f"(or None), not {value!r}")
    return float(value)


# -- this host's addresses ----------------------------------------------------------------
#: Where "the default route" is asked to lead: an address of TEST-NET-2 (RFC 5737), which
#: no network routes specially, so the kernel picks the default route for it. Asking
#: means connect()ing a UDP socket: nothing is sent.
ROUTE_PROBE = "198.51.100.1"


def _is_link_local(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_link_local
    except ValueError:
        return False


def _interfaces() -> list[tuple[str, bool, list[str]]] | None:
    """Each interface as (name, up, addresses), from psutil; None when psutil is missing
    (it comes with dispynode; a client host without it gets a shorter list)."""
    try:
        import psutil
    except ImportError:
        return None
    stats = psutil.net_if_stats()
    return [(name, name in stats and bool(stats[name].isup),
             [str(a.address).split("%", 1)[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)])
            for name, addrs in psutil.net_if_addrs().items()]


def local_addresses() -> list[str]:
    """This host's IP addresses that a datagram can be sent to: loopback first, then the
    addresses of every interface that is up (IPv6 link-local ones left out: they need an
    interface scope). Without psutil: loopback, the default route's source address and
    the addresses of the host name."""
    found = ["127.0.0.1", "::1"]
    interfaces = _interfaces()
    if interfaces is not None:
        found += [ip for _, up, ips in interfaces if up for ip in ips]
    else:
        source = _route_source(ROUTE_PROBE)
        if source is not None:
            found.append(source)
        try:
            found += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None,
                                                                   proto=socket.IPPROTO_UDP)]
        except OSError:
            pass
    return [ip for ip in dict.fromkeys(canonical(ip) for ip in found)
            if not (is_ipv6(ip) and _is_link_local(ip))]


class Network(NamedTuple):
    """One IPv4 address of an interface that is up and not loopback."""
    interface: str
    address: str
    #: The network's directed broadcast address; None where it has none (a /31 or /32
    #: network, a point-to-point link).
    broadcast: str | None


def _broadcast(address: str, netmask: str | None, given: str | None, ptp: bool) -> str | None:
    """The directed broadcast address of ``address``'s network: the one the interface
    has, else the last address of the network ``netmask`` makes (the kernel treats it as
    a broadcast address whether or not one was configured); None for point-to-point
    links and networks too small for one."""
    if ptp:
        return None
    try:
        net = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False) if netmask else None
        if net is not None and net.prefixlen >= 31:
            return None
        if given and given not in ("0.0.0.0", "255.255.255.255", address):
            return str(ipaddress.IPv4Address(given))
        return str(net.broadcast_address) if net is not None else None
    except ValueError:
        return None


def ipv4_networks() -> list[Network]:
    """This host's IPv4 addresses on interfaces that are up, loopback left out, each with
    its network's broadcast address. From psutil; without it (a client host need not
    have it) from the interfaces' primary addresses by ioctl on Linux; else none."""
    try:
        import psutil
    except ImportError:
        return _ipv4_networks_ioctl() if sys.platform.startswith("linux") else []
    stats = psutil.net_if_stats()
    found = []
    for name, addrs in psutil.net_if_addrs().items():
        if name not in stats or not stats[name].isup:
            continue
        for a in addrs:
            if a.family != socket.AF_INET or ipaddress.IPv4Address(a.address).is_loopback:
                continue
            found.append(Network(name, str(a.address), _broadcast(str(a.address), a.netmask, a.broadcast,
                                                                 bool(a.ptp))))
    return found


# Linux <linux/sockios.h> and <net/if.h>: the requests and flags the fallback needs.
_SIOCGIFFLAGS, _SIOCGIFADDR, _SIOCGIFBRDADDR, _SIOCGIFNETMASK = 0x8913, 0x8915, 0x8919, 0x891B
_IFF_UP, _IFF_BROADCAST, _IFF_LOOPBACK, _IFF_POINTOPOINT, _IFF_RUNNING = 0x1, 0x2, 0x8, 0x10, 0x40


def _ipv4_networks_ioctl() -> list[Network]:
    """:func:`ipv4_networks` without psutil, on Linux: each interface's primary IPv4
    address (secondary ones are not told by these requests)."""
    import fcntl

    def ask(sock: socket.socket, request: int, name: str) -> bytes:
        # struct ifreq: the name in 16 bytes, then a 16-byte union (a sockaddr, or flags)
        return fcntl.ioctl(sock.fileno(), request, struct.pack("16s16s", name.encode()[:15], b""))

    def addr(sock: socket.socket, request: int, name: str) -> str | None:
        try:
            return socket.inet_ntoa(ask(sock, request, name)[20:24])  # sockaddr_in's sin_addr
        except OSError:  # no such address (or no IPv4 address at all)
            return None

    found = []
    try:
        names = [name for _, name in socket.if_nameindex()]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for name in names:
                try:
                    flags = struct.unpack_from("@H", ask(sock, _SIOCGIFFLAGS, name), 16)[0]
                except OSError:
                    continue
                address = addr(sock, _SIOCGIFADDR, name)
                # "up" as psutil tells it: administratively up, and a carrier
                if address is None or flags & (_IFF_UP | _IFF_RUNNING) != _IFF_UP | _IFF_RUNNING \
                        or flags & _IFF_LOOPBACK:
                    continue
                given = addr(sock, _SIOCGIFBRDADDR, name) if flags & _IFF_BROADCAST else None
                found.append(Network(name, address, _broadcast(address, addr(sock, _SIOCGIFNETMASK, name),
                                                               given, bool(flags & _IFF_POINTOPOINT))))
    except OSError:
        return found
    return found


# -- the daemons' addresses (dispynode, dispyscheduler) --------------------------------
def default_ip_addr() -> str:
    """The IPv4 address dispynode and dispyscheduler serve when not given ``-i``: the
    address of the default route's interface; without a default route, the first
    address of an interface that is up and not loopback (link-local last); else
    127.0.0.1. A client on the same host finds the node at any of these (it asks its
    own addresses, see :mod:`dispy_core.discovery`); clients elsewhere reach it on
    the network of the default route, which is what the original's default (the
    address of the host name) was meant to give, and mostly didn't: most systems map
    the host name to 127.0.x.1."""
    return choose_ip_addr()[0]


def choose_ip_addr() -> tuple[str, str]:
    """:func:`default_ip_addr` and why it was chosen (for the daemon's log)."""
    source = _route_source(ROUTE_PROBE)
    if source is not None and not ipaddress.ip_address(source).is_loopback:
        return source, "the address of the default route's interface"
    interfaces = _interfaces() or []
    candidates = [ip for _, up, ips in interfaces if up for ip in ips
                  if not is_ipv6(ip) and not ipaddress.ip_address(ip).is_loopback]
    candidates.sort(key=_is_link_local)  # stable: interface order, link-local ones last
    if candidates:
        return candidates[0], "no default route: the first address of an interface other than loopback"
    return "127.0.0.1", "no interface but loopback has an IPv4 address"


def check_ext_addrs(ip_addrs: list[str], ext_ip_addrs: list[str]) -> None:
    """ConfigError unless there is at most one ``--ext_ip_addr`` per ``-i`` address."""
    if len(ext_ip_addrs) > len(ip_addrs):
        raise ConfigError(f"{len(ext_ip_addrs)} --ext_ip_addr given for {len(ip_addrs)} "
                          "-i addresses: give at most one per -i address, in the same order")


def announced_addr(ip_addrs: list[str], ext_ip_addrs: list[str], ip: str) -> str:
    """The address peers are told for served address ``ip``: its ``--ext_ip_addr``
    (paired with the ``-i`` addresses in order) or ``ip`` itself."""
    try:
        i = ip_addrs.index(ip)
    except ValueError:
        return ip
    return ext_ip_addrs[i] if i < len(ext_ip_addrs) else ip
