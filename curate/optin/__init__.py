"""Opt-in contributions: consent, intake (web page and folder submissions), revocation.

Modules: ``consent`` (versioned consent texts under ``licenses/``, scopes), ``store`` (the
contributions store: registry, clean files, audit log), ``safety`` and ``urls`` (checks on
untrusted uploads and URL submissions), ``submit``, ``revoke`` (store and finished runs),
``web`` (the intake page), ``server`` (how uvicorn serves it: request deadlines, connection
limit; SECURITY.md says how to deploy it), ``catalog`` (registry tables for a run's catalog),
``report`` (the model card section), ``cli``. The pipeline reads a store through the ``optin``
source adapter, ``curate.sources.optin``.
"""
