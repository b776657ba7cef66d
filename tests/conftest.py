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


# The trainer's and the audit tools' shared inputs, made once per session (helpers in tests/trained.py, imported
# when a fixture is first used so that curation-only runs do not load torch).


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """Three synthetic shards of tiny images, no curation run behind them."""
    from trained import write_shards

    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder)
    return folder


@pytest.fixture(scope="session")
def model_folder(shards, tmp_path_factory) -> Path:
    """A trained (4 + 4 steps) tiny text-conditioned model on the synthetic shards."""
    from trained import train_both

    return train_both(shards, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def demo_model(demo_out, tmp_path_factory) -> Path:
    """A tiny model trained on the demo curation run's shards: what model cards and checks read."""
    from trained import train_both

    return train_both(demo_out / "shards", tmp_path_factory.mktemp("demo-model"))
