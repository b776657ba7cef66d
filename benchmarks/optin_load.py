"""The intake under attack: honest contributors' upload latency with and without hostile clients.

Each phase starts its own ``cleanroom optin serve``-style server (``curate.optin.server``, in a
subprocess, so the clients do not share its interpreter) on a fresh store, on loopback. N honest
contributors (each from its own 127.0.0.x address: the per-client limits count per address)
register, consent and upload K small JPEGs one after another; every upload's time to its 303
is measured. In the hostile phase M attackers of each kind run from the start until the honest
clients are done:

- trickle: connections sending their headers one byte every 0.5 s, reopened when cut;
- slow body: form posts whose body trickles in;
- register: a registration flood;
- bombs: a contributor uploading decompression bombs (claimed 100k x 100k pixels) and images at
  the pixel limit, as fast as the server answers;
- slow URL: URL submissions to an image server that sends one byte every 0.5 s.

Prints the honest p50/p99 and error count of both phases and their ratio; exits 1 unless every
honest upload succeeded in both phases and the hostile p99 is under 5x the quiet one. It stops by
itself: the attackers stop with the honest clients, and ``--max-seconds`` bounds each phase. Run::

    python benchmarks/optin_load.py [--honest 4] [--uploads 25] [--hostile 2]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx2
import numpy as np
from PIL import Image

# Tight enough that a few attackers reach every limit within one phase, loose enough for honest use.
LIMITS = {"limits": {"max_bytes": 4 * 2**20, "max_pixels": 16_000_000},
          "fetch_timeout_s": 3,
          "intake": {"max_fetches": 2, "decode_pixel_budget": 20_000_000, "decode_wait_s": 20,
                     "uploads_per_hour": 100, "client_uploads_per_hour": 40, "registrations_per_hour": 3,
                     "signins_per_hour": 10, "header_timeout_s": 5, "body_timeout_s": 5, "max_connections": 400}}


def serve(store: str, port: int, options: str) -> None:
    """The server process: the app as ``cleanroom optin serve`` runs it."""
    import uvicorn

    from curate.optin import server
    from curate.optin.options import SourceOptions
    from curate.optin.store import Store
    from curate.optin.web import create_app

    parsed = SourceOptions.model_validate(json.loads(options))
    app = create_app(Store(Path(store), create=True), parsed, secure_cookies=False)
    uvicorn.Server(server.config(app, parsed.intake, port=port, log_level="error")).run()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, options: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(store), str(port), json.dumps(options)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(base + "/", timeout=1)
            return process, base
        except httpx2.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the intake server did not start") from None
            time.sleep(0.1)


def jpeg(seed: int, width: int = 320, height: int = 240) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, "JPEG")
    return buffer.getvalue()


def flat_png(width: int, height: int) -> bytes:
    """A PNG of one colour: a few kB that decode to ``width * height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A PNG whose header claims side x side pixels (refused from the header, never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


class Browser:
    """One client with its own cookies, connecting from its own loopback address."""

    def __init__(self, base: str, address: str, timeout: float = 60):
        transport = httpx2.HTTPTransport(local_address=address)
        self.http = httpx2.Client(base_url=base, transport=transport, follow_redirects=False, timeout=timeout)

    def csrf(self, path: str = "/") -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', self.http.get(path).text)
        if found is None:
            raise RuntimeError(f"no form on {path}")
        return found.group(1)

    def post(self, path: str, form: dict, page: str = "/", **kwargs) -> httpx2.Response:
        return self.http.post(path, data={"csrf": self.csrf(page), **form}, **kwargs)

    def join(self, name: str) -> None:
        answer = self.post("/register", {"display_name": name, "contact": f"{name}@example.org"})
        if answer.status_code != 200:
            raise RuntimeError(f"registration answered {answer.status_code}")
        answer = self.post("/consent", {"version": "consent-v1", "training": "on", "agree": "on"}, "/consent")
        if answer.status_code != 303:
            raise RuntimeError(f"consent answered {answer.status_code}")

    def upload(self, data: bytes = b"", url: str = "") -> httpx2.Response:
        files = {"image": ("image.jpg", data, "image/jpeg")} if data else None
        return self.post("/upload", {"url": url} if url else {}, "/me", files=files)


def honest(base: str, index: int, uploads: int, times: list[float], errors: list[str]) -> None:
    try:
        browser = Browser(base, f"127.0.0.{10 + index}")
        browser.join(f"honest{index}")
        for i in range(uploads):
            data = jpeg(1000 * index + i)
            csrf = browser.csrf("/me")
            started = time.perf_counter()
            answer = browser.http.post("/upload", data={"csrf": csrf}, files={"image": ("a.jpg", data, "image/jpeg")})
            times.append(time.perf_counter() - started)
            if answer.status_code != 303:
                errors.append(f"honest {index}: upload {i} answered {answer.status_code}")
    except (httpx2.HTTPError, RuntimeError) as e:
        errors.append(f"honest {index}: {type(e).__name__}: {e}")


ANSWERS: Counter[str] = Counter()  # what the attackers got, by attack and status


def until(stop: threading.Event, attack: Callable[[], None]) -> None:
    """Repeat one attack until told to stop; an attack failing (cut off, refused) just starts again."""
    while not stop.is_set():
        try:
            attack()
        except (httpx2.HTTPError, OSError, RuntimeError) as e:
            ANSWERS[f"attack failed: {type(e).__name__}"] += 1
            time.sleep(0.05)


def trickle(port: int, address: str, head: bytes, stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port), source_address=(address, 0)) as sock:
        for byte in head:
            if stop.wait(0.5):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                ANSWERS["trickle: cut off by the server"] += 1
                return
        ANSWERS["trickle: sent in full"] += 1


