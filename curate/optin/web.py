"""The intake web page: register, accept the consent text, upload, see submissions, revoke.

Server-rendered forms on FastAPI (no JavaScript), served by uvicorn. Choices:

- Sign-in: registration shows a random token once, and the store keeps only its hash. No
  passwords to reuse or leak, no e-mail round trip (this app sends no mail), and a token can
  be typed in again elsewhere. The browser holds a session cookie (HttpOnly, SameSite=Strict,
  ``__Host-`` prefixed when Secure), deleted from the store on sign-out.
- CSRF: every form carries a token that is an HMAC of a random per-browser cookie under
  a store key, checked on every POST, together with the Origin header (scheme, host and
  port) when the browser sends one; SameSite=Strict cookies alone would leave older browsers
  open. With ``intake.public_origin`` set, a request naming another Host is refused.
- Untrusted bodies: a request body above the upload limit (plus room for the form fields)
  is refused with 413 before it is parsed, forms hold one file and few, short fields; the
  image then goes through ``safety.clean`` (decodes share a pixel budget), URL submissions
  through ``urls.fetch`` (at most ``intake.max_fetches`` at once; the next answers 503 at once,
  so slow servers cannot take every worker thread).
- Rate limits (``RateLimits``): uploads per contributor and per client address, registrations
  and sign-ins per client address, each per hour; a spent limit answers 429 with Retry-After.
- Every answer, errors included, carries the security headers; no handler error reaches the
  client as a 500 with a trace.
- A revocation on the page is applied at once to the run folders the server was given, and
  finishes any revocation of those runs that an earlier failure cut short.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from curate.optin import consent as consent_texts
from curate.optin import revoke as revocation
from curate.optin import submit
from curate.optin.consent import Scope
from curate.optin.errors import Busy, OptinError, TooMany, UploadRefused
from curate.optin.options import SourceOptions
from curate.optin.safety import PixelBudget
from curate.optin.store import ACTIVE, SESSION_DAYS, Contributor, Store, clean_text

log = logging.getLogger("cleanroom.optin.web")

SESSION_COOKIE = "optin_session"
CSRF_COOKIE = "optin_csrf"
# Browsers accept a __Host- cookie only with Secure, Path=/ and no Domain: it cannot be set by
# a sibling subdomain or over plain http. Plain names only for http test servers.
HOST_PREFIX = "__Host-"
HOUR_S = 3600
FORM_OVERHEAD = 64 * 1024  # multipart framing and the text fields around one image
_TEMPLATES = Path(__file__).resolve().parent / "templates"
# The status a refused upload answers with, by UploadRefused code.
_STATUS = {"too_large": 413, "not_an_image": 415, "animated": 415, "decode_error": 415, "too_many_pixels": 413,
           "duplicate": 409, "no_consent": 403, "url_not_allowed": 400, "url_fetch_failed": 502}
_CHECKED = "on"  # what a ticked checkbox without a value attribute sends
_CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
_STYLE = """body{font-family:sans-serif;max-width:48rem;margin:1rem auto;padding:0 1rem;line-height:1.4}
label{display:block;margin:.5rem 0}input:not([type=checkbox]),textarea{display:block;width:100%}
.error{color:#a00}.notice{color:#060}.inline{display:inline}pre.consent{white-space:pre-wrap;background:#f4f4f4;
padding:1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem}"""


_HEADERS = [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
            # Not no-referrer: with it, browsers send "Origin: null" on our own form posts, and the
            # origin check needs the origin.
            (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-store")]


class SecurityHeaders:
    """Outermost layer: every answer gets the headers, FastAPI's own 413 and 500 among them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class HostCheck:
    """Refuse requests whose Host is not the configured public origin's (DNS rebinding, cache poisoning)."""

    def __init__(self, app: ASGIApp, public_origin: str | None):
        self.app = app
        self.host = urlsplit(public_origin).netloc.encode() if public_origin else None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if self.host is None or scope["type"] != "http":
            return await self.app(scope, receive, send)
        hosts = [value.lower() for name, value in scope["headers"] if name == b"host"]
        if hosts == [self.host]:
            return await self.app(scope, receive, send)
        await Response("unknown host", status_code=400, media_type="text/plain")(scope, receive, send)


