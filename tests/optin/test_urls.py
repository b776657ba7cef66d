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
from pydantic import ValidationError

from curate.localserve import serve
from curate.optin import urls
from curate.optin.errors import UploadRefused
from curate.optin.options import IntakeLimits, SourceOptions

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
    "sixtofour.example.org": ["2002:7f00:1::"],  # 6to4 of 127.0.0.1
    "sixtofour-private.example.org": ["2002:c0a8:101::1"],  # 6to4 of 192.168.1.1
    "sitelocal.example.org": ["fec0::1"],
    "teredo.example.org": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
    "azure.example.org": ["168.63.129.16"],
    "gone.example.org": [],  # does not resolve
}


def table(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise AssertionError(f"the test resolver has no entry for {host}")
    return DNS[host]


def refusal(url: str, allow: list[str] = (), resolver=table) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        urls.check(url, allow, resolver)
    assert caught.value.code == "url_not_allowed"
    return caught.value


def refused(url: str, allow: list[str] = (), resolver=table) -> str:
    return str(refusal(url, allow, resolver))


def test_public_hosts_pass_with_every_address_vetted():
    target = urls.check("https://images.example.org/a/b.png?size=large", [], table)
    assert (target.host, target.port, target.path) == ("images.example.org", 443, "/a/b.png?size=large")
    assert len(target.addresses) == 2


@pytest.mark.parametrize("host, kind", [
    ("intranet.example.org", "private"), ("metadata.example.org", "link-local"),
    ("split.example.org", "private"), ("v6loop.example.org", "loopback"), ("mapped.example.org", "loopback"),
    ("nat64.example.org", "private"), ("cgnat.example.org", "not globally routable"),
    ("ula.example.org", "private"), ("linklocal6.example.org", "link-local"),
    ("sixtofour.example.org", "loopback"), ("sixtofour-private.example.org", "private"),
    ("sitelocal.example.org", "site-local"), ("teredo.example.org", "Teredo"), ("azure.example.org", "cloud service"),
])
def test_a_host_with_any_non_public_address_is_refused(host, kind):
    error = refusal(f"http://{host}/x.jpg")
    assert f"({kind})" in error.detail  # the operator's log says why
    told = str(error).replace(f"http://{host}/x.jpg", "URL")
    assert DNS[host][0].split("%")[0] not in told and kind not in told  # the submitter learns nothing


def test_a_refusal_reads_the_same_whether_a_host_is_private_or_does_not_resolve():
    """Otherwise the page would tell a stranger which internal names exist and where they point."""
    answers = {refused(f"http://{host}/x.jpg").replace(host, "HOST")
               for host in ("gone.example.org", "intranet.example.org", "metadata.example.org")}
    assert len(answers) == 1


@pytest.mark.parametrize("url", ["http://a..b.example.org/x.jpg", f"http://{'a' * 64}.example.org/x.jpg",
                                 "http://.example.org/x.jpg"])
def test_host_names_with_empty_or_over_long_labels_are_refused_not_an_error(url):
    # The real resolver: its IDNA encoder raises UnicodeError on these; no lookup is made.
    assert "not a valid host name" in refused(url, resolver=urls.resolve)


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


def test_an_allowed_host_opens_its_default_ports_or_the_one_scheme_and_port_named():
    assert urls.check("https://intranet.example.org/x.jpg", ["intranet.example.org"], table)
    for other_port in ("http://intranet.example.org:6379/", "https://intranet.example.org:8443/x.jpg"):
        refused(other_port, ["intranet.example.org"])  # e.g. its Redis, or an admin console
    allowed = ["http://intranet.example.org:8080"]
    assert urls.check("http://intranet.example.org:8080/x.jpg", allowed, table)
    refused("https://intranet.example.org:8080/x.jpg", allowed)
    refused("http://intranet.example.org/x.jpg", allowed)


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
    assert urls.fetch(f"{server}photo.jpg", [server.rstrip("/")], 10**6, 5) == picture(11)


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
    allowed = [server.rstrip("/"), redirector.rstrip("/")]
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{redirector}to?{quote(f'http://localhost:{port}/photo.jpg')}", allowed, 10**6, 5)
    assert caught.value.code == "url_not_allowed" and "localhost" in str(caught.value)
    assert urls.fetch(f"{redirector}to?{quote(f'{server}photo.jpg')}", allowed, 10**6, 5) == picture(11)


def test_fetch_reads_at_most_the_limit_and_reports_http_errors(server):
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{server}big.bin", [server.rstrip("/")], 4999, 5)
    assert caught.value.code == "too_large"
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{server}status/404", [server.rstrip("/")], 10**6, 5)
    assert caught.value.code == "url_fetch_failed" and "404" in str(caught.value)


def test_a_fetch_has_a_total_deadline_not_one_per_read(trickler):
    base, _ = trickler
    with pytest.raises(UploadRefused) as caught:
        urls.fetch(f"{base}/slow.jpg", [base], 10**6, 1.0)  # each 0.2 s read is well under 1 s
    assert caught.value.code == "url_fetch_failed" and "more than 1.0 s" in caught.value.detail
    assert "127.0.0.1" not in str(caught.value).replace(base, "")  # no connection detail for the submitter


def test_allow_hosts_and_the_public_origin_are_checked_when_options_load():
    options = SourceOptions(allow_hosts=["Images.Intranet.", "HTTP://Images.Intranet:8080", "[fd00::1]"],
                            intake=IntakeLimits(public_origin="https://Optin.Example.org/"))
    assert options.allow_hosts == ["images.intranet", "http://images.intranet:8080", "fd00::1"]
    assert urls.check("http://[fd00::1]/x.jpg", options.allow_hosts, lambda host, port: ["fd00::1"])
    assert options.intake.public_origin == "https://optin.example.org"
    for entry in ("http://images.intranet/path", "ftp://images.intranet", "images.intranet:8080",
                  "http://user@images.intranet", ""):
        with pytest.raises(ValidationError, match="neither a host name"):
            SourceOptions(allow_hosts=[entry])
    with pytest.raises(ValidationError, match="not an origin"):
        IntakeLimits(public_origin="optin.example.org")
