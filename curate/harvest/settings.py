"""A source's harvest settings: the ``harvest:`` section of its manifest.

Light on purpose (pydantic only): ``curate.config`` validates every manifest with it, and
``cleanroom sources pull --help`` must not load the HTTP client.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HarvestSettings(BaseModel):
    """How to ask a source's public API for its records, politely."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(None, description=(
        "The API root; `--base-url` points a pull at a mirror or a test server."))
    requests_per_second: float = Field(1.0, gt=0, description="Requests started per second, per host.")
    concurrency: int = Field(1, ge=1, description="Requests open at once, per host.")
    page_size: int = Field(100, ge=1, description="Records a page (objects a batch, for the Met).")
    timeout_s: float = Field(30, gt=0, description="Seconds per request.")
    retries: int = Field(5, ge=0, description=(
        "Attempts after the first, on 429, 5xx, a timeout, a cut-off or unparsable page; then a recorded failure."))
    backoff_s: float = Field(1.0, ge=0, description=(
        "Exponential backoff: about backoff_s * 2**attempt (half of it random), or the server's longer "
        "Retry-After."))
    backoff_max_s: float = Field(300, ge=0, description=(
        "The longest wait; a Retry-After asking for more fails the request at once."))
    # Wikimedia's User-Agent policy asks for it.
    contact: str | None = Field(None, description=(
        "Who to tell when the harvest misbehaves (an e-mail address or a URL), sent in the User-Agent; "
        "`--contact` overrides it."))
    api_key_env: str | None = Field(None, description=(
        "The environment variable holding the API key, for APIs that need one (never written to a file)."))
    params: dict[str, str | list[str]] = Field(default_factory=dict, description=(
        "Fixed query parameters of every listing request (filters a user may edit); a list is a repeated "
        "parameter (Finna's filter[])."))
