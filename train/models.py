"""Named model sizes -> diffusers networks, and the frozen open_clip conditioning encoders.

Sizes are small JSON files chosen by name (``train/configs/unet/<name>.json``,
``train/configs/autoencoder/<name>.json``), like open_clip's model configs: a new size is a
new file, not a new flag. Tiny open_clip configs for tests and the demo live in
``train/configs/open_clip/`` and are registered with open_clip by name.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.config import ComputeConfig, ConditioningConfig

CONFIGS = Path(__file__).with_name("configs")
KINDS = ("unet", "autoencoder")
ENCODER_CONFIG = "conditioning.json"
ENCODER_WEIGHTS = "open_clip.safetensors"


def available(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / kind).glob("*.json"))


def named_config(kind: str, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    path = CONFIGS / kind / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown {kind} size {name!r}; known: {', '.join(available(kind))} "
                         f"(files under {CONFIGS / kind})")
    config = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return config | (overrides or {})


def size_compute(kind: str, name: str) -> dict[str, Any]:
    """The compute settings a named size sets by default (its file's `_compute`; sd1-base checkpoints gradients)."""
    path = CONFIGS / kind / f"{name}.json"
    return json.loads(path.read_text()).get("_compute", {}) if path.is_file() else {}


def set_compute(network: nn.Module, compute: ComputeConfig, kind: str, size: str) -> None:
    """The attention kernel, gradient checkpointing and memory format of `network`, in place."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    network.set_attn_processor(AttnProcessor2_0() if compute.attention == "sdpa" else AttnProcessor())
    checkpointing = compute.gradient_checkpointing
    if checkpointing is None:
        checkpointing = size_compute(kind, size).get("gradient_checkpointing", False)
    if checkpointing:
        network.enable_gradient_checkpointing()
    if compute.channels_last:
        network.to(memory_format=torch.channels_last)


def _network_class(kind: str) -> type:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return {"unet": UNet2DConditionModel, "autoencoder": AutoencoderKL}[kind]


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build(kind: str, name: str, overrides: dict[str, Any] | None = None, init: str | None = None) -> nn.Module:
    """A network of a named size, random-initialised, or fine-tuning weights from `init`.

    `init` is a local diffusers folder (config.json beside the weights: its own config wins,
    e.g. the `unet/` or `vae/` folder of a pipeline, or one of our `final/` exports), one of
    our checkpoint folders (model.safetensors from accelerate) or a weights file; for the
    last two the named size must match the weights.
    """
    cls = _network_class(kind)
    if init is None:
        return cls.from_config(named_config(kind, name, overrides))
    path = Path(init)
    if (path / "config.json").is_file():
        return cls.from_pretrained(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{init}: no {kind} checkpoint here (expected a diffusers folder with config.json, "
                                f"a checkpoint folder with model.safetensors, or a .safetensors/.bin file)")
    model = cls.from_config(named_config(kind, name, overrides))
    state = _load_state_dict(weights)
    if kind == "autoencoder" and all(k.startswith("vae.") for k in state):
        state = {k.removeprefix("vae."): v for k, v in state.items()}  # our checkpoints wrap it in Reconstructor
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the {kind} size {name!r}: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:2]})")
    return model


class Reconstructor(nn.Module):
    """The autoencoder as one forward call, so accelerate's wrappers (autocast, DDP) see all of it."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(pixels).latent_dist
        return self.vae.decode(posterior.sample(generator=generator)).sample, posterior.kl()


@functools.cache
def register_open_clip_configs() -> None:
    import open_clip

    open_clip.add_model_config(CONFIGS / "open_clip")


def _text_tower(model: nn.Module, name: str) -> nn.Module:
    """The module holding token_embedding .. ln_final: the CLIP itself, or `.text` of a CustomTextCLIP."""
    tower = getattr(model, "text", model)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(hasattr(tower, attr) for attr in needed):
        raise ValueError(f"open_clip model {name!r}: its text tower ({type(tower).__name__}) has no token states "
                         f"we can read ({', '.join(needed)}); Hugging Face text towers are not supported")
    return tower


class ConditioningEncoder(nn.Module):
    """A frozen open_clip tower that turns a batch into UNet `encoder_hidden_states`.

    Text: per-token states after `ln_final`, from the last block or, as SD 2's
    FrozenOpenCLIPEmbedder did with OpenCLIP-H, from the penultimate one.
    Image: the image tower's projected embedding as a single token, as SD image variations
    did; a dropped sample gets zeros, the unconditional input for guidance.
    `device` is where open_clip builds it (the meta device: a FLOP count without weights or memory).
    """

    def __init__(self, config: ConditioningConfig, device: torch.device | str = "cpu"):
        super().__init__()
        import open_clip

        register_open_clip_configs()
        try:
            model = open_clip.create_model(config.model, pretrained=config.pretrained, device=device)
        except RuntimeError as e:
            raise RuntimeError(f"open_clip {config.model} / {config.pretrained}: cannot load weights ({e}); "
                               f"without network access give a local weights file as pretrained:") from e
        self.config = config
        if config.encoder == "text":
            self.tower = _text_tower(model, config.model)
            if self.tower is model:
                del model.visual  # never used for text states; OpenCLIP-H's image tower alone is 630M parameters
            self.tokenizer = open_clip.get_tokenizer(config.model)
            self.width = self.tower.transformer.width
        else:
            self.clip = model
            size = model.visual.image_size
            self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
            std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
            self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
            with torch.no_grad():
                self.width = int(model.encode_image(torch.zeros(1, 3, *self.image_size, device=device)).shape[-1])
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "ConditioningEncoder":
        return super().train(False)  # frozen: never in training mode

    def tokens(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions)

    def _text_states(self, tokens: torch.Tensor) -> torch.Tensor:
        tower = self.tower
        x = tower.token_embedding(tokens) + tower.positional_embedding
        blocks = tower.transformer.resblocks
        if self.config.layer == "penultimate":
            blocks = blocks[:-1]
        batch_first = getattr(tower.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for block in blocks:
            x = block(x, attn_mask=tower.attn_mask)
        x = x if batch_first else x.transpose(0, 1)
        return tower.ln_final(x)

    def _image_states(self, pixels: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        images = torch.nn.functional.interpolate((pixels + 1) / 2, size=self.image_size, mode="bicubic",
                                                 align_corners=False, antialias=True)
        embedding = self.clip.encode_image((images - self.mean) / self.std)
        return torch.where(dropped.view(-1, 1), torch.zeros_like(embedding), embedding).unsqueeze(1)

    @torch.no_grad()
    def forward(self, captions: list[str], pixels: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        if self.config.encoder == "text":
            return self._text_states(self.tokens(captions).to(self.device))
        return self._image_states(pixels, dropped.to(pixels.device))

    @torch.no_grad()
    def unconditional(self, count: int) -> torch.Tensor:
        """The states of an empty prompt / dropped image: the other half of guidance."""
        if self.config.encoder == "text":
            return self._text_states(self.tokens([""] * count).to(self.device))
        return torch.zeros(count, 1, self.width, device=self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def network(self) -> nn.Module:
        """The open_clip module whose weights are used: the text tower, or the whole CLIP for images."""
        return self.tower if self.config.encoder == "text" else self.clip

    def save(self, folder: Path) -> None:
        """The weights actually used (a random-init tower too), so sampling needs no hub and no seed."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / ENCODER_CONFIG).write_text(json.dumps(self.config.model_dump(mode="json"), indent=2))
        state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, folder / ENCODER_WEIGHTS)

    @classmethod
    def load(cls, folder: Path) -> "ConditioningEncoder":
        """An encoder saved by `save`: its open_clip config, then its own weights, strictly."""
        from safetensors.torch import load_file

        for name in (ENCODER_CONFIG, ENCODER_WEIGHTS):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: missing; {folder} is not a saved conditioning encoder")
        config = ConditioningConfig.model_validate_json((folder / ENCODER_CONFIG).read_text())
        encoder = cls(config.model_copy(update={"pretrained": None}))
        encoder.config = config
        encoder.network.load_state_dict(load_file(folder / ENCODER_WEIGHTS), strict=True)
        return encoder


def load_autoencoder(path: Path, device: torch.device | str) -> nn.Module:
    """The frozen autoencoder of the diffusion job (and of a latent cache), from a diffusers folder."""
    from diffusers import AutoencoderKL

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no trained autoencoder here; run `cleanroom train autoencoder` "
                                f"first or set diffusion.autoencoder to a diffusers AutoencoderKL folder")
    return AutoencoderKL.from_pretrained(path).eval().requires_grad_(False).to(device)


def fingerprint(network: nn.Module) -> str:
    """sha256 of a network's weights (names, dtypes, shapes, values): the same weights whatever file held them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)  # a 0-d tensor has no byte view
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def check_fit(unet: nn.Module, encoder: ConditioningEncoder, vae: nn.Module, model_name: str) -> None:
    """Fail at construction, naming the setting to change, when the parts do not fit together."""
    if unet.config.cross_attention_dim != encoder.width:
        raise ValueError(f"unet size {model_name!r} attends to {unet.config.cross_attention_dim}-wide states but "
                         f"open_clip {encoder.config.model} ({encoder.config.encoder}) gives {encoder.width}: "
                         f"set diffusion.overrides.cross_attention_dim: {encoder.width}")
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(f"unet size {model_name!r} takes {unet.config.in_channels} channels but the autoencoder "
                         f"gives {vae.config.latent_channels} latent channels: set diffusion.overrides.in_channels "
                         f"and out_channels")
