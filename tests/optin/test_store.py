"""The contributions store: hashed contacts and tokens, consents, revocation in the store."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from curate.optin import consent, safety, submit
from curate.optin.consent import Scope
from curate.optin.errors import OptinError, UploadRefused
from curate.optin.options import Limits, SourceOptions
from curate.optin.store import FILES, SECRET, Store, clean_text

from .conftest import contributor, picture

EMAIL = "Ann.Example@Example.org"


def every_byte(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != SECRET)


def test_contact_is_stored_only_as_a_keyed_hash(store, tmp_path):
    person, token = store.register("Ann", EMAIL, "web", with_token=True)
    assert store.contributors_by_contact("  ann.example@EXAMPLE.org ") == [person]  # normalised before hashing
    stored = every_byte(store.root)
    for secret in (EMAIL.encode(), EMAIL.lower().encode(), b"Example.org", token.encode()):
        assert secret.lower() not in stored.lower()
    other = Store(tmp_path / "other", create=True)
    assert other.contact_hash(EMAIL) != store.contact_hash(EMAIL)  # a hash means nothing without its key
    assert stat.S_IMODE((store.root / SECRET).stat().st_mode) == 0o600


def test_a_token_signs_in_and_only_its_hash_is_kept(store):
    person, token = store.register("Ann", EMAIL, "web", with_token=True)
    assert store.contributor_by_token(token) == person
    assert store.contributor_by_token(token[:-1] + "x") is None
    assert person.token_hash == Store.token_hash(token) != token


def test_registration_validates_its_fields(store):
    with pytest.raises(OptinError, match="contact"):
        store.register("Ann", "not an address", "web", with_token=True)
    with pytest.raises(OptinError, match="display name"):
        store.register("   ", EMAIL, "web", with_token=True)
    with pytest.raises(OptinError, match="control characters"):
        store.register("Ann\x1b[31m", EMAIL, "web", with_token=True)


def test_consent_requires_training_and_records_the_text_it_was_given_on(store):
    with pytest.raises(ValidationError, match="training"):
        Scope(training=False, model_release=True, credit=True)
    person = contributor(store, "Ann", EMAIL, credit=False)
    given = store.active_consent(person.contributor_id)
    text = consent.current()
    assert (given.text_version, given.text_sha256) == (text.version, text.sha256)
    assert given.scope == Scope(training=True, model_release=True, credit=False)
    assert text.version == "consent-v1" and "revoke" in text.text


def test_store_revocation_scrubs_deletes_files_and_is_idempotent(store):
    ann, bob = contributor(store, "Ann", EMAIL), contributor(store, "Bob", "bob@example.org")
    shared = safety.clean(picture(1), Limits())
    store.add_submission(ann.contributor_id, store.active_consent(ann.contributor_id).consent_id, shared,
                         "my cat", "Cat", None)
    store.add_submission(bob.contributor_id, store.active_consent(bob.contributor_id).consent_id, shared,
                         None, None, None)  # the same bytes from Bob: one file
    only_ann = safety.clean(picture(2), Limits())
    store.add_submission(ann.contributor_id, store.active_consent(ann.contributor_id).consent_id, only_ann,
                         None, None, "https://images.example.org/2.jpg")
    first = store.revoke(ann.contributor_id, {"channel": "test"})
    assert store.revoke(ann.contributor_id, {"channel": "again"}) == first
    assert store.active_consent(ann.contributor_id) is None
    assert all(c.revoked_at == first.revoked_at for c in store.consents(ann.contributor_id))
    assert {(s.status, s.caption, s.title, s.source_url) for s in store.submissions(ann.contributor_id)} == {
        ("revoked", None, None, None)}
    assert not (store.root / FILES / only_ann.file_name).exists()
    assert (store.root / FILES / shared.file_name).exists()  # Bob's submission still uses it
    events = [e["event"] for e in store.audit_entries() if e.get("contributor_id") == ann.contributor_id]
    assert events.count("revoke") == 1 and "delete_files" in events
    with pytest.raises(OptinError, match="revoked"):
        store.add_consent(ann.contributor_id, consent.current(), Scope(training=True, model_release=False,
                                                                       credit=False), {})
    with pytest.raises(OptinError, match="no contributor"):
        store.revoke("ctb-unknown", {})


def test_the_same_image_twice_is_refused_as_a_duplicate(store):
    person = contributor(store, "Ann", EMAIL)
    image = safety.clean(picture(3), Limits())
    consent_id = store.active_consent(person.contributor_id).consent_id
    store.add_submission(person.contributor_id, consent_id, image, None, None, None)
    with pytest.raises(UploadRefused) as caught:
        store.add_submission(person.contributor_id, consent_id, image, None, None, None)
    assert caught.value.code == "duplicate"


def test_user_text_is_one_clean_line():
    assert clean_text("  A cat\n\ton a\r\nwall  ", "caption", 100) == "A cat on a wall"
    assert clean_text("   ", "title", 10) is None
    with pytest.raises(OptinError, match="at most 5"):
        clean_text("abcdef", "title", 5)


def test_only_the_owner_can_read_the_store(store):
    person = contributor(store, "Ann", "ann@example.org")
    submit.submit_bytes(store, person.contributor_id, picture(1), SourceOptions())
    modes = {p.relative_to(store.root).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [store.root, *store.root.rglob("*")]}
    assert modes["."] == modes[FILES] == 0o700
    assert {"registry.sqlite", "audit.jsonl", SECRET} <= modes.keys()
    assert all(mode == 0o600 for name, mode in modes.items() if name not in (".", FILES)), modes


@pytest.mark.parametrize("damage", ["empty", "short", "readable"])
def test_a_damaged_or_exposed_secret_key_is_refused_on_reuse(store, damage):
    key = store.root / SECRET
    if damage == "readable":
        key.chmod(0o644)
    else:
        key.write_bytes(b"" if damage == "empty" else b"x" * 16)
    reopened = Store(store.root)
    with pytest.raises(OptinError, match="secret.key"):
        reopened.register("Ann", "ann@example.org", "web", with_token=True)
    assert reopened.rows("SELECT count(*) n FROM contributors") == [{"n": 0}]


def test_a_session_ends_on_sign_out_or_when_it_is_old(store):
    person, _ = store.register("Ann", EMAIL, "web", with_token=True)
    fresh, old = store.start_session(person.contributor_id), store.start_session(person.contributor_id)
    with store._db() as con:  # as if it were made SESSION_DAYS and a minute ago
        con.execute("UPDATE sessions SET created_at = '2020-01-01T00:00:00+00:00' WHERE session_hash = ?",
                    [store.token_hash(old)])
    assert store.contributor_by_session(fresh) == person and store.contributor_by_session(old) is None
    store.end_session(fresh)
    assert store.contributor_by_session(fresh) is None
    assert fresh.encode() not in every_byte(store.root)  # kept only hashed
