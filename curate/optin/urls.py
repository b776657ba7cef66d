"""URL submissions: may this URL be fetched, and the fetch itself.

``check`` is the decision: http(s) only, no credentials in the URL, and every address the
host resolves to must be public, unless the pipeline allows the host by name (and, when the
entry says so, that scheme and port only). Every address, because a name with one public
and one private address would otherwise be fetched from whichever the connection happens
to pick. Addresses that carry another address inside (IPv4-mapped, NAT64, 6to4) are judged
by the address they carry; Teredo, site-local and known cloud service addresses are never
public. ``fetch`` connects to an address ``check`` vetted (never resolving the name again,
so a DNS answer that changes between check and connect cannot redirect it), checks every
redirect the same way, reads at most ``max_bytes``, and gives up when its total deadline
passes (a server trickling one byte at a time cannot hold a fetch longer).

A refusal says the same to the submitter whether a host does not resolve, resolves to a
private address or refused the connection: otherwise the page would be an oracle for the
operator's internal DNS and network. What happened is in the refusal's ``detail``, logged.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

from curate.optin.errors import UploadRefused
from curate.optin.options import allowed_origin, normalize_host, origin_key

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 3
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # a NAT64 gateway forwards these to the embedded IPv4
_TEREDO = ipaddress.ip_network("2001::/32")  # tunnels to any IPv4 host, private ones included
# Cloud services answering on addresses that look public: Azure's wire server and DNS. (AWS, GCP
# and others use 169.254.169.254 or fd00:ec2::254, already refused as link-local and private.)
_CLOUD_SERVICES = (ipaddress.ip_network("168.63.129.16/32"),)
_NOT_PUBLIC = "it is not a host this server fetches from (a pipeline can allow a host by name in the " \
              "opt-in source's options.allow_hosts)"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[Address, ...]


def resolve(host: str, port: int) -> list[str]:
    """Every address of ``host``; [] when it does not resolve (``check`` refuses that)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [info[4][0] for info in infos]


def _embedded(address: Address) -> Address:
    """The IPv4 address an IPv6 address stands for, where a gateway or tunnel would reach it."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour:
            return address.sixtofour
    return address


def not_public(address: Address) -> str | None:
    """Why an address is not a public one (private, loopback, link-local, ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _TEREDO:
            return "Teredo"
        if address.is_site_local:
            return "site-local"
    address = _embedded(address)
    if any(address in network for network in _CLOUD_SERVICES):
        return "cloud service"
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


def _valid_name(host: str) -> bool:
    """A host name DNS could hold: IDNA-encodable, labels of 1..63 characters (no empty label)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return False
    return len(encoded) <= 253 and all(0 < len(label) <= 63 for label in encoded.split(b"."))


def _allowed(allow_hosts: Iterable[str], scheme: str, host: str, port: int) -> bool:
    """A bare host entry allows http and https on their default ports; a scheme://host:port entry that only."""
    allowed = {allowed_origin(entry) for entry in allow_hosts}
    default_port = port == (443 if scheme == "https" else 80)
    return origin_key(scheme, host, port) in allowed or (default_port and host in allowed)


def check(url: str, allow_hosts: Iterable[str], resolver: Resolver = resolve) -> Target:
    """The vetted target of ``url``, or UploadRefused('url_not_allowed')."""
    def refuse(why: str) -> UploadRefused:
        return UploadRefused("url_not_allowed", f"URL {url!r} refused: {why}")

    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise refuse(str(e)) from None
    if parts.scheme not in ("http", "https"):
        raise refuse("only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in a URL are not accepted")
    if not parts.hostname:
        raise refuse("no host")
    host = normalize_host(parts.hostname)
    if not _valid_name(host):
        raise refuse(f"{host!r} is not a valid host name")
    addresses = tuple(ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port))
    if not addresses:
        raise UploadRefused("url_not_allowed", f"URL {url!r} refused: {_NOT_PUBLIC}", f"{host} does not resolve")
    if not _allowed(allow_hosts, parts.scheme, host, port):
        for address in addresses:
            why = not_public(address)
            if why:
                raise UploadRefused("url_not_allowed", f"URL {url!r} refused: {_NOT_PUBLIC}",
                                    f"{host} resolves to {address} ({why})")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, path=path, addresses=addresses)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a vetted address; the Host header still names the host."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = str(target.addresses[0])
        self.dialled: socket.socket | None = None  # kept: http.client drops ``sock`` once a response owns it

    def connect(self) -> None:
        self.sock = self.dialled = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = str(target.addresses[0])
        self.dialled: socket.socket | None = None

    def connect(self) -> None:
        sock = self.dialled = socket.create_connection((self.address, self.port), self.timeout)
        # The certificate is checked against the host name, not the address we dialled.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _cut(connection: _PinnedHTTP | _PinnedHTTPS) -> None:
    """At the deadline: end any blocked read or write of the connection (a socket timeout is per
    read, so a one-byte trickle would never trigger it)."""
    if connection.dialled is not None:
        try:
            connection.dialled.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already


def fetch(url: str, allow_hosts: Iterable[str], max_bytes: int, timeout: float,
          resolver: Resolver = resolve) -> bytes:
    """The body of ``url`` (at most ``max_bytes``), following up to MAX_REDIRECTS checked redirects,
    all within ``timeout`` seconds in total."""
    allow_hosts = list(allow_hosts)
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = check(url, allow_hosts, resolver)
        location, data = _get(target, max_bytes, deadline, timeout)
        if location is None:
            return data
        url = urljoin(url, location)
    raise UploadRefused("url_fetch_failed", f"URL {url!r}: more than {MAX_REDIRECTS} redirects")


def _get(target: Target, max_bytes: int, deadline: float, timeout: float) -> tuple[str | None, bytes]:
    """One request: (redirect location, b"") or (None, body)."""
    def failed(detail: str) -> UploadRefused:
        return UploadRefused("url_fetch_failed", f"URL {target.url!r} could not be fetched", detail)

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise failed(f"the fetch took more than {timeout} s")
    connection = (_PinnedHTTPS if target.scheme == "https" else _PinnedHTTP)(target, remaining)
    watchdog = threading.Timer(remaining, _cut, [connection])
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("GET", target.path, headers={"User-Agent": "cleanroom-optin"})
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            return response.getheader("Location"), b""
        if response.status != 200:
            raise UploadRefused("url_fetch_failed", f"URL {target.url!r} answered HTTP {response.status}")
        data = _body(response, max_bytes)
    except (OSError, http.client.HTTPException) as e:
        late = time.monotonic() >= deadline
        raise failed(f"the fetch took more than {timeout} s" if late else f"{type(e).__name__}: {e}") from None
    finally:
        watchdog.cancel()
        connection.close()
        if connection.dialled is not None:
            connection.dialled.close()
    if time.monotonic() >= deadline:  # the watchdog cut the body short: a clean EOF, not an error
        raise failed(f"the fetch took more than {timeout} s")
    if len(data) > max_bytes:
        raise UploadRefused("too_large", f"URL {target.url!r} sends more than {max_bytes} bytes")
    return None, data


def _body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of the body, in the pieces the socket delivers."""
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = response.read1(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
