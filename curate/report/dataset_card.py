"""``OUT/DATASET_CARD.md``: the run's dataset card, with Hugging Face dataset-card front matter.

Nothing on it is typed here: counts come from the catalog (``records``, ``samples``,
``licenses``, the consent registry), what each stage removed from ``stats.json``, the policy,
filters, thresholds, models and dedup settings from the resolved config (``curate.describe``,
the policy file), revocations from ``OUT/revocations.jsonl``, and the limitations are
derived from those same numbers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import yaml

from curate import describe, licenses
from curate.config import RunConfig
from curate.io import write_text_atomic
from curate.report import credits, markdown, tables
from curate.runfolder import RunFolder

CARD = "DATASET_CARD.md"
# The license identifiers the Hugging Face Hub knows among those in our registry; others are "other".
HUB_LICENSES = frozenset({"cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
                          "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
                          "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
                          "cc-by-nc-sa-4.0"})
# The Hub's size_categories buckets: (upper bound, label).
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
RANDOM_WEIGHTS = "random-init"  # how curate's model descriptions name random weights (ClipSpec.describe)
DOMINANT_SHARE = 0.5  # above this, one source or caption origin shapes the whole data set


def size_category(n: int) -> str:
    return next((label for bound, label in SIZE_BUCKETS if n < bound), "n>1B")


def hub_license(license_id: str) -> str:
    return license_id.lower() if license_id.lower() in HUB_LICENSES else "other"


def share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "0%"


class Facts:
    """What the card says, read once from the run folder."""

    def __init__(self, folder: RunFolder, con: duckdb.DuckDBPyConnection):
        self.config: RunConfig = folder.config()
        self.stats: dict[str, Any] = folder.stats()
        self.names = {source.source: source.name for source in self.config.sources}
        self.records = tables.rows(con, "SELECT count(*) FROM records")[0][0]
        self.by_source = tables.samples_by_source(con)
        self.samples = sum(n for *_, n in self.by_source)
        self.records_by_source = dict(tables.rows(con, "SELECT source, count(*) FROM records GROUP BY 1"))
        self.licenses = {row[0]: licenses.License(*row) for row in tables.rows(
            con, "SELECT license, name, url, family, allowed_for_training, attribution_required FROM licenses "
                 "WHERE license IN (SELECT DISTINCT license FROM samples) ORDER BY license")}
        self.origins = tables.rows(con, "SELECT coalesce(caption_origin, '(none)'), count(*) FROM samples "
                                        "GROUP BY 1 ORDER BY 2 DESC, 1")
        self.languages = tables.rows(con, "SELECT coalesce(c.lang, '(not recorded)'), count(*) "
                                          f"FROM ({tables.CAPTIONS_MADE}) GROUP BY 1 ORDER BY 2 DESC, 1")
        self.optin = optin_counts(con)
        self.attribution = tables.rows(
            con, "SELECT count(*) FROM samples s JOIN licenses l ON l.license = s.license "
                 "WHERE l.attribution_required")[0][0]
        self.revocations = folder.revocation_log()

    def source_label(self, source: str) -> str:
        return f"{markdown.text(self.names.get(source, source))} (`{source}`)"

    def removed(self, stage: str) -> dict[str, int]:
        return self.stats["by_stage"].get(stage, {}).get("fates", {})


def optin_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Samples from opt-in contributors, and (with the consent registry) contributors, credit and release."""
    samples, consents = tables.rows(con, "SELECT count(*), count(DISTINCT consent_id) FROM samples "
                                         "WHERE consent_id IS NOT NULL")[0]
    counts = {"samples": samples, "consents": consents}
    if tables.has_registry(con):
        contributors, credited, no_release, unregistered = tables.rows(
            con, "SELECT count(DISTINCT c.contributor_id), count(DISTINCT c.contributor_id) FILTER (WHERE "
                 "c.scope_credit), count(*) FILTER (WHERE NOT c.scope_model_release), "
                 "count(*) FILTER (WHERE c.consent_id IS NULL) FROM samples s LEFT JOIN optin_consents c "
                 "ON c.consent_id = s.consent_id WHERE s.consent_id IS NOT NULL")[0]
        counts.update(contributors=contributors, credited=credited, no_release=no_release,
                      unregistered=unregistered)
    return counts


# ---------------------------------------------------------------- sections


