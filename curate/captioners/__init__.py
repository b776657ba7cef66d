"""Captioning, one module per part: ``config`` (the pipeline's ``captions:`` section),
``metadata`` (fields + templates -> captions), ``coca`` (open_clip CoCa captions),
``policy`` (the caption stage: all captions, the chosen one), ``similarity`` (the CLIP
image-text filter), ``text`` (cleaning and the ``captions`` column).
``curate.caption`` is the public entry point.
"""
