import os
from pathlib import Path

import pytest

# No test may reach a model hub: without this a pretrained tag retries the network for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tests assert the modes outputs get (group and others may read them): the usual umask, whatever the shell has.
os.umask(0o022)

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory):
    """The demo pipeline's run folder, made once: the curation tests read it, the model card trains on it."""
    from curate.run import run

    out = tmp_path_factory.mktemp("demo") / "out"
    run(DEMO, out)
    return out
