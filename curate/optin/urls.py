"""URL submissions: may this URL be fetched, and the fetch itself.

``check`` is the decision: http(s) only, no credentials in the URL, and every address the
host resolves to must be public, unless the pipeline allows the host by name. Every
address, because a name with one public and one private address would otherwise be
fetched from whichever the connection happens to pick. ``fetch`` connects to an address
``check`` vetted (never resolving the name again, so a DNS answer that changes between
check and connect cannot redirect it), checks every redirect the same way, and reads at
most ``max_bytes``.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

from curate.optin.errors import UploadRefused
from curate.optin.options import normalize_host

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 3
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # a NAT64 gateway forwards these to the embedded IPv4


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[Address, ...]


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UploadRefused("url_not_allowed", f"{host} does not resolve: {e.strerror}") from None
    return [info[4][0] for info in infos]


def _not_public(address: Address) -> str | None:
    """Why an address is not a public one (private, loopback, link-local, ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


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
    addresses = tuple(ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port))
    if not addresses:
        raise refuse(f"{host} resolves to no address")
    if host not in {normalize_host(h) for h in allow_hosts}:
        for address in addresses:
            why = _not_public(address)
            if why:
                raise refuse(f"{host} resolves to {address} ({why}); a pipeline can allow a host by name "
                             "in the opt-in source's options.allow_hosts")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, path=path, addresses=addresses)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a vetted address; the Host header still names the host."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = str(target.addresses[0])

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = str(target.addresses[0])

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        # The certificate is checked against the host name, not the address we dialled.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(url: str, allow_hosts: Iterable[str], max_bytes: int, timeout: float,
          resolver: Resolver = resolve) -> bytes:
    """The body of ``url`` (at most ``max_bytes``), following up to MAX_REDIRECTS checked redirects."""
    allow_hosts = list(allow_hosts)
    for _ in range(MAX_REDIRECTS + 1):
        target = check(url, allow_hosts, resolver)
        connection = (_PinnedHTTPS if target.scheme == "https" else _PinnedHTTP)(target, timeout)
        try:
            connection.request("GET", target.path, headers={"User-Agent": "cleanroom-optin"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise UploadRefused("url_fetch_failed", f"URL {target.url!r} answered HTTP {response.status}")
            data = response.read(max_bytes + 1)
        except (OSError, http.client.HTTPException) as e:
            raise UploadRefused("url_fetch_failed", f"URL {target.url!r} could not be fetched: {e}") from None
        finally:
            connection.close()
        if len(data) > max_bytes:
            raise UploadRefused("too_large", f"URL {target.url!r} sends more than {max_bytes} bytes")
        return data
    raise UploadRefused("url_fetch_failed", f"URL {url!r}: more than {MAX_REDIRECTS} redirects")
