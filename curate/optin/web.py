"""The intake web page: register, accept the consent text, upload, see submissions, revoke.

Server-rendered forms on FastAPI (no JavaScript), served by uvicorn. Choices:

- Sign-in: registration shows a random token once; the browser keeps it in an HttpOnly,
  SameSite=Strict cookie, and the store only its hash. No passwords to reuse or leak, no
  e-mail round trip (this app sends no mail), and a token can be typed in again elsewhere.
- CSRF: every form carries a token that is an HMAC of a random per-browser cookie under
  a store key, checked on every POST, together with the Origin header when the browser
  sends one; SameSite=Strict cookies alone would leave older browsers open.
- Untrusted bodies: a request body above the upload limit (plus room for the form fields)
  is refused with 413 before it is parsed, forms hold one file and few, short fields; the
  image then goes through ``safety.clean``, URL submissions through ``urls.fetch``.
- A revocation on the page is applied at once to the run folders the server was given.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any, Sequence
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
from curate.optin.errors import OptinError, UploadRefused
from curate.optin.options import SourceOptions
from curate.optin.store import ACTIVE, Contributor, Store, clean_text

log = logging.getLogger("cleanroom.optin.web")

TOKEN_COOKIE = "optin_token"
CSRF_COOKIE = "optin_csrf"
FORM_OVERHEAD = 64 * 1024  # multipart framing and the text fields around one image
_TEMPLATES = Path(__file__).resolve().parent / "templates"
# The status a refused upload answers with, by UploadRefused code.
_STATUS = {"too_large": 413, "not_an_image": 415, "animated": 415, "decode_error": 415, "too_many_pixels": 413,
           "duplicate": 409, "no_consent": 403, "url_not_allowed": 400, "url_fetch_failed": 502}
_CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
_STYLE = """body{font-family:sans-serif;max-width:48rem;margin:1rem auto;padding:0 1rem;line-height:1.4}
label{display:block;margin:.5rem 0}input:not([type=checkbox]),textarea{display:block;width:100%}
.error{color:#a00}.notice{color:#060}.inline{display:inline}pre.consent{white-space:pre-wrap;background:#f4f4f4;
padding:1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem}"""


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", _CSP.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      # Not no-referrer: with it, browsers send "Origin: null" on
                                      # our own form posts, and the origin check needs the origin.
                                      (b"referrer-policy", b"same-origin"),
                                      (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, with_headers)


class Intake:
    """The app's state and helpers: store, options, runs, cookies, templates."""

    def __init__(self, store: Store, options: SourceOptions, runs: Sequence[Path], secure_cookies: bool):
        self.store, self.options, self.runs, self.secure_cookies = store, options, list(runs), secure_cookies
        self.templates = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))

    def contributor(self, request: Request) -> Contributor | None:
        token = request.cookies.get(TOKEN_COOKIE)
        return self.store.contributor_by_token(token) if token else None

    def _nonce(self, request: Request) -> str | None:
        nonce = request.cookies.get(CSRF_COOKIE)
        return nonce if nonce and len(nonce) == 43 else None

    def csrf_ok(self, request: Request, token: str) -> bool:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return False  # a form posted from another site
        nonce = self._nonce(request)
        return bool(nonce) and hmac.compare_digest(self.store.keyed_hash("csrf", nonce), token)

    def set_cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(name, value, httponly=True, samesite="strict", secure=self.secure_cookies, path="/")

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page with a CSRF token for its forms (and the browser's nonce cookie if it has none)."""
        nonce = self._nonce(request)
        fresh = nonce is None
        nonce = nonce or secrets.token_urlsafe(32)
        context.setdefault("contributor", self.contributor(request))
        html = self.templates.get_template(template).render(csrf=self.store.keyed_hash("csrf", nonce), **context)
        response = HTMLResponse(html, status_code=status)
        if fresh:
            self.set_cookie(response, CSRF_COOKIE, nonce)
        return response

    def me(self, request: Request, contributor: Contributor, status: int = 200, **context: Any) -> HTMLResponse:
        cid = contributor.contributor_id
        return self.page(request, "me.html", status, contributor=contributor,
                         consent=self.store.active_consent(cid), revocation=self.store.revocation(cid),
                         submissions=self.store.submissions(cid),
                         max_mb=round(self.options.limits.max_bytes / 2**20, 1), **context)

    def evidence(self, request: Request, action: str) -> dict[str, Any]:
        """What shows a person did this on the page; the address only as a keyed hash."""
        client = request.client.host if request.client else ""
        return {"channel": "web", "action": action, "user_agent": request.headers.get("user-agent", "")[:300],
                "ip_hash": self.store.keyed_hash("ip", client)}


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def create_app(store: Store, options: SourceOptions, runs: Sequence[Path] = (),
               secure_cookies: bool = True) -> FastAPI:
    """The intake app. ``runs``: finished run folders a revocation on the page is applied to.
    ``secure_cookies=False`` only for plain-http testing: browsers drop Secure cookies on http."""
    intake = Intake(store, options, runs, secure_cookies)
    # FastAPI's body limit answers 413 by Content-Length, or while a chunked body streams in.
    app = FastAPI(title="cleanroom opt-in", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=options.limits.max_bytes + FORM_OVERHEAD,
                  form_limits={"max_files": 1, "max_fields": 16, "max_part_size": 16 * 1024})
    app.add_middleware(SecurityHeaders)
    _routes(app, intake)
    return app


def _routes(app: FastAPI, intake: Intake) -> None:
    store = intake.store

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
        try:
            contributor, token = store.register(display_name, contact, "web", with_token=True)
        except OptinError as e:
            return intake.page(request, "index.html", 400, error=str(e))
        response = intake.page(request, "registered.html", contributor=contributor, token=token)
        intake.set_cookie(response, TOKEN_COOKIE, token)
        return response

    @app.post("/signin")
    def signin(request: Request, token: Annotated[str, Form()], csrf: Annotated[str, Form()]) -> Response:
        if not intake.csrf_ok(request, csrf):
            return forbidden(request)
        if store.contributor_by_token(token.strip()) is None:
            return intake.page(request, "index.html", 401, error="That token is not known.")
        response = _see_other("/me")
        intake.set_cookie(response, TOKEN_COOKIE, token.strip())
        return response

    @app.post("/signout")
    def signout(request: Request, csrf: Annotated[str, Form()]) -> Response:
        if not intake.csrf_ok(request, csrf):
            return forbidden(request)
        response = _see_other("/")
        response.delete_cookie(TOKEN_COOKIE, path="/")
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
        if version != text.version or not agree or not training:
            return intake.page(request, "consent.html", 400, text=text,
                               error="Tick training and 'I agree' to give consent to the text shown.")
        scope = Scope(training=True, model_release=bool(model_release), credit=bool(credit))
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
        data = image.file.read(intake.options.limits.max_bytes + 1) if image is not None else b""
        try:
            clean_text(caption, "caption", 1000)
            clean_text(title, "title", 200)
            if bool(data) == bool(url.strip()):
                raise UploadRefused("no_image", "Choose an image file or give an image URL (one of them).")
            if data:
                submit.submit_bytes(store, contributor.contributor_id, data, intake.options,
                                    caption=caption, title=title)
            else:
                submit.submit_url(store, contributor.contributor_id, url.strip(), intake.options,
                                  caption=caption, title=title)
        except UploadRefused as e:
            return intake.me(request, contributor, _STATUS.get(e.code, 400), error=str(e))
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
        if not confirm:
            return intake.me(request, contributor, 400, error="Tick the box to confirm the revocation.")
        store.revoke(contributor.contributor_id, intake.evidence(request, "revoke"))
        try:
            revocation.apply(store, intake.runs, [store.revocation(contributor.contributor_id)])
        except OptinError as e:
            # The revocation is recorded; `cleanroom optin revoke --run OUT` finishes the data sets.
            log.error("revocation of %s recorded, but applying it to runs failed: %s", contributor.contributor_id, e)
        return intake.me(request, contributor, notice="Your consent is revoked.")