def front_matter(facts: Facts) -> list[str]:
    meta = {
        "pretty_name": facts.config.pipeline.name,
        "license": sorted({hub_license(lid) for lid in facts.licenses}) or ["other"],
        "task_categories": ["text-to-image"],
        "size_categories": [size_category(facts.samples)],
        "tags": ["cleanroom", "webdataset", *sorted({f"license-family-{lic.family}"
                                                     for lic in facts.licenses.values()})],
        "configs": [{"config_name": "default", "data_files": "shards/*.tar"}],
    }
    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n"), "---"]


def header(facts: Facts) -> list[str]:
    return [f"# {markdown.text(facts.config.pipeline.name)}: dataset card", "",
            "Generated by cleanroom from this run's catalog, config and statistics; regenerate it "
            "(`cleanroom report OUT`) rather than editing it.", "",
            f"{markdown.things(facts.samples, 'image-text pair')} in webdataset shards under `shards/`, kept from "
            f"{markdown.things(facts.records, 'candidate record')} ({share(facts.samples, facts.records)}). Every "
            "sample's `KEY.json` carries its source record, license evidence and attribution line."]


def sources_section(facts: Facts) -> list[str]:
    per_source: dict[str, Counter] = {}
    for source, lid, n in facts.by_source:
        per_source.setdefault(source, Counter())[lid] = n
    rows = [[facts.source_label(source), facts.records_by_source.get(source, 0), sum(counts.values()),
             ", ".join(f"`{lid}` {n}" for lid, n in sorted(counts.items()))]
            for source, counts in sorted(per_source.items())]
    rows += [[facts.source_label(source), n, 0, ""] for source, n in sorted(facts.records_by_source.items())
             if source not in per_source]
    license_rows = [[markdown.link(lic.name, lic.url), f"`{lic.id}`", f"`{lic.family}`",
                     "yes" if lic.attribution_required else "no",
                     sum(n for _, lid, n in facts.by_source if lid == lic.id)] for lic in facts.licenses.values()]
    return ["## Sources and licenses", "",
            *markdown.table(["source", "records", "samples", "samples per license"], rows), "",
            *markdown.table(["license", "id", "family", "attribution required", "samples"], license_rows)]


def curation_section(facts: Facts) -> list[str]:
    policy = licenses.Policy.load(facts.config.policy_file)
    admitted = ", ".join(f"`{name}`" for name in sorted(policy.allow_families | policy.allow_ids))
    denied = ", ".join(f"`{name}`" for name in sorted(policy.deny_ids))
    return ["## Curation", "",
            f"The license policy `{policy.name}` admits {admitted}" + (f" and denies {denied}" if denied else "")
            + "; every other license, and evidence that names none, is rejected before download. In run order:", "",
            *describe.pipeline_lines(facts.config)]


def removed_section(facts: Facts) -> list[str]:
    rows = []
    for stage, counts in facts.stats["by_stage"].items():
        if "removed" not in counts:
            continue
        fates = ", ".join(f"`{fate}` {n}" for fate, n in sorted(counts["fates"].items())) or "none"
        rows.append([stage, counts["in"], counts["removed"], counts["out"], fates])
    dedup = facts.removed("dedup")
    return ["## What each stage removed", "",
            *markdown.table(["stage", "in", "removed", "out", "fates"], rows), "",
            f"Deduplication removed {markdown.things(sum(dedup.values()), 'record')}"
            + (": " + ", ".join(f"{n} `{fate}`" for fate, n in sorted(dedup.items())) if dedup else "")
            + ". Every removed record stays in `records/` with its reason; `cleanroom query OUT` reads them."]


def captioning_section(facts: Facts) -> list[str]:
    captions = facts.config.pipeline.captions
    lines = ["## Captions", "",
             f"- `KEY.txt` holds the first caption a record has, in this order of origin: "
             f"{', '.join(f'`{o}`' for o in captions.choose)}; `KEY.json` keeps every caption made.",
             "- Chosen captions by origin: " + ", ".join(f"`{o}` {n}" for o, n in facts.origins) + "."
             if facts.origins else "- No captions: the run kept no sample."]
    if facts.languages:
        lines.append("- Captions made, by language: " + ", ".join(f"`{lang}` {n}" for lang, n in facts.languages)
                     + ".")
    if captions.captioner:
        lines.append(f"- Model captions: `{captions.captioner.describe()}`.")
    if captions.similarity:
        removed = facts.removed("caption")
        lines.append(f"- Caption-image similarity: `{captions.similarity.model.describe()}`, captions below "
                     f"{captions.similarity.threshold} rejected ({sum(removed.values())} records).")
    return lines


