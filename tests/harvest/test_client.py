"""The polite client on its own: backoff, Retry-After, bounded retries, what a failure says."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import version

import pytest

from curate.harvest.client import HostLimiter, RequestFailed, retry_after, user_agent

from .conftest import CONTACT, FakeTime, RecordedAPI, Reply, fake_client, settings


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after("7") == 7
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", lambda: now) == 30
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", lambda: now) == 0  # a date past is "now"
    assert retry_after("soon") is None and retry_after(None) is None


def test_backoff_doubles_with_jitter_and_gives_up_after_the_retries():
    time_ = FakeTime()
    with RecordedAPI(lambda seen: Reply(503, b"busy")) as server:
        client = fake_client(settings(server.url, retries=3, backoff_s=1, backoff_max_s=60), time_)
        with client, pytest.raises(RequestFailed) as failed:
            client.get(server.url + "/page")
    assert len(server.seen) == 4
    assert failed.value.attempts == 4 and failed.value.status == 503 and failed.value.reason == "HTTP 503"
    waits = [s for s in time_.sleeps if s > 1e-6]
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):  # between half and all of 1 s * 2**attempt
        assert 2 ** attempt / 2 <= wait <= 2 ** attempt


def test_a_server_asking_for_a_longer_wait_than_allowed_fails_the_request_at_once():
    with RecordedAPI(lambda seen: Reply(429, b"", {"Retry-After": "3600"})) as server:
        client = fake_client(settings(server.url, retries=5, backoff_max_s=60), FakeTime())
        with client, pytest.raises(RequestFailed, match="asked to wait 3600s, more than backoff_max_s=60"):
            client.get(server.url + "/page")
    assert len(server.seen) == 1


def test_a_client_error_is_not_asked_again():
    with RecordedAPI(lambda seen: Reply.json({"message": "not found"}, status=404)) as server:
        client = fake_client(settings(server.url, retries=5), FakeTime())
        with client, pytest.raises(RequestFailed) as failed:
            client.get(server.url + "/objects/9", {"api_key": "k3y", "q": "x"}, secret=("api_key",))
    assert len(server.seen) == 1 and failed.value.status == 404
    assert failed.value.url == f"{server.url}/objects/9?api_key=%2A%2A%2A&q=x"
    assert "k3y" not in str(failed.value.record())


def test_a_backoff_holds_every_request_to_the_host_and_the_rate_spaces_them():
    time_ = FakeTime()
    limiter = HostLimiter(settings("http://h", requests_per_second=10), time_.clock, time_.sleep)
    with limiter.slot():
        pass
    limiter.hold(4)  # one request was told to wait 4 s: whichever request comes next waits for it
    with limiter.slot():
        pass
    with limiter.slot():
        pass
    assert time_.sleeps == [pytest.approx(4), pytest.approx(0.1)]


def test_a_request_already_waiting_when_the_host_is_held_waits_for_the_hold():
    time_ = FakeTime()
    limiter = HostLimiter(settings("http://h", requests_per_second=1), time_.clock, time_.sleep)

    def sleep(seconds):  # while this request waits its turn, another one is told to back off for 10 s
        time_.sleep(seconds)
        if len(time_.sleeps) == 1:
            limiter.hold(10)

    limiter._sleep = sleep
    with limiter.slot():
        pass
    with limiter.slot():
        pass
    assert time_.sleeps == [pytest.approx(1), pytest.approx(10)]  # its turn, then the whole hold placed then


def test_the_user_agent_names_the_tool_and_the_contact():
    assert user_agent(CONTACT).startswith(f"cleanroom-harvest/{version('cleanroom')} ({CONTACT}) httpx/")
