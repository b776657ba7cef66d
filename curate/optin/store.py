"""The contributions store: who opted in, under which consent, what they sent, who revoked.

Layout of a store folder::

    registry.sqlite   tables contributors, consents, submissions, revocations, sessions
    secret.key        32 random bytes (mode 0600): the key of the contact and IP hashes
    files/            the clean images, named <sha256>.<ext>: never by an uploaded file name
    audit.jsonl       one JSON object per event, appended and never rewritten
    .files.lock       serialises storing and deleting image files (upload against revocation)

Only the owner may read any of it (folders 0700, files 0600): the registry and the log hold
contact and address hashes, the files images not yet published. A reused ``secret.key`` must
be 32 bytes and readable by its owner only, or the store refuses to open: an empty key left
by a crash would make every keyed hash a plain, guessable one.

Why SQLite and not DuckDB: the intake server, ``cleanroom optin submit|revoke`` and a
pipeline's adapter (in Ray workers) open the store at the same time, and DuckDB lets only
one process hold a database open for writing. SQLite in WAL mode serves concurrent
readers and one writer at a time, with a busy timeout instead of an error. The run's
DuckDB catalog gets copies of the tables (``curate.optin.catalog``).

Contacts are hashed with HMAC-SHA256 under the store's secret key, not with a salted
SHA-256: an e-mail address is guessable, so anyone holding a salted hash and its salt can
test a list of addresses against it, while an HMAC is useless without the key, which
never leaves the store folder. A keyed hash (not a random salt per row) is deterministic,
so a revocation request from an address finds that address's contributions.

Web sign-in tokens are 256-bit random strings, shown once and stored as plain SHA-256:
with that much entropy nothing can be guessed, so a slow password hash would buy nothing.
A browser holds a session (another random string, also stored hashed), not the token:
signing out deletes the session, so a copied cookie stops working, and the token still
signs in again.

A submission is inserted only while its consent stands, checked in the insert's own
statement: an upload still being cleaned when its contributor revokes cannot land after
the revocation. Storing a file and inserting its row, and a revocation's deleting files,
hold ``.files.lock``, so whichever comes second removes what the first left.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import stat
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from curate.io import atomic_path, read_json_lines
from curate.optin.consent import ConsentText, Scope
from curate.optin.errors import OptinError, UploadRefused
from curate.optin.safety import CleanImage

REGISTRY = "registry.sqlite"
SECRET = "secret.key"
FILES = "files"
AUDIT = "audit.jsonl"
_FILES_LOCK = ".files.lock"
SESSION_DAYS = 30  # a browser session older than this signs in again with the token
SECRET_BYTES = 32
ACTIVE, REVOKED = "active", "revoked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contributors (
    contributor_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    contact_hash TEXT NOT NULL,
    token_hash TEXT UNIQUE,  -- null for contributors registered from a consent file (no web sign-in)
    channel TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS contributors_by_contact ON contributors (contact_hash);
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    contributor_id TEXT NOT NULL REFERENCES contributors,
    text_version TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    scope_training INTEGER NOT NULL CHECK (scope_training = 1),
    scope_model_release INTEGER NOT NULL,
    scope_credit INTEGER NOT NULL,
    accepted_at TEXT NOT NULL,
    evidence TEXT NOT NULL,  -- JSON: channel and what shows the contributor agreed
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS submissions (
    submission_id TEXT PRIMARY KEY,
    contributor_id TEXT NOT NULL REFERENCES contributors,
    consent_id TEXT NOT NULL REFERENCES consents,
    sha256 TEXT NOT NULL,
    file TEXT NOT NULL,  -- name under files/; the file is deleted on revocation
    media_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    caption TEXT,
    title TEXT,
    source_url TEXT,  -- where a URL submission was fetched from
    submitted_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    UNIQUE (contributor_id, sha256)
);
CREATE TABLE IF NOT EXISTS revocations (
    revocation_id TEXT PRIMARY KEY,
    contributor_id TEXT NOT NULL UNIQUE REFERENCES contributors,
    revoked_at TEXT NOT NULL,
    evidence TEXT NOT NULL  -- JSON: channel and how the request reached us
);
CREATE TABLE IF NOT EXISTS sessions (
    session_hash TEXT PRIMARY KEY,  -- SHA-256 of the browser's session cookie
    contributor_id TEXT NOT NULL REFERENCES contributors,
    created_at TEXT NOT NULL
);
"""
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Bidi embeddings, overrides and isolates, and the marks: they can make a text read backwards.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Contributor:
    contributor_id: str
    display_name: str
    contact_hash: str
    token_hash: str | None
    channel: str
    created_at: str


