"""Machine-readable opt-outs and AI-generated images: the rights checks a run makes.

``hosts`` (robots.txt, TDMRep tdmrep.json, once per host per run), ``tdmrep`` (the
protocol's rules and headers), ``embedded`` (rights metadata read from the original
bytes), ``download`` (what img2dataset keeps of them), ``filters`` (the checks as record
filters), ``evidence`` (embedded copyright statements for the license verdict) and
``steps`` (how the checks join a run, before and after fetch).
"""
