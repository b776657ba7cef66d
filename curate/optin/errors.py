"""Errors of the opt-in package: each message names the file, field or record it is about."""

from __future__ import annotations


class OptinError(ValueError):
    """A store, consent file or revocation request that cannot be used as given."""


class UploadRefused(OptinError):
    """An untrusted image or URL refused by a safety check; ``code`` names the check.

    ``detail`` is for the operator's log only: what a stranger must not learn from the answer
    (what an internal host name resolves to, why a connection failed)."""

    def __init__(self, code: str, message: str, detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.detail = detail


class Busy(OptinError):
    """The intake has no room for this request now (503): try again later."""


class TooMany(OptinError):
    """A rate limit or quota is used up (429); ``retry_after_s`` says when there is room again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s
