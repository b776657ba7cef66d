"""The reason code of a revoked record, apart from ``revoke`` so the adapter and reports need not import it."""

# Declared with the ingest stage (curate.ingest): a revoked record counts as never admitted.
REVOKED = "revoked"
