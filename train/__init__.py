"""cleanroom training: latent diffusion on curated shards (see README: planned in later issues)."""

from curate import _torchvision_cpu

_torchvision_cpu.install()
