"""``OUT/report/index.html``: the run report a person opens, self-contained.

It opens from ``file://`` with no network: thumbnails are files under ``OUT/report/thumbs/``,
plots are inline SVG, the style is inline, and a Content-Security-Policy forbids the page any
other request. Its sections: fates per source x license; thumbnails of kept samples; per
rejection reason a sample of the records it removed with their detail (the score and threshold,
the duplicate beside the image it duplicates, the license evidence); a histogram of every score
column with its threshold; caption examples per origin and language; the seconds each step took
and its throughput (``timings``). Every list is a bounded, deterministic sample, the records with
the smallest hash of their key (``ORDER BY hash(key) LIMIT``, ``min_by(..., hash(key), n)`` per
group), so each query streams with memory bounded by what it shows.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from curate import records, stages
from curate.config import RunConfig
from curate.optin.layout import REVOKED
from curate.report import credits, dataset_card, markdown, plots, tables, thumbs, timings
from curate.runfolder import RunFolder

INDEX = "index.html"
KEPT_SHOWN = 24
PER_REASON = 4
CAPTIONS_PER_GROUP = 3
# Reasons whose images are shown blurred; a revoked contributor's images are not shown at all.
BLURRED_REASONS = frozenset({"nsfw"})
STATUSES = (records.KEPT, records.REJECTED, records.DUPLICATE, records.FAILED)
REJECTED_COLUMNS = ("key", "source", "license", "fate", "status", "reason", "detail", "license_field",
                    "license_value", "license_evidence", "duplicate_of", "sha256", "title", "url", *plots.SCORES)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px 48px; color: #222 }
h1 { margin-bottom: 0 } h2 { border-bottom: 1px solid #ddd; margin-top: 40px } h3 { margin-bottom: 4px }
table { border-collapse: collapse; margin: 8px 0 }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top }
td.n { text-align: right } .muted { color: #777 }
.grid { display: flex; flex-wrap: wrap; gap: 12px } figure { margin: 0; width: 172px; font-size: 12px }
figure img { display: block; max-width: 160px; max-height: 160px; border: 1px solid #ccc }
.record { display: flex; gap: 16px; border: 1px solid #e4e4e4; padding: 8px; margin: 8px 0 }
.record .images { display: flex; gap: 8px; align-items: flex-start }
.record dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px }
.record dt { font-weight: 600 } .record dd { margin: 0; word-break: break-word }
.noimage { width: 160px; height: 60px; color: #777; border: 1px dashed #bbb; display: flex; align-items: center;
  justify-content: center; font-size: 12px }
.plots { display: flex; flex-wrap: wrap; gap: 16px } .plots figure { width: 520px }
.plots svg { width: 100%; height: auto }
"""
CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def external(label: Any, url: str | None) -> str:
    """A link that leaves the page only when followed, and only to a web URL; else the label alone."""
    target = markdown.web_url(url)
    if target is None:
        return esc(label)
    return f'<a href="{esc(target)}" rel="noreferrer noopener">{esc(label)}</a>'


def image(relative: str | None, alt: str, why_not: str) -> str:
    if relative is None:
        return f'<div class="noimage">{esc(why_not)}</div>'
    return f'<img src="{esc(relative)}" alt="{esc(alt)}">'


# ---------------------------------------------------------------- sections


def summary(con: duckdb.DuckDBPyConnection, name: str) -> str:
    counts = dict(tables.rows(con, "SELECT status, count(*) FROM records GROUP BY 1"))
    total = sum(counts.values())
    parts = ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)
    links = ", ".join(f'<a href="../{target}">{target}</a>' for target in (dataset_card.CARD, credits.MARKDOWN))
    return (f"<h1>Run report: {esc(name)}</h1><p>{total} records: {parts}. {links} sit beside this folder; "
            "every record's fate is in the catalog (<code>cleanroom query OUT</code>).</p>")


def fate_table(con: duckdb.DuckDBPyConnection) -> str:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for source, lid, status, reason, n in tables.fates(con):
        group = groups.setdefault((source, lid), {"counts": dict.fromkeys(STATUSES, 0), "reasons": []})
        group["counts"][status] = group["counts"].get(status, 0) + n
        if reason:
            group["reasons"].append(f"{status}:{reason} {n}")
    rows = "".join(
        f"<tr><td>{esc(source)}</td><td>{esc(lid)}</td>"
        + "".join(f'<td class="n">{group["counts"][status]}</td>' for status in STATUSES)
        + f"<td>{esc(', '.join(group['reasons']))}</td></tr>" for (source, lid), group in sorted(groups.items()))
    header = "".join(f"<th>{status}</th>" for status in STATUSES)
    return (f'<h2 id="fates">Fates per source and license</h2><table><tr><th>source</th><th>license</th>{header}'
            f"<th>reasons</th></tr>{rows}</table>")