class RateLimits:
    """Sliding one-hour windows of events per (action, key), in this process's memory."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()
        self._taken = 0

    def take(self, action: str, key: str, per_hour: int, what: str) -> None:
        """Count one event, or raise TooMany when ``per_hour`` were counted in the last hour."""
        now = time.monotonic()
        with self._lock:
            self._taken += 1
            if self._taken % 4096 == 0:
                self._forget(now)
            events = self._events.setdefault((action, key), deque())
            while events and events[0] <= now - HOUR_S:
                events.popleft()
            if len(events) >= per_hour:
                wait = math.ceil(events[0] + HOUR_S - now)
                raise TooMany(f"too many {what} in the last hour (at most {per_hour}); try again in "
                              f"{math.ceil(wait / 60)} minutes", wait)
            events.append(now)

    def _forget(self, now: float) -> None:
        """Drop keys with no event in the last hour, so a flood of one-off keys cannot grow the table."""
        for key in [k for k, events in self._events.items() if not events or events[-1] <= now - HOUR_S]:
            del self._events[key]


class Intake:
    """The app's state and helpers: store, options, runs, cookies, templates, limits."""

    def __init__(self, store: Store, options: SourceOptions, runs: Sequence[Path], secure_cookies: bool):
        self.store, self.options, self.runs, self.secure_cookies = store, options, list(runs), secure_cookies
        self.templates = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))
        limits = options.intake
        self.limits = RateLimits()
        self.fetches = threading.BoundedSemaphore(limits.max_fetches)
        self.pixels = PixelBudget(limits.decode_pixel_budget, limits.decode_wait_s)
        prefix = HOST_PREFIX if secure_cookies else ""
        self.session_cookie, self.csrf_cookie = prefix + SESSION_COOKIE, prefix + CSRF_COOKIE

    def session(self, request: Request) -> str | None:
        return request.cookies.get(self.session_cookie)

    def contributor(self, request: Request) -> Contributor | None:
        session = self.session(request)
        return self.store.contributor_by_session(session) if session else None

    def client(self, request: Request) -> str:
        """The client's address as a keyed hash: the key of its rate limits."""
        return self.store.keyed_hash("ip", request.client.host if request.client else "")

    def _nonce(self, request: Request) -> str | None:
        nonce = request.cookies.get(self.csrf_cookie)
        return nonce if nonce and len(nonce) == 43 else None

    def origin(self, request: Request) -> str:
        """The origin the page is served at: configured, else as this request reached us."""
        return self.options.intake.public_origin or f"{request.url.scheme}://{request.headers.get('host', '')}"

    def csrf_ok(self, request: Request, token: str) -> bool:
        origin = request.headers.get("origin")
        if origin and origin.lower() != self.origin(request).lower():
            return False  # a form posted from another site, or over another scheme
        nonce = self._nonce(request)
        return bool(nonce) and hmac.compare_digest(self.store.keyed_hash("csrf", nonce), token)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.secure_cookies, path="/")

    def signed_in(self, response: Response, contributor: Contributor) -> Response:
        self.set_cookie(response, self.session_cookie, self.store.start_session(contributor.contributor_id),
                        max_age=SESSION_DAYS * 86400)
        return response

    @contextmanager
    def fetch_slot(self) -> Iterator[None]:
        """One of the few URL fetches allowed at once; Busy (503) at once when none is free."""
        if not self.fetches.acquire(blocking=False):
            raise Busy("the server is fetching too many URLs right now; try again in a minute")
        try:
            yield
        finally:
            self.fetches.release()

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page with a CSRF token for its forms (and the browser's nonce cookie if it has none)."""
        nonce = self._nonce(request)
        fresh = nonce is None
        nonce = nonce or secrets.token_urlsafe(32)
        context.setdefault("contributor", self.contributor(request))
        html = self.templates.get_template(template).render(csrf=self.store.keyed_hash("csrf", nonce), **context)
        response = HTMLResponse(html, status_code=status)
        if fresh:
            self.set_cookie(response, self.csrf_cookie, nonce)
        return response

    def refusal(self, request: Request, status: int, message: str) -> HTMLResponse:
        """A refused request answered with the page the person was on."""
        contributor = self.contributor(request)
        if contributor:
            return self.me(request, contributor, status, error=message)
        return self.page(request, "index.html", status, error=message)

    def me(self, request: Request, contributor: Contributor, status: int = 200, **context: Any) -> HTMLResponse:
        cid = contributor.contributor_id
        return self.page(request, "me.html", status, contributor=contributor,
                         consent=self.store.active_consent(cid), revocation=self.store.revocation(cid),
                         submissions=self.store.submissions(cid),
                         max_mb=round(self.options.limits.max_bytes / 2**20, 1), **context)

    def evidence(self, request: Request, action: str) -> dict[str, Any]:
        """What shows a person did this on the page; the address only as a keyed hash."""
        return {"channel": "web", "action": action, "user_agent": request.headers.get("user-agent", "")[:300],
                "ip_hash": self.client(request)}


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _retry_after(response: Response, seconds: int) -> Response:
    response.headers["retry-after"] = str(max(1, seconds))
    return response


def create_app(store: Store, options: SourceOptions, runs: Sequence[Path] = (),
               secure_cookies: bool = True) -> ASGIApp:
    """The intake app. ``runs``: finished run folders a revocation on the page is applied to.
    ``secure_cookies=False`` only for plain-http testing: browsers drop Secure cookies on http."""
    intake = Intake(store, options, runs, secure_cookies)
    revocation.finish_interrupted(store, intake.runs)
    # FastAPI's body limit answers 413 by Content-Length, or while a chunked body streams in.
    app = FastAPI(title="cleanroom opt-in", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=options.limits.max_bytes + FORM_OVERHEAD,
                  form_limits={"max_files": 1, "max_fields": 16, "max_part_size": 16 * 1024})
    _routes(app, intake)
    _errors(app, intake)
    return SecurityHeaders(HostCheck(app, options.intake.public_origin))


def _errors(app: FastAPI, intake: Intake) -> None:
    """Refusals that can come from any handler, answered with the page the person was on."""

    @app.exception_handler(TooMany)
    def too_many(request: Request, error: TooMany) -> Response:
        return _retry_after(intake.refusal(request, 429, str(error)), error.retry_after_s)

    @app.exception_handler(Busy)
    def busy(request: Request, error: Busy) -> Response:
        return _retry_after(intake.refusal(request, 503, str(error)), 60)


def _routes(app: FastAPI, intake: Intake) -> None:
    store = intake.store
    options = intake.options.intake

    def forbidden(request: Request) -> HTMLResponse:
        return intake.page(request, "index.html", 403, error="The form expired or came from another site; "
                                                             "please try again.")

    @app.get("/style.css")
    def style() -> Response:
        return Response(_STYLE, media_type="text/css")

    @app.get("/")
    def index(request: Request) -> Response:
        if intake.contributor(request):
            return _see_other("/me")
        return intake.page(request, "index.html")

    @app.post("/register")
    def register(request: Request, display_name: Annotated[str, Form()], contact: Annotated[str, Form()],
                 csrf: Annotated[str, Form()]) -> Response:
        if not intake.csrf_ok(request, csrf):
            return forbidden(request)
        intake.limits.take("register", intake.client(request), options.registrations_per_hour, "registrations")
        try:
            contributor, token = store.register(display_name, contact, "web", with_token=True)
        except OptinError as e:
            return intake.page(request, "index.html", 400, error=str(e))
        response = intake.page(request, "registered.html", contributor=contributor, token=token)
        return intake.signed_in(response, contributor)

    @app.post("/signin")
    def signin(request: Request, token: Annotated[str, Form()], csrf: Annotated[str, Form()]) -> Response:
        if not intake.csrf_ok(request, csrf):
            return forbidden(request)
        intake.limits.take("signin", intake.client(request), options.signins_per_hour, "sign-in attempts")
        contributor = store.contributor_by_token(token.strip())
        if contributor is None:
            return intake.page(request, "index.html", 401, error="That token is not known.")
        return intake.signed_in(_see_other("/me"), contributor)

    @app.post("/signout")
    def signout(request: Request, csrf: Annotated[str, Form()]) -> Response:
        if not intake.csrf_ok(request, csrf):
            return forbidden(request)
        session = intake.session(request)
        if session:
            store.end_session(session)  # a copy of the cookie stops working too
        response = _see_other("/")
        response.delete_cookie(intake.session_cookie, path="/", secure=intake.secure_cookies, httponly=True,
                               samesite="strict")
        return response

    @app.get("/consent")
    def consent_page(request: Request) -> Response:
        if not intake.contributor(request):
            return _see_other("/")
        return intake.page(request, "consent.html", text=consent_texts.current())

    @app.post("/consent")
    def give_consent(request: Request, csrf: Annotated[str, Form()], version: Annotated[str, Form()],
                     agree: Annotated[str, Form()] = "", training: Annotated[str, Form()] = "",
                     model_release: Annotated[str, Form()] = "", credit: Annotated[str, Form()] = "") -> Response:
        contributor = intake.contributor(request)
        if not contributor or not intake.csrf_ok(request, csrf):
            return forbidden(request)
        text = consent_texts.current()
        if version != text.version or agree != _CHECKED or training != _CHECKED:
            return intake.page(request, "consent.html", 400, text=text,
                               error="Tick training and 'I agree' to give consent to the text shown.")
        scope = Scope(training=True, model_release=model_release == _CHECKED, credit=credit == _CHECKED)
        try:
            store.add_consent(contributor.contributor_id, text, scope, intake.evidence(request, "consent"))
        except OptinError as e:
            return intake.me(request, contributor, 409, error=str(e))
        return _see_other("/me")

    @app.get("/me")
    def me(request: Request, added: str | None = None) -> Response:
        contributor = intake.contributor(request)
        if not contributor:
            return _see_other("/")
        return intake.me(request, contributor, notice="Thank you: your image was added." if added else None)

    @app.post("/upload")
    def upload(request: Request, csrf: Annotated[str, Form()], image: Annotated[UploadFile | None, File()] = None,
               url: Annotated[str, Form()] = "", caption: Annotated[str, Form()] = "",
               title: Annotated[str, Form()] = "") -> Response:
        contributor = intake.contributor(request)
        if not contributor or not intake.csrf_ok(request, csrf):
            return forbidden(request)
        intake.limits.take("upload", contributor.contributor_id, options.uploads_per_hour, "uploads")
        intake.limits.take("client_upload", intake.client(request), options.client_uploads_per_hour,
                           "uploads from your network address")
        data = image.file.read(intake.options.limits.max_bytes + 1) if image is not None else b""
        try:
            clean_text(caption, "caption", 1000)
            clean_text(title, "title", 200)
            if bool(data) == bool(url.strip()):
                raise UploadRefused("no_image", "Choose an image file or give an image URL (one of them).")
            if data:
                submit.submit_bytes(store, contributor.contributor_id, data, intake.options,
                                    caption=caption, title=title, budget=intake.pixels)
            else:
                with intake.fetch_slot():
                    submit.submit_url(store, contributor.contributor_id, url.strip(), intake.options,
                                      caption=caption, title=title, budget=intake.pixels)
        except UploadRefused as e:
            if e.detail:
                log.info("upload of %s refused (%s): %s", contributor.contributor_id, e.code, e.detail)
            return intake.me(request, contributor, _STATUS.get(e.code, 400), error=str(e))
        except (Busy, TooMany):
            raise  # answered by the app's handlers, with Retry-After
        except OptinError as e:
            return intake.me(request, contributor, 400, error=str(e))
        return _see_other("/me?added=1")

    @app.get("/submissions/{submission_id}/image")
    def submission_image(request: Request, submission_id: str) -> Response:
        contributor = intake.contributor(request)
        owned = {s.submission_id: s for s in store.submissions(contributor.contributor_id)} if contributor else {}
        found = owned.get(submission_id)
        if found is None or found.status != ACTIVE or not store.file_path(found).exists():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(store.file_path(found), media_type=found.media_type)

    @app.post("/revoke")
    def revoke(request: Request, csrf: Annotated[str, Form()], confirm: Annotated[str, Form()] = "") -> Response:
        contributor = intake.contributor(request)
        if not contributor or not intake.csrf_ok(request, csrf):
            return forbidden(request)
        if confirm != _CHECKED:
            return intake.me(request, contributor, 400, error="Tick the box to confirm the revocation.")
        store.revoke(contributor.contributor_id, intake.evidence(request, "revoke"))
        notice = "Your consent is revoked."
        if not revocation.apply_recorded(store, intake.runs):
            notice += (" Removing your images from our data sets did not finish; we were told and will "
                       "finish it.")
        return intake.me(request, contributor, notice=notice)
