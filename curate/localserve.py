"""A loopback HTTP server for tests and the offline demo.

Serves the files of a directory on 127.0.0.1, plus routes that misbehave on request:

- ``/status/<code>``: answers that HTTP status;
- ``/redirect/<path>``: answers 302 to ``/<path>`` (to ``<path>`` itself when it is a URL);
- ``/slow/<seconds>/<path>``: sleeps (at most ``MAX_SLEEP_S``), then serves ``<path>``;
- ``/noai/<path>``: serves ``<path>`` with ``X-Robots-Tag: noai`` (a site opting out);
- ``/tdm/<path>``: serves ``<path>`` with ``tdm-reservation: 1`` and a ``tdm-policy`` pointing at
  ``/tdm-policy.json`` (a rights holder reserving text and data mining, W3C TDMRep).

Broken files (HTML saved as .jpg, truncated images), ``robots.txt`` and
``.well-known/tdmrep.json`` are just files the caller writes into the directory.
"""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

MAX_SLEEP_S = 30.0


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, requests: list[str] | None, **kwargs) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self._requests is not None:
            self._requests.append(self.path)
        route, _, rest = self.path.lstrip("/").partition("/")
        if route == "status":
            self._status(rest)
        elif route == "redirect":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", rest if "://" in rest else "/" + rest)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "noai":
            self._extra_headers = {"X-Robots-Tag": "noai"}
            self.path = "/" + rest
            super().do_GET()
        elif route == "tdm":
            host, port = self.server.server_address[:2]
            self._extra_headers = {"tdm-reservation": "1", "tdm-policy": f"http://{host}:{port}/tdm-policy.json"}
            self.path = "/" + rest
            super().do_GET()
        elif route == "slow":
            seconds, _, path = rest.partition("/")
            time.sleep(min(float(seconds), MAX_SLEEP_S))
            self.path = "/" + path
            super().do_GET()
        else:
            super().do_GET()

    _extra_headers: dict[str, str] = {}

    def end_headers(self) -> None:
        for name, value in self._extra_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def _status(self, code: str) -> None:
        try:
            self.send_error(int(code))
        except ValueError:
            self.send_error(HTTPStatus.BAD_REQUEST, f"/status/ wants an integer code, got {code!r}")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature of the base class)
        pass  # tests and the demo would drown in access lines


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that timed out on /slow/ has hung up before the answer: expected, not news.
        pass


@contextmanager
def serve(directory: Path, port: int = 0, requests: list[str] | None = None) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 while the block runs; yields the base url.

    ``port=0`` picks a free port. When ``requests`` is given, the path of every GET is
    appended to it (tests count fetches with it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"localserve: {directory} is not a directory")
    handler = functools.partial(_Handler, directory=str(directory), requests=requests)
    server = _Server(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="localserve", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