def kept_section(folder: RunFolder, con: duckdb.DuckDBPyConnection, report_dir: Path) -> str:
    rows = tables.dicts(con, "SELECT key, shard, source, license, caption FROM samples ORDER BY hash(key), key "
                             "LIMIT ?", [KEPT_SHOWN])
    made = thumbs.from_shards(folder, thumbs.group(rows, "shard"), report_dir)
    total = tables.rows(con, "SELECT count(*) FROM samples")[0][0]
    figures = "".join(
        f"<figure>{image(made.get(r['key']), r['caption'] or r['key'], 'not decodable')}<figcaption>"
        f"{esc(r['caption'])}<br><span class='muted'>{esc(r['source'])} · {esc(r['license'])}</span>"
        "</figcaption></figure>" for r in rows)
    return (f'<h2 id="kept">Kept samples</h2><p>{len(rows)} of {total}, chosen by a hash of their keys.</p>'
            f'<div class="grid">{figures}</div>')


def rejected_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict[str, Any]]]:
    """Fate -> a bounded sample of its records: min_by keeps PER_REASON keys per fate as it streams."""
    chosen = [key for (keys,) in tables.rows(con, "SELECT min_by(key, hash(key), ?) FROM records WHERE status <> ? "
                                                  "GROUP BY fate", [PER_REASON, records.KEPT]) for key in keys]
    by_fate: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in tables.dicts(con, f"SELECT {', '.join(REJECTED_COLUMNS)} FROM records WHERE list_contains(?, key) "
                                    "ORDER BY fate, hash(key)", [chosen]):
        by_fate[record["fate"]].append(record)
    return by_fate


def originals(con: duckdb.DuckDBPyConnection, keys: list[str]) -> list[dict[str, Any]]:
    """Where the records that duplicates duplicate are: key, source, shard (None when not kept)."""
    return tables.dicts(con, "SELECT key, source, CASE WHEN status = ? THEN shard END AS shard FROM records "
                             "WHERE list_contains(?, key)", [records.KEPT, keys])


def rejected_thumbs(folder: RunFolder, con: duckdb.DuckDBPyConnection, by_fate: dict[str, list[dict]],
                    report_dir: Path) -> dict[str, str]:
    shown = [r for rows in by_fate.values() for r in rows if r["sha256"] and r["reason"] != REVOKED]
    blurred = frozenset(r["key"] for r in shown if r["reason"] in BLURRED_REASONS)
    made = thumbs.from_fetch_store(folder, thumbs.group(shown, "source"), report_dir, blurred)
    found = originals(con, sorted({r["duplicate_of"] for rows in by_fate.values() for r in rows
                                   if r["duplicate_of"]}))
    made.update(thumbs.from_shards(folder, thumbs.group([o for o in found if o["shard"]], "shard"), report_dir))
    made.update(thumbs.from_fetch_store(folder, thumbs.group([o for o in found if not o["shard"]], "source"),
                                        report_dir))
    return made


def why_no_image(record: dict[str, Any]) -> str:
    if record["reason"] == REVOKED:
        return "not shown: consent revoked"
    return "no stored image" if record["sha256"] else "never downloaded"


def evidence(record: dict[str, Any]) -> str:
    """Every piece of license evidence the verdict weighed, else the one field the license was read from."""
    pieces = json.loads(record["license_evidence"]) if record["license_evidence"] else []
    listed = "; ".join(f"{p.get('field')} = {p.get('value')}" for p in pieces if isinstance(p, dict))
    given = f"{record['license_field']} = {record['license_value']}" if record["license_field"] else ""
    return listed or given


def record_card(record: dict[str, Any], made: dict[str, str]) -> str:
    images = image(made.get(record["key"]), record["key"], why_no_image(record))
    if record["duplicate_of"]:
        images += image(made.get(record["duplicate_of"]), record["duplicate_of"], "original not shown")
    scores = ", ".join(f"{c} {record[c]:.4f}" for c in plots.SCORES if record[c] is not None)
    fields = [("key", esc(record["key"])), ("source", esc(record["source"])),
              ("license", esc(record["license"] or "(none)")), ("detail", esc(record["detail"])),
              ("license evidence", esc(evidence(record))), ("scores", esc(scores)),
              ("duplicate of", esc(record["duplicate_of"])), ("title", esc(record["title"])),
              ("url", external(record["url"], record["url"]))]
    listed = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in fields if value)
    return f'<div class="record"><div class="images">{images}</div><dl>{listed}</dl></div>'


