"""The reason code of a revoked record, apart from ``revoke`` so the adapter and reports need not import it."""

# records.REASONS[REJECTED] lists it.
REVOKED = "revoked"