def attackers(base: str, trickler_url: str, count: int, stop: threading.Event) -> list[threading.Thread]:
    port = int(base.rsplit(":", 1)[1])
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    body = b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 200
    bombs = [bomb_png(), flat_png(4000, 4000)]
    plans: list[Callable[[], None]] = []
    for j in range(count):
        address = f"127.0.0.{100 + j}"
        for k in range(10):  # ten trickling connections per attacker, half of them in the headers
            plans.append(lambda a=f"127.0.0.{150 + j}", t=head if k % 2 else body: trickle(port, a, t, stop))
        flooder = Browser(base, f"127.0.0.{120 + j}", timeout=10)
        plans.append(lambda f=flooder, j=j: flood(f, j))
        bomber = Browser(base, address, timeout=30)
        plans.append(lambda b=bomber, j=j: bombard(b, j, bombs))
        fetcher = Browser(base, f"127.0.0.{130 + j}", timeout=30)
        plans.append(lambda f=fetcher, j=j: slow_url(f, j, trickler_url))
    return [threading.Thread(target=until, args=(stop, plan), daemon=True) for plan in plans]


def flood(browser: Browser, j: int) -> None:
    browser.http.cookies.delete("optin_session")  # a stranger again, so the form is there
    answer = browser.post("/register", {"display_name": f"flood{j}", "contact": f"flood{j}@example.org"})
    ANSWERS[f"register flood: {answer.status_code}"] += 1


def bombard(browser: Browser, j: int, bombs: list[bytes]) -> None:
    if "optin_session" not in browser.http.cookies:
        browser.join(f"bomber{j}")
    for data in bombs:
        ANSWERS[f"bomb upload: {browser.upload(data).status_code}"] += 1


def slow_url(browser: Browser, j: int, url: str) -> None:
    if "optin_session" not in browser.http.cookies:
        browser.join(f"fetcher{j}")
    ANSWERS[f"slow URL: {browser.upload(url=f'{url}/{time.monotonic_ns()}.jpg').status_code}"] += 1


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(60):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


def phase(hostile: int, honest_count: int, uploads: int, max_seconds: float) -> dict:
    slow = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    trickler_url = f"http://127.0.0.1:{slow.server_address[1]}"
    options = {**LIMITS, "allow_hosts": [trickler_url]}
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(Path(tmp) / "optin", options)
        stop = threading.Event()
        try:
            threads = attackers(base, trickler_url, hostile, stop) if hostile else []
            for thread in threads:
                thread.start()
            time.sleep(2 if hostile else 0)  # let the attacks get going
            times: list[float] = []
            errors: list[str] = []
            clients = [threading.Thread(target=honest, args=(base, i, uploads, times, errors), daemon=True)
                       for i in range(honest_count)]
            started = time.monotonic()
            for client in clients:
                client.start()
            for client in clients:
                client.join(max(0.0, max_seconds - (time.monotonic() - started)))
            if any(client.is_alive() for client in clients):
                errors.append(f"honest clients still busy after {max_seconds} s")
        finally:
            stop.set()
            process.terminate()
            process.wait(30)
            slow.shutdown()
            slow.server_close()
    done = np.array(times) if times else np.array([float("nan")])
    return {"uploads": len(times), "errors": errors, "p50_s": float(np.percentile(done, 50)),
            "p99_s": float(np.percentile(done, 99))}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--honest", type=int, default=4, help="honest contributors (N)")
    parser.add_argument("--uploads", type=int, default=25, help="uploads per honest contributor (K)")
    parser.add_argument("--hostile", type=int, default=2, help="attackers of each kind (M)")
    parser.add_argument("--max-seconds", type=float, default=240, help="bound on each phase's honest clients")
    args = parser.parse_args()
    quiet = phase(0, args.honest, args.uploads, args.max_seconds)
    loud = phase(args.hostile, args.honest, args.uploads, args.max_seconds)
    print(f"{'phase':<10}{'uploads':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name, result in (("quiet", quiet), ("hostile", loud)):
        print(f"{name:<10}{result['uploads']:>8}{len(result['errors']):>8}{result['p50_s'] * 1000:>9.1f}"
              f"{result['p99_s'] * 1000:>9.1f}")
    ratio_p50, ratio_p99 = loud["p50_s"] / quiet["p50_s"], loud["p99_s"] / quiet["p99_s"]
    print(f"hostile / quiet: p50 {ratio_p50:.2f}x, p99 {ratio_p99:.2f}x (goal: p99 under 5x, no honest error)")
    for error in quiet["errors"] + loud["errors"]:
        print("  error:", error)
    print("what the attackers got:", ", ".join(f"{what} x{n}" for what, n in sorted(ANSWERS.items())))
    ok = not quiet["errors"] and not loud["errors"] and ratio_p99 < 5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
