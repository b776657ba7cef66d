"""cleanroom curation: source records -> licensed, filtered, captioned webdataset shards."""

from curate import _torchvision_cpu

_torchvision_cpu.install()
