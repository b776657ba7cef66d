"""How the rights checks join a run: host rules fetched and applied before the images, the rest after.

``before_fetch`` runs on the driver, per source, before img2dataset starts: it caches the
robots.txt and tdmrep.json of every host not seen yet in this run (the images' hosts and,
when the page check is on, the pages' hosts) and the TDMRep signals of every page not read
yet (``curate.rights.pages``); then, a batch of candidates at a time, it lets the host
filters (``filters.HostFilter``) decide each candidate from its URL and page, so an image
its host or page reserves is never requested. Their fates travel to the filter step as fetch results;
the same filters run again there (on the same cached rules) over what was downloaded,
with the checks that need the original's headers and bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import records, stages
from curate.licenses import Policy
from curate.rights.evidence import EmbeddedEvidence
from curate.rights.filters import EmbeddedRights, HostFilter, RobotsTxt, TdmReservation
from curate.rights.hosts import HOST_PATTERN, HostCache, Politeness, is_web
from curate.rights.pages import PageCache

if TYPE_CHECKING:
    from curate.runfolder import RunFolder

HOSTS = "hosts"  # the run's host rules cache: OUT/work/hosts/*.parquet
PAGES = "pages"  # the run's page signals cache: OUT/work/pages/*.parquet
BATCH_ROWS = 10_000  # candidates decided at a time: a source's list may hold millions
FATE_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("status", pa.string(), nullable=False),
                         pa.field("reason", pa.string(), nullable=False), pa.field("detail", pa.string()),
                         pa.field("stage", pa.string())])


def bound(filters: list[stages.Filter], folder: RunFolder, policy: Policy | None) -> list[Any]:
    """The run's filters with what the rights checks need from the run.

    Host filters share the run's host cache, the TDM check the page cache too; the
    embedded-rights filter is preceded by the license verdict over the statements the
    image embeds, when its settings ask for it.
    """
    in_order: list[Any] = []
    cache = HostCache(folder.stage_dir(HOSTS))
    for record_filter in filters:
        if isinstance(record_filter, HostFilter):
            record_filter.hosts = cache
        if isinstance(record_filter, TdmReservation):
            record_filter.pages = PageCache(folder.stage_dir(PAGES))
        if isinstance(record_filter, EmbeddedRights) and record_filter.config.license_evidence:
            if policy is None:
                raise ValueError("embedded_rights: license_evidence needs the run's license policy")
            in_order.append(EmbeddedEvidence(policy))
        in_order.append(record_filter)
    return in_order


def before_fetch(candidates: pa.Table, filters: list[Any], timeout: float, user_agent_token: str
                 ) -> tuple[pa.Table, pa.Table]:
    """Candidates (``key``, ``url``, and ``page_url`` when the page check is on) -> (those left to
    download, the fates of the others: FATE_SCHEMA)."""
    host_filters = [f for f in filters if isinstance(f, HostFilter)]
    if not host_filters or candidates.num_rows == 0:
        return candidates, FATE_SCHEMA.empty_table()
    caches = {f.hosts.folder: f.hosts for f in host_filters if f.hosts is not None}
    if len(caches) != 1 or any(f.hosts is None for f in host_filters):
        raise ValueError("the host filters need one host cache (curate.rights.steps.bound gives it)")
    page_checks = [f for f in host_filters if isinstance(f, TdmReservation) and f.config.page_meta]
    if page_checks and "page_url" not in candidates.column_names:
        raise ValueError("tdm_reservation reads the records' pages: before_fetch needs the candidates' page_url")
    if any(f.pages is None for f in page_checks):
        raise ValueError("tdm_reservation needs the run's page cache (curate.rights.steps.bound gives it)")
    hosts_cache, politeness = next(iter(caches.values())), Politeness(timeout, user_agent_token)
    hosts = _hosts(candidates["url"]) | (_hosts(candidates["page_url"]) if page_checks else set())
    hosts_cache.ensure(sorted(h for h in hosts if is_web(h)), politeness)
    for check in page_checks:
        check.pages.ensure(candidates["page_url"], politeness, check.page_settings, hosts_cache)
    host_filters = [_sending(f, user_agent_token) for f in host_filters]
    columns = ["key", "url", "page_url"] if page_checks else ["key", "url"]
    left, fates = [], []
    for batch in candidates.select(columns).to_batches(max_chunksize=BATCH_ROWS):
        table = _pending(pa.Table.from_batches([batch]))
        for record_filter in host_filters:
            table = record_filter(table)
        pending = pc.equal(table["status"], records.PENDING)
        left.append(table.filter(pending).select(["key", "url"]))
        fates.append(table.filter(pc.invert(pending)).select(FATE_SCHEMA.names).cast(FATE_SCHEMA))
    return pa.concat_tables(left), pa.concat_tables(fates)


def _hosts(urls: pa.ChunkedArray) -> set[str]:
    """The hosts as hosts.host_of names them, found by Arrow: a source may offer millions of URLs."""
    found = pc.extract_regex(urls.cast(pa.string()).drop_null(), f"(?P<host>{HOST_PATTERN})")
    return set(pc.unique(pc.utf8_lower(pc.struct_field(found, [0]))).drop_null().to_pylist())


def _sending(record_filter: HostFilter, user_agent_token: str) -> HostFilter:
    """The filter, with the token this source's fetch sends among the robots.txt tokens it checks.

    Only here: a record this adds a refusal for is decided now, and the filter step's check
    (without the token) only ever keeps what is left."""
    if not isinstance(record_filter, RobotsTxt):
        return record_filter
    tokens = record_filter.config.tokens
    if user_agent_token.lower() in {t.lower() for t in tokens}:
        return record_filter
    sending = RobotsTxt(record_filter.config.model_copy(update={"tokens": [*tokens, user_agent_token]}),
                        strict=record_filter.strict)
    sending.hosts = record_filter.hosts
    return sending


def _pending(batch: pa.Table) -> pa.Table:
    status = pa.array([records.PENDING] * batch.num_rows, pa.string())
    return records.conform(batch.append_column("status", status).append_column(
        "reason", pa.array([""] * batch.num_rows, pa.string())))
