"""What a model card says about opt-in contributions and their revocations.

``card_section(out, trained_at)`` reads only the run folder (``OUT/records`` and
``OUT/revocations.jsonl``), so a card can be written where the contributions store is not.
With ``trained_at`` (timezone-aware), revocations applied after that time are reported as
what they are for the model: it was trained on samples whose contributors have since
withdrawn.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from curate import records
from curate.optin.consent import Scope, parse_evidence
from curate.optin.errors import OptinError
from curate.optin.layout import REVOKED
from curate.runfolder import RunFolder
from curate.sources.optin import LICENSE


def _scope(evidence: str | None) -> tuple[str, Scope] | None:
    """(text version, scope) of an opt-in store record; None for opt-in evidence of another kind."""
    try:
        return parse_evidence(evidence or "")
    except OptinError:
        return None


def card_section(out: Path, trained_at: datetime | None = None) -> str:
    """A markdown section for the model card of a model trained on the run in ``out``."""
    folder = RunFolder.at(out)
    rows = pq.read_table(folder.manifest, columns=["status", "reason", "license", "license_value",
                                                   "consent_id"]).to_pylist()
    kept = [r for r in rows if r["status"] == records.KEPT and r["license"] == LICENSE]
    revoked = sum(1 for r in rows if (r["status"], r["reason"]) == (records.REJECTED, REVOKED))
    log = folder.revocation_log()
    if not kept and not revoked and not log:
        return ""
    scopes = [_scope(r["license_value"]) for r in kept]
    no_release = sum(1 for s in scopes if s and not s[1].model_release)
    unknown = scopes.count(None)
    texts = sorted({s[0] for s in scopes if s})
    lines = ["## Opt-in contributions", "",
             f"- {len(kept)} samples come from opt-in contributors, under {len({r['consent_id'] for r in kept})} "
             f"consent records ({', '.join(texts) or 'none left'})."]
    if no_release:
        lines.append(f"- {no_release} of them were given without permission to release models: a model "
                     "trained on them must not be published.")
    if unknown:
        lines.append(f"- {unknown} of them carry no consent scope (they did not come from an opt-in store): "
                     "check their consent before publishing a model.")
    if revoked or log:
        removed = sum(e["samples_removed"] for e in log)
        shards = sorted({s for e in log for s in e["shards_rewritten"] + e["shards_removed"]})
        lines.append(f"- {revoked} records were revoked by their contributors; {removed} samples were removed "
                     f"from the shards after curation ({', '.join(shards) or 'none'}), on "
                     f"{', '.join(sorted({e['applied_at'][:10] for e in log})) or 'no date'}.")
    late = [e for e in log if trained_at and datetime.fromisoformat(e["applied_at"]) > trained_at]
    if late:
        lines.append(f"- This model was trained before {sum(e['samples_removed'] for e in late)} of those samples "
                     f"were removed (latest removal {max(e['applied_at'] for e in late)}): it was trained on "
                     "contributions whose consent has since been revoked, and was not retrained.")
    return "\n".join(lines) + "\n"