def optin_section(facts: Facts) -> list[str]:
    counts = facts.optin
    if not counts["samples"]:
        return ["## Opt-in contributions", "", "No sample came from the opt-in programme."]
    lines = [f"- {markdown.things(counts['samples'], 'sample')} from opt-in contributors, under "
             f"{markdown.things(counts['consents'], 'consent record')}."]
    if "contributors" in counts:
        lines.append(f"- {markdown.things(counts['contributors'], 'contributor')}, of whom {counts['credited']} "
                     f"asked to be credited (see `{credits.MARKDOWN}`).")
        if counts["no_release"]:
            lines.append(f"- {counts['no_release']} samples were contributed without permission to release models "
                         "trained on them.")
        if counts["unregistered"]:
            lines.append(f"- {counts['unregistered']} samples have consent records missing from the catalog's "
                         "consent registry.")
    else:
        lines.append("- The opt-in store was not beside the run when its catalog was built: contributor counts "
                     "are not available.")
    return ["## Opt-in contributions", "", *lines]


def revocations_section(facts: Facts) -> list[str]:
    if not facts.revocations:
        return ["## Revocations", "", "No opt-in revocation has been applied to this run."]
    rows = [[entry["applied_at"], entry["records_revoked"], entry["samples_removed"],
             ", ".join(entry["shards_rewritten"]) or "none", ", ".join(entry["shards_removed"]) or "none"]
            for entry in facts.revocations]
    return ["## Revocations", "", "Contributors withdrew consent; their samples were taken out of the shards:", "",
            *markdown.table(["applied at", "records revoked", "samples removed", "shards rewritten",
                             "shards removed"], rows)]


def credits_section(facts: Facts) -> list[str]:
    return ["## Credits", "",
            f"{markdown.things(facts.attribution, 'sample')} carry a license that requires attribution: "
            f"`{credits.MARKDOWN}` lists each with its attribution line and link (machine-readable: "
            f"`{credits.PARQUET}`), beside the opt-in contributors who asked to be credited."]


def limitations(facts: Facts) -> list[str]:
    found = random_model_limits(facts) + unfiltered_limits(facts) + share_limits(facts)
    if not facts.samples:
        found.append("The run kept no sample.")
    return ["## Known limitations", "", *(f"- {text}" for text in found or ["None derived from this run's numbers."])]


def random_model_limits(facts: Facts) -> list[str]:
    models = dict(facts.stats.get("models", {}))
    captions = facts.config.pipeline.captions
    if captions.captioner:
        models["model captions"] = captions.captioner.describe()
    if captions.similarity:
        models["caption_clip_similarity"] = captions.similarity.model.describe()
    random = {what: model for what, model in models.items() if RANDOM_WEIGHTS in model}
    if not random:
        return []
    return ["These come from random-weight models and mean nothing, so the filters built on them did not select for "
            "what they are named after: " + "; ".join(f"`{what}` from `{model}`" for what, model in random.items())
            + "."]


def unfiltered_limits(facts: Facts) -> list[str]:
    stage = facts.stats["by_stage"].get("score")
    if facts.config.pipeline.scoring is None or stage is None or stage["removed"] or not stage["in"]:
        return []
    return [f"The score thresholds rejected none of the {stage['in']} records scored: they shaped nothing."]


def share_limits(facts: Facts) -> list[str]:
    found = []
    per_source = Counter()
    for source, _, n in facts.by_source:
        per_source[source] += n
    for source, n in per_source.items():
        if facts.samples and n / facts.samples > DOMINANT_SHARE:
            found.append(f"{share(n, facts.samples)} of the samples come from one source, "
                         f"{facts.source_label(source)}: its subjects and styles dominate.")
    metadata = dict(facts.origins).get("metadata", 0)
    if facts.samples and metadata / facts.samples > DOMINANT_SHARE:
        found.append(f"{share(metadata, facts.samples)} of the captions are catalogue metadata (titles, creators, "
                     "dates), not descriptions of what the picture shows.")
    failed = sum(n for fate, n in facts.stats["by_fate"].items() if fate.startswith("failed"))
    if failed:
        found.append(f"{markdown.things(failed, 'record')} failed (download or decoding errors), not for their "
                     "content: the data set is missing what those sources offered.")
    return found


def render(folder: RunFolder) -> str:
    with tables.connect(folder) as con:
        facts = Facts(folder, con)
    sections = [front_matter(facts), header(facts), sources_section(facts), curation_section(facts),
                removed_section(facts), captioning_section(facts), optin_section(facts),
                revocations_section(facts), credits_section(facts), limitations(facts)]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def write(folder: RunFolder) -> Path:
    path = folder.root / CARD
    write_text_atomic(render(folder), path)
    return path
