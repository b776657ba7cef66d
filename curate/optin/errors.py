"""Errors of the opt-in package: each message names the file, field or record it is about."""

from __future__ import annotations


class OptinError(ValueError):
    """A store, consent file or revocation request that cannot be used as given."""


class UploadRefused(OptinError):
    """An untrusted image or URL refused by a safety check; ``code`` names the check."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
