from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from curate.localserve import serve


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_routes(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"picture")
    hits: list[str] = []
    with serve(tmp_path, requests=hits) as base:
        assert base.startswith("http://127.0.0.1:") and base.endswith("/")
        assert get(base + "a.jpg") == (200, b"picture")
        assert get(base + "redirect/a.jpg") == (200, b"picture")
        assert get(base + "slow/0.1/a.jpg") == (200, b"picture")
        assert get(base + "status/503")[0] == 503
        assert get(base + "nothing.jpg")[0] == 404
        with pytest.raises(TimeoutError):
            get(base + "slow/2/a.jpg", timeout=0.5)
    assert hits == ["/a.jpg", "/redirect/a.jpg", "/a.jpg", "/slow/0.1/a.jpg", "/status/503", "/nothing.jpg",
                    "/slow/2/a.jpg"]


def test_port_is_freed_on_exit(tmp_path):
    with serve(tmp_path) as base:
        port = int(base.rstrip("/").rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", port)):  # free again once the block has left
        pass


def test_not_a_directory(tmp_path):
    with pytest.raises(NotADirectoryError, match="missing"):
        with serve(tmp_path / "missing"):
            pass