@dataclass(frozen=True)
class Consent:
    consent_id: str
    contributor_id: str
    text_version: str
    text_sha256: str
    scope_training: int
    scope_model_release: int
    scope_credit: int
    accepted_at: str
    evidence: str
    revoked_at: str | None

    @property
    def scope(self) -> Scope:
        return Scope(training=bool(self.scope_training), model_release=bool(self.scope_model_release),
                     credit=bool(self.scope_credit))


@dataclass(frozen=True)
class Submission:
    submission_id: str
    contributor_id: str
    consent_id: str
    sha256: str
    file: str
    media_type: str
    width: int
    height: int
    caption: str | None
    title: str | None
    source_url: str | None
    submitted_at: str
    status: str


@dataclass(frozen=True)
class Revocation:
    revocation_id: str
    contributor_id: str
    revoked_at: str
    evidence: str


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def clean_text(value: str | None, field: str, max_chars: int, required: bool = False,
               name: bool = False) -> str | None:
    """User text as stored: NFC, whitespace runs (line breaks too) as one space, no control
    characters or bidi controls, bounded; None when empty. Captions end up in KEY.txt, names in
    credits: one line. A ``name`` takes no invisible (format) character at all, zero-width ones
    included: two names that look the same must be the same name."""
    text = " ".join(unicodedata.normalize("NFC", value or "").split())
    if _CONTROL.search(text):
        raise OptinError(f"{field}: control characters are not accepted")
    if _BIDI.search(text):
        raise OptinError(f"{field}: text direction controls (U+202E and the like) are not accepted")
    if name and any(unicodedata.category(c) == "Cf" for c in text):
        raise OptinError(f"{field}: invisible characters (zero-width and format characters) are not accepted")
    if len(text) > max_chars:
        raise OptinError(f"{field}: at most {max_chars} characters (got {len(text)})")
    if required and not text:
        raise OptinError(f"{field}: required")
    return text or None


def _normalize_contact(contact: str) -> str:
    text = unicodedata.normalize("NFC", contact).strip().casefold()
    if not _EMAIL.match(text) or len(text) > 254:
        raise OptinError("contact: give an e-mail address (name@example.org)")
    return text


