"""This folder is data. The file only makes it the package ``curate.data.licenses`` (mapped in setup.py),
so that a wheel carries it; code reads it through ``curate.data``."""