def rejected_section(folder: RunFolder, con: duckdb.DuckDBPyConnection, stats: dict[str, Any],
                     report_dir: Path) -> str:
    by_fate = rejected_rows(con)
    made = rejected_thumbs(folder, con, by_fate, report_dir)
    declared = stages.declared()
    parts = ['<h2 id="rejected">Rejected, duplicate and failed records, per reason</h2>']
    for stage, counts in stats["by_stage"].items():
        for fate, n in counts.get("fates", {}).items():
            status, _, reason = fate.partition(":")
            meaning = declared[stage].reasons.get(status, {}).get(reason, "") if stage in declared else ""
            how_many = markdown.things(n, "record")
            parts.append(f"<h3>{esc(fate)} <span class='muted'>({esc(stage)}, {how_many})</span></h3>"
                         f"<p class='muted'>{esc(meaning)}</p>"
                         + "".join(record_card(r, made) for r in by_fate.get(fate, [])))
    return "".join(parts)


def plots_section(con: duckdb.DuckDBPyConnection, config: RunConfig) -> str:
    limits = plots.thresholds(config)
    drawn = []
    for column in plots.SCORES:
        threshold, model = limits.get(column, (None, None))
        plot = plots.histogram(con, column, threshold)
        if plot is not None:
            drawn.append(f"<figure class='plot'>{plots.svg(plot)}<figcaption>{esc(column)} from "
                         f"<code>{esc(model)}</code></figcaption></figure>")
    body = "".join(drawn) or "<p>No record was scored.</p>"
    return (f'<h2 id="scores">Scores</h2><p>Every scored record, kept samples in blue; the dashed line is the '
            f'threshold the run applied.</p><div class="plots">{body}</div>')


def captions_section(con: duckdb.DuckDBPyConnection) -> str:
    groups = tables.rows(
        con, "SELECT c.origin, coalesce(c.lang, ''), min_by({'key': key, 'model': c.model, 'text': c.text}, "
             f"hash(key), ?) FROM ({tables.CAPTIONS_MADE}) GROUP BY ALL ORDER BY ALL", [CAPTIONS_PER_GROUP])
    body = "".join(f"<tr><td>{esc(origin)}</td><td>{esc(lang)}</td><td>{esc(made['model'])}</td>"
                   f"<td>{esc(made['text'])}</td><td class='muted'>{esc(made['key'])}</td></tr>"
                   for origin, lang, examples in groups for made in examples)
    return ('<h2 id="captions">Caption examples per origin and language</h2><table><tr><th>origin</th>'
            f"<th>language</th><th>model</th><th>caption</th><th>record</th></tr>{body}</table>")


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def count(value: int | float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def timings_plot(steps: list[timings.StepTime]) -> str:
    timed = [s for s in steps if s.seconds is not None]
    if not timed:
        return ""
    plot = plots.step_seconds_svg([s.step + (" (resumed)" if s.resumed else "") for s in timed],
                                  [s.seconds for s in timed], [s.cpu_seconds for s in timed])
    return (f"<div class='plots'><figure class='plot'>{plot}<figcaption>wall and CPU seconds per step"
            "</figcaption></figure></div>")


def timings_section(folder: RunFolder) -> str:
    steps = timings.step_times(folder)
    head = '<h2 id="timings">Stage timings and throughput</h2>'
    if not steps:
        return head + "<p>This run recorded no step timings.</p>"
    rows = "".join(
        f"<tr><td>{esc(s.step)}</td><td>{esc(timings.ABOUT.get(s.step, ''))}</td>"
        f"<td>{'resumed' if s.resumed else 'this invocation'}</td><td class='n'>{seconds(s.seconds)}</td>"
        f"<td class='n'>{seconds(s.cpu_seconds)}</td><td class='n'>{count(s.records_in)}</td>"
        f"<td class='n'>{count(s.records_out)}</td><td class='n'>{count(s.per_second, 1)}</td></tr>" for s in steps)
    resumed = ", ".join(s.step for s in steps if s.resumed)
    note = f" Resumed: {esc(resumed)}, made by an earlier invocation of the run, with the times it measured."
    return (f"{head}<p>Each step's wall seconds and CPU seconds: this process, its finished subprocesses and "
            "Ray Data's tasks, not the start-up of the Ray actors that load models. Records in and out are the "
            f"step's counts in stats.json; records/s is records in per wall second.{note if resumed else ''}</p>"
            "<table><tr><th>step</th><th>what it does</th><th>made by</th><th>wall s</th><th>CPU s</th>"
            f"<th>records in</th><th>records out</th><th>records/s</th></tr>{rows}</table>{timings_plot(steps)}")


def render(folder: RunFolder, report_dir: Path) -> str:
    """The page's HTML; thumbnails are written under ``report_dir`` as it is made."""
    config, stats = folder.config(), folder.stats()
    with tables.connect(folder) as con:
        sections = [summary(con, config.pipeline.name), fate_table(con),
                    kept_section(folder, con, report_dir), rejected_section(folder, con, stats, report_dir),
                    plots_section(con, config), captions_section(con), timings_section(folder)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>Run report: {esc(config.pipeline.name)}</title><style>{STYLE}</style></head><body>"
            + "".join(sections) + "</body></html>\n")