class Store:
    """One store folder. Methods open a short-lived SQLite connection each: the web app calls
    them from worker threads, and a connection must not cross threads."""

    def __init__(self, root: Path, *, create: bool = False, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only
        if create:
            self._create()
        elif not (self.root / REGISTRY).is_file():
            raise OptinError(f"{self.root}: not an opt-in store (no {REGISTRY}); "
                             "`cleanroom optin submit --store DIR` or `serve --store DIR` creates one")

    def _create(self) -> None:
        for folder in (self.root, self.root / FILES):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask, and an old store may be open
        try:
            fd = os.open(self.root / SECRET, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
        for name in (REGISTRY, AUDIT):  # SQLite gives its -wal and -shm files the database's mode
            os.close(os.open(self.root / name, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(self.root / name, 0o600)
        with self._db() as con:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
            con.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        path = self.root / REGISTRY
        if self.read_only:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        else:
            con = sqlite3.connect(path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA foreign_keys=ON")
            with con:  # one transaction: committed on success, rolled back on an exception
                yield con
        finally:
            con.close()

    # ---------------------------------------------------------------- keys and hashes

    @cached_property
    def _secret(self) -> bytes:
        path = self.root / SECRET
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise OptinError(f"{path}: mode {mode:04o} lets others read the store key; chmod 600 {path}")
        key = path.read_bytes()
        if len(key) != SECRET_BYTES:
            raise OptinError(f"{path}: {len(key)} bytes, not {SECRET_BYTES}: the store key is damaged (an "
                             "interrupted creation?); restore it from a backup: a new key would orphan "
                             "every contact hash")
        return key

    def _key(self, purpose: str) -> bytes:
        """A key per purpose derived from the store secret, so one use cannot stand in for another."""
        return hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest()

    def keyed_hash(self, purpose: str, value: str) -> str:
        return hmac.new(self._key(purpose), value.encode(), hashlib.sha256).hexdigest()

    def contact_hash(self, contact: str) -> str:
        return self.keyed_hash("contact", _normalize_contact(contact))

    @staticmethod
    def token_hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    # ---------------------------------------------------------------- contributors and consents

    def register(self, display_name: str, contact: str, channel: str,
                 with_token: bool) -> tuple[Contributor, str | None]:
        """A new contributor; with a sign-in token (returned once, stored hashed) for the web."""
        name = clean_text(display_name, "display name", 80, required=True, name=True)
        token = secrets.token_urlsafe(32) if with_token else None
        contributor = Contributor(contributor_id=new_id("ctb"), display_name=name,
                                  contact_hash=self.contact_hash(contact),
                                  token_hash=self.token_hash(token) if token else None,
                                  channel=channel, created_at=now())
        with self._db() as con:
            con.execute("INSERT INTO contributors VALUES (?, ?, ?, ?, ?, ?)", _values(contributor))
        self.audit("register", contributor_id=contributor.contributor_id, channel=channel)
        return contributor, token

    def contributor(self, contributor_id: str) -> Contributor:
        with self._db() as con:
            row = con.execute("SELECT * FROM contributors WHERE contributor_id = ?", [contributor_id]).fetchone()
        if row is None:
            raise OptinError(f"{self.root}: no contributor {contributor_id!r}")
        return Contributor(**row)

    def contributor_by_token(self, token: str) -> Contributor | None:
        with self._db() as con:
            row = con.execute("SELECT * FROM contributors WHERE token_hash = ?", [self.token_hash(token)]).fetchone()
        return Contributor(**row) if row else None

    def start_session(self, contributor_id: str) -> str:
        """A new browser session of the contributor: the cookie value, stored only hashed."""
        session = secrets.token_urlsafe(32)
        with self._db() as con:
            con.execute("INSERT INTO sessions VALUES (?, ?, ?)", [self.token_hash(session), contributor_id, now()])
        return session

    def contributor_by_session(self, session: str) -> Contributor | None:
        oldest = (datetime.now(timezone.utc) - timedelta(days=SESSION_DAYS)).isoformat(timespec="seconds")
        with self._db() as con:
            row = con.execute("SELECT k.* FROM sessions s JOIN contributors k USING (contributor_id) "
                              "WHERE s.session_hash = ? AND s.created_at > ?",
                              [self.token_hash(session), oldest]).fetchone()
        return Contributor(**row) if row else None

    def end_session(self, session: str) -> None:
        with self._db() as con:
            con.execute("DELETE FROM sessions WHERE session_hash = ?", [self.token_hash(session)])

    def contributors_by_contact(self, contact: str) -> list[Contributor]:
        with self._db() as con:
            rows = con.execute("SELECT * FROM contributors WHERE contact_hash = ? ORDER BY created_at, contributor_id",
                               [self.contact_hash(contact)]).fetchall()
        return [Contributor(**row) for row in rows]

    def add_consent(self, contributor_id: str, text: ConsentText, scope: Scope, evidence: dict[str, Any]) -> Consent:
        if self.revocation(contributor_id):
            raise OptinError(f"contributor {contributor_id} revoked their consent; a new contribution needs a "
                             "new registration")
        consent = Consent(consent_id=new_id("cns"), contributor_id=contributor_id, text_version=text.version,
                          text_sha256=text.sha256, scope_training=int(scope.training),
                          scope_model_release=int(scope.model_release), scope_credit=int(scope.credit),
                          accepted_at=now(), evidence=json.dumps(evidence, sort_keys=True), revoked_at=None)
        with self._db() as con:
            con.execute("INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _values(consent))
        self.audit("consent", contributor_id=contributor_id, consent_id=consent.consent_id,
                   text_version=text.version, text_sha256=text.sha256, scope=scope.names(), evidence=evidence)
        return consent

    def consents(self, contributor_id: str | None = None) -> list[Consent]:
        where, args = ("WHERE contributor_id = ?", [contributor_id]) if contributor_id else ("", [])
        with self._db() as con:
            rows = con.execute(f"SELECT * FROM consents {where} ORDER BY accepted_at, consent_id", args).fetchall()
        return [Consent(**row) for row in rows]

    def active_consent(self, contributor_id: str) -> Consent | None:
        """The newest consent not revoked: new submissions are given under it."""
        active = [c for c in self.consents(contributor_id) if c.revoked_at is None]
        return active[-1] if active else None

    # ---------------------------------------------------------------- submissions

    @contextmanager
    def _files_locked(self) -> Iterator[None]:
        fd = os.open(self.root / _FILES_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def add_submission(self, contributor_id: str, consent_id: str, image: CleanImage, caption: str | None,
                       title: str | None, source_url: str | None) -> Submission:
        """Store the image and its row, if the consent still stands at the moment of the insert."""
        submission = Submission(submission_id=new_id("sub"), contributor_id=contributor_id, consent_id=consent_id,
                                sha256=image.sha256, file=image.file_name, media_type=image.media_type,
                                width=image.width, height=image.height,
                                caption=clean_text(caption, "caption", 1000), title=clean_text(title, "title", 200),
                                source_url=source_url, submitted_at=now(), status=ACTIVE)
        path = self.root / FILES / image.file_name
        with self._files_locked():
            if not path.exists():  # the same bytes from someone else are stored once
                with atomic_path(path) as tmp:
                    tmp.write_bytes(image.data)
                os.chmod(path, 0o600)  # atomic_path gives the umask's mode; files/ is 0700 meanwhile
            try:
                inserted = self._insert_under_consent(submission)
            except sqlite3.IntegrityError:
                raise UploadRefused("duplicate", "you already submitted this image") from None
            if not inserted:
                self._delete_unused([image.file_name])
        if not inserted:
            raise UploadRefused("no_consent", "your consent was revoked or withdrawn; the image was not kept")
        self.audit("submit", contributor_id=contributor_id, consent_id=consent_id,
                   submission_id=submission.submission_id, sha256=image.sha256)
        return submission

    def _insert_under_consent(self, submission: Submission) -> bool:
        """Insert the row only if its consent is not revoked, in one statement: SQLite takes the write
        lock for it, so no revocation can commit between the check and the insert."""
        columns = ", ".join(f"? AS {name}" for name in vars(submission))
        with self._db() as con:
            cursor = con.execute(
                f"INSERT INTO submissions SELECT {columns} WHERE EXISTS (SELECT 1 FROM consents WHERE consent_id = ? "
                "AND contributor_id = ? AND revoked_at IS NULL) AND NOT EXISTS (SELECT 1 FROM revocations "
                "WHERE contributor_id = ?)",
                [*_values(submission), submission.consent_id, submission.contributor_id, submission.contributor_id])
            return cursor.rowcount == 1

    def submissions(self, contributor_id: str | None = None) -> list[Submission]:
        where, args = ("WHERE contributor_id = ?", [contributor_id]) if contributor_id else ("", [])
        with self._db() as con:
            rows = con.execute(f"SELECT * FROM submissions {where} ORDER BY submitted_at, submission_id",
                               args).fetchall()
        return [Submission(**row) for row in rows]

    def file_path(self, submission: Submission) -> Path:
        return self.root / FILES / submission.file

    # ---------------------------------------------------------------- revocation

    def revocation(self, contributor_id: str) -> Revocation | None:
        with self._db() as con:
            row = con.execute("SELECT * FROM revocations WHERE contributor_id = ?", [contributor_id]).fetchone()
        return Revocation(**row) if row else None

    def revocations(self) -> list[Revocation]:
        with self._db() as con:
            rows = con.execute("SELECT * FROM revocations ORDER BY revoked_at, revocation_id").fetchall()
        return [Revocation(**row) for row in rows]

    def revoke(self, contributor_id: str, evidence: dict[str, Any]) -> Revocation:
        """Mark every consent and submission of the contributor revoked, scrub their captions,
        titles and source URLs, and delete their image files. Idempotent: a second call returns
        the first revocation (and finishes deleting files an interrupted call left)."""
        self.contributor(contributor_id)  # unknown ids are an error, not a silent no-op
        revocation = self.revocation(contributor_id) or self._record_revocation(contributor_id, evidence)
        deleted = self._delete_files(contributor_id)
        if deleted:
            self.audit("delete_files", contributor_id=contributor_id, sha256=sorted(deleted))
        return revocation

    def _record_revocation(self, contributor_id: str, evidence: dict[str, Any]) -> Revocation:
        revocation = Revocation(revocation_id=new_id("rev"), contributor_id=contributor_id, revoked_at=now(),
                                evidence=json.dumps(evidence, sort_keys=True))
        try:
            with self._db() as con:
                self._mark_revoked(con, revocation)
        except sqlite3.IntegrityError:  # a concurrent call revoked first: one revocation per contributor
            return self.revocation(contributor_id)
        self.audit("revoke", contributor_id=contributor_id, revocation_id=revocation.revocation_id,
                   consent_ids=[c.consent_id for c in self.consents(contributor_id)],
                   submissions=len(self.submissions(contributor_id)), evidence=evidence)
        return revocation

    @staticmethod
    def _mark_revoked(con: sqlite3.Connection, revocation: Revocation) -> None:
        contributor_id = revocation.contributor_id
        con.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", _values(revocation))
        con.execute("UPDATE consents SET revoked_at = ? WHERE contributor_id = ? AND revoked_at IS NULL",
                    [revocation.revoked_at, contributor_id])
        con.execute("UPDATE submissions SET status = ?, caption = NULL, title = NULL, source_url = NULL "
                    "WHERE contributor_id = ?", [REVOKED, contributor_id])

    def _delete_files(self, contributor_id: str) -> list[str]:
        """Delete the contributor's files that no active submission (of anyone) still uses; the sha256
        of each file deleted."""
        with self._files_locked():
            with self._db() as con:
                rows = con.execute("SELECT DISTINCT file FROM submissions WHERE contributor_id = ?",
                                   [contributor_id]).fetchall()
            return self._delete_unused([row["file"] for row in rows])

    def _delete_unused(self, files: list[str]) -> list[str]:
        """Of ``files``, delete those no active submission uses (hold ``_files_locked``)."""
        deleted = []
        for name in files:
            with self._db() as con:
                used = con.execute("SELECT 1 FROM submissions WHERE file = ? AND status = ?",
                                   [name, ACTIVE]).fetchone()
            path = self.root / FILES / name
            if used is None and path.exists():
                path.unlink()
                deleted.append(name.split(".", 1)[0])
        return deleted

    # ---------------------------------------------------------------- audit and tables

    def audit(self, event: str, **fields: Any) -> None:
        """Append one event. A lock serialises writers, so lines never interleave.

        ASCII JSON: a value (a User-Agent) holding U+0085 or U+2028 must not be able to split its line.
        """
        line = json.dumps({"time": now(), "event": event, **fields}, sort_keys=True, ensure_ascii=True) + "\n"
        fd = os.open(self.root / AUDIT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def audit_entries(self) -> list[dict[str, Any]]:
        """Every event, oldest first; a corrupt line is reported with its number and skipped, so a damaged
        log never stops a revocation."""
        return read_json_lines(self.root / AUDIT)

    def rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read-only query, as dicts (the adapter and the catalog read through this)."""
        with self._db() as con:
            return [dict(row) for row in con.execute(sql, args or []).fetchall()]


def _values(item: Any) -> list[Any]:
    """A record's fields in declaration order, which is its table's column order."""
    return list(vars(item).values())
