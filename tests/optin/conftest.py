"""Shared set-up for the opt-in tests: a store, contributors with consent, images made here, the
intake app served on loopback."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import uvicorn
from PIL import Image

from curate.optin import consent, server
from curate.optin.consent import Scope
from curate.optin.options import SourceOptions
from curate.optin.store import Contributor, Store
from curate.optin.web import create_app


def picture(seed: int, width: int = 64, height: int = 48, fmt: str = "JPEG", **save: object) -> bytes:
    """Smooth random colours: distinct per seed."""
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "optin", create=True)


def contributor(store: Store, name: str, contact: str, credit: bool = True,
                model_release: bool = True) -> Contributor:
    """A web contributor who accepted the current consent text."""
    person, _ = store.register(name, contact, "web", with_token=True)
    store.add_consent(person.contributor_id, consent.current(),
                      Scope(training=True, model_release=model_release, credit=credit), {"channel": "test"})
    return person


@contextmanager
def live_server(store: Store, options: SourceOptions | None = None, runs: list[Path] = (),
                secure_cookies: bool = False) -> Iterator[str]:
    """The intake app under uvicorn on a free loopback port, configured as ``cleanroom optin serve``
    runs it (deadlines, connection limit); yields its base URL."""
    options = options or SourceOptions()
    app = create_app(store, options, runs=runs, secure_cookies=secure_cookies)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server_ = uvicorn.Server(server.config(app, options.intake, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server_.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server_.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server_.should_exit = True
        thread.join(10)
        sock.close()


class _Trickle(BaseHTTPRequestHandler):
    """An image server that sends its headers, then one body byte every ``every_s`` (0.2 s): each read
    returns in time, the whole never ends. Its server's ``requests`` counts the requests that reached it."""

    every_s = 0.2

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.release()
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(self.every_s)
        except OSError:
            pass  # the fetch gave up and hung up

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def trickler() -> Iterator[tuple[str, threading.Semaphore]]:
    """(base URL of a trickling image server on loopback, a semaphore released once per request)."""
    server_ = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server_.daemon_threads = True
    server_.requests = threading.Semaphore(0)
    threading.Thread(target=server_.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server_.server_address[1]}", server_.requests
    server_.shutdown()
    server_.server_close()
