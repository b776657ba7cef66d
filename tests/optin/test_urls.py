"""URL submissions: the decision on every resolved address, and a fetch only from loopback.

No test sends anything to a private range: decisions use a resolver table, and the one
real fetch goes to a server on 127.0.0.1 that the test allows by name.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from curate.localserve import serve
from curate.optin import urls
from curate.optin.errors import UploadRefused

from .conftest import picture

DNS = {
    "images.example.org": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "intranet.example.org": ["10.1.2.3"],
    "metadata.example.org": ["169.254.169.254"],
    "split.example.org": ["93.184.216.34", "192.168.1.10"],  # one public, one private answer
    "v6loop.example.org": ["::1"],
    "mapped.example.org": ["::ffff:127.0.0.1"],
    "nat64.example.org": ["64:ff9b::a00:1"],  # a NAT64 gateway would forward this to 10.0.0.1
    "cgnat.example.org": ["100.64.0.7"],
    "ula.example.org": ["fd00::1"],
    "linklocal6.example.org": ["fe80::1%eth0"],
}


def table(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise AssertionError(f"the test resolver has no entry for {host}")
    return DNS[host]


def refused(url: str, allow: list[str] = (), resolver=table) -> str:
    with pytest.raises(UploadRefused) as caught:
        urls.check(url, allow, resolver)
    assert caught.value.code == "url_not_allowed"
    return str(caught.value)


def test_public_hosts_pass_with_every_address_vetted():
    target = urls.check("https://images.example.org/a/b.png?size=large", [], table)
    assert (target.host, target.port, target.path) == ("images.example.org", 443, "/a/b.png?size=large")
    assert len(target.addresses) == 2


@pytest.mark.parametrize("host, kind", [
    ("intranet.example.org", "private"), ("metadata.example.org", "link-local"),
    ("split.example.org", "private"), ("v6loop.example.org", "loopback"), ("mapped.example.org", "loopback"),
    ("nat64.example.org", "private"), ("cgnat.example.org", "not globally routable"),
    ("ula.example.org", "private"), ("linklocal6.example.org", "link-local"),
])
def test_a_host_with_any_non_public_address_is_refused(host, kind):
    assert f"({kind})" in refused(f"http://{host}/x.jpg")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://localhost:8080/x.jpg", "http://[::1]/x.jpg", "http://10.0.0.8/x.jpg",
    "http://169.254.169.254/latest/meta-data/", "http://2130706433/x.jpg", "http://0.0.0.0/x.jpg",
])
def test_literal_and_local_names_are_refused_with_the_real_resolver(url):
    # Numeric hosts and localhost resolve without DNS (inet_aton, /etc/hosts): no packet leaves.
    assert "a pipeline can allow a host by name" in refused(url, resolver=urls.resolve)


def test_a_pipeline_allows_a_private_host_by_name_only():
    assert urls.check("http://intranet.example.org/x.jpg", ["Intranet.Example.org."], table).addresses
    refused("http://metadata.example.org/x.jpg", ["intranet.example.org"])
    # Allowing the name does not allow its address under another name.
    refused("http://10.1.2.3/x.jpg", ["intranet.example.org"], urls.resolve)


@pytest.mark.parametrize("url, why", [
    ("file:///etc/passwd", "only http and https"), ("ftp://images.example.org/x.jpg", "only http and https"),
    ("http://user:secret@images.example.org/x.jpg", "credentials"), ("http:///x.jpg", "no host"),
    ("http://images.example.org:99999/x.jpg", "Port"),
])
def test_other_schemes_credentials_and_broken_urls_are_refused(url, why):
    assert why in refused(url)


@pytest.fixture
def server(tmp_path: Path):
    (tmp_path / "photo.jpg").write_bytes(picture(11))
    (tmp_path / "big.bin").write_bytes(b"\0" * 5000)
    with serve(tmp_path) as base:
        yield base


def test_fetch_from_an_allowlisted_loopback_server(server):
    assert urls.fetch(f"{server}photo.jpg", ["127.0.0.1"], 10**6, 5) == picture(11)


def test_fetch_refuses_loopback_unless_allowed(server):
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{server}photo.jpg", [], 10**6, 5)
    assert caught.value.code == "url_not_allowed"


class _Redirector(BaseHTTPRequestHandler):
    """Answers /to?<url> with a redirect to that (absolute) url."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(302)
        self.send_header("Location", unquote(urlsplit(self.path).query))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def redirector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_each_redirect_is_checked_again(server, redirector):
    port = server.rsplit(":", 1)[1].rstrip("/")
    # The allowed host redirects to the same file under "localhost", which is not allowed.
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{redirector}to?{quote(f'http://localhost:{port}/photo.jpg')}", ["127.0.0.1"], 10**6, 5)
    assert caught.value.code == "url_not_allowed" and "localhost" in str(caught.value)
    assert urls.fetch(f"{redirector}to?{quote(f'{server}photo.jpg')}", ["127.0.0.1"], 10**6, 5) == picture(11)


def test_fetch_reads_at_most_the_limit_and_reports_http_errors(server):
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{server}big.bin", ["127.0.0.1"], 4999, 5)
    assert caught.value.code == "too_large"
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{server}status/404", ["127.0.0.1"], 10**6, 5)
    assert caught.value.code == "url_fetch_failed" and "404" in str(caught.value)
