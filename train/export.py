"""A trained model as a diffusers StableDiffusionPipeline folder and a single-file LDM checkpoint.

``cleanroom export MODEL --out DIR`` (`export`; the command is audit.export's) writes::

    DIR/model_index.json     StableDiffusionPipeline; safety checker and feature extractor off
    DIR/unet/, DIR/vae/      the trained UNet and its frozen autoencoder, as trained
    DIR/text_encoder/        transformers CLIPTextModel converted from the open_clip text tower
    DIR/tokenizer/           CLIPTokenizer built from open_clip's own BPE file
    DIR/scheduler/           the chosen sampler on the training noise schedule
    DIR/<name>.safetensors   (default --single-file) the original LDM / Stable Diffusion 2 layout
    DIR/MODEL_CARD.md        (unless --no-card) from the catalogs of the training shards, and
    DIR/LICENSE.md           the model license: files a caller hands in (`extras`); the command
                             is audit.export's, which reads the curation runs for them (audit.card)

The text tower is converted the way diffusers converted SD 2's OpenCLIP-H: a "penultimate"
tower keeps all but its last block, and CLIPTextModel's ``last_hidden_state`` (final layer
norm applied) is then exactly what the UNet was trained on. Towers this mapping does not
cover (LayerScale, bidirectional attention, a cls token, other norms, extra weights, Hugging
Face text towers) and image-conditioned models are refused, naming what is unsupported.

The tokenizer gives open_clip's ids for every prompt except two corners of HF's CLIPTokenizer:
it unescapes HTML entities once (ftfy) where open_clip does it twice more, and it reads the
literal strings ``<|startoftext|>``/``<|endoftext|>`` (rather than open_clip's
``<start_of_text>``/``<end_of_text>``) in a prompt as the special tokens.

The single file holds ``model.diffusion_model.*`` (UNet in LDM names), ``first_stage_model.*``
(autoencoder in LDM names) and ``cond_stage_model.model.*`` (the open_clip tower's own state
dict, all its blocks, as SD 2 checkpoints hold it): what A1111, ComfyUI and diffusers'
``from_single_file`` read. The diffusers config is not in it; ``from_single_file(...,
config=DIR)`` takes it from the exported folder.
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.io import atomic_folder, atomic_path
from train import sample
from train.generate import Model, load, model_folder
from train.models import ENCODER_CONFIG, ConditioningEncoder

log = logging.getLogger(__name__)
LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
LDM_TEXT = "cond_stage_model.model."
HF_SPECIAL_TOKENS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
PAD_TOKEN = "!"  # id 0: open_clip pads with 0, as SD 2's tokenizer does
# Tower weights the token states never use: the pooled-embedding projection and CLIP's logit scale/bias.
UNUSED_TOWER_KEYS = {"text_projection", "text_projection.weight", "text_projection.bias", "logit_scale", "logit_bias"}
RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET_LDM = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


# Files to write beside the weights (name -> bytes), made from the model folder before any weights are written.
Extras = Callable[[Path], Mapping[str, bytes]]


class ExportError(ValueError):
    """The model cannot be written in the requested format; the message names what and why."""


# --- the open_clip text tower -> transformers CLIPTextModel ---------------------------------------


def _unsupported(encoder: ConditioningEncoder, feature: str) -> ExportError:
    return ExportError(f"open_clip model {encoder.config.model!r}: its text tower has {feature}, which a "
                       f"transformers CLIPTextModel cannot express; export covers towers laid out like "
                       f"OpenAI CLIP / OpenCLIP-H (SD 2)")


def _check_blocks(encoder: ConditioningEncoder) -> None:
    from open_clip.transformer import ResidualAttentionBlock

    for i, block in enumerate(encoder.tower.transformer.resblocks):
        if not isinstance(block, ResidualAttentionBlock):
            raise _unsupported(encoder, f"custom blocks ({type(block).__name__} at block {i}: qk-norm, scaled "
                                        f"cosine attention or head scaling)")
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            raise _unsupported(encoder, f"LayerScale (block {i}, ls_init_value set)")
        if hasattr(block, "ln_1_kv"):
            raise _unsupported(encoder, f"cross-attention (block {i})")
        if not block.attn._qkv_same_embed_dim or block.attn.in_proj_bias is None:
            raise _unsupported(encoder, f"attention without a packed, biased q/k/v projection (block {i})")


def _check_tower(encoder: ConditioningEncoder) -> None:
    """Refuse, naming the feature, any tower whose token states the CLIPTextModel mapping would change."""
    from open_clip.transformer import Transformer

    if encoder.config.encoder != "text":
        raise ExportError(f"conditioning encoder {encoder.config.encoder!r} (open_clip {encoder.config.model}): "
                          f"export covers text-conditioned models; a StableDiffusionPipeline takes prompts")
    tower = encoder.tower
    if not isinstance(getattr(tower, "transformer", None), Transformer):
        raise _unsupported(encoder, f"a {type(tower).__name__} transformer (a Hugging Face text tower)")
    if getattr(tower, "cls_emb", None) is not None:
        raise _unsupported(encoder, "a cls embedding (embed_cls)")
    if tower.attn_mask is None:
        raise _unsupported(encoder, "no causal mask (no_causal_mask: bidirectional attention)")
    _check_blocks(encoder)
    norms = [m for block in tower.transformer.resblocks for m in (block.ln_1, block.ln_2)] + [tower.ln_final]
    odd = next((m for m in norms if not isinstance(m, nn.LayerNorm) or m.weight is None or m.bias is None), None)
    if odd is not None:
        raise _unsupported(encoder, f"{type(odd).__name__} norms (not an affine LayerNorm with bias)")
    if len({m.eps for m in norms}) > 1:
        raise _unsupported(encoder, f"LayerNorms with different eps ({sorted({m.eps for m in norms})})")
    if encoder.config.layer == "penultimate" and len(tower.transformer.resblocks) < 2:
        raise _unsupported(encoder, "a single block, so no penultimate layer")


def _hidden_act(encoder: ConditioningEncoder) -> str:
    """transformers' name for the blocks' MLP activation, read from the module (quick_gelu configs differ)."""
    from open_clip.transformer import QuickGELU

    activations = {repr(block.mlp.gelu): block.mlp.gelu for block in encoder.tower.transformer.resblocks}
    if len(activations) > 1:
        raise _unsupported(encoder, f"blocks with different MLP activations ({', '.join(activations)})")
    activation = next(iter(activations.values()))
    if isinstance(activation, QuickGELU):
        return "quick_gelu"
    if isinstance(activation, nn.GELU) and activation.approximate == "none":
        return "gelu"
    raise _unsupported(encoder, f"a {activation!r} MLP activation (only GELU and QuickGELU map)")


def _exported_blocks(encoder: ConditioningEncoder) -> int:
    """Blocks the CLIPTextModel keeps: SD 2's conversion drops the last one of a penultimate tower."""
    blocks = len(encoder.tower.transformer.resblocks)
    return blocks - 1 if encoder.config.layer == "penultimate" else blocks


def text_encoder_config(encoder: ConditioningEncoder) -> Any:
    """The CLIPTextConfig whose model computes the encoder's token states."""
    from transformers import CLIPTextConfig

    _check_tower(encoder)
    tower = encoder.tower
    block = tower.transformer.resblocks[0]
    tokenizer = open_clip_tokenizer(encoder)
    return CLIPTextConfig(
        vocab_size=tower.token_embedding.num_embeddings,
        hidden_size=tower.transformer.width,
        intermediate_size=block.mlp.c_fc.out_features,
        num_hidden_layers=_exported_blocks(encoder),
        num_attention_heads=block.attn.num_heads,
        max_position_embeddings=tower.positional_embedding.shape[0],
        hidden_act=_hidden_act(encoder),
        layer_norm_eps=tower.ln_final.eps,
        bos_token_id=tokenizer.sot_token_id,
        eos_token_id=tokenizer.eot_token_id,
        pad_token_id=0,
    )


def text_encoder_keys(encoder: ConditioningEncoder) -> dict[str, str]:
    """CLIPTextModel.text_model key -> open_clip tower key, for the weights copied as they are."""
    keys = {"embeddings.token_embedding.weight": "token_embedding.weight",
            "embeddings.position_embedding.weight": "positional_embedding",
            "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    parts = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(_exported_blocks(encoder)):
        for hf, oc in parts.items():
            for kind in ("weight", "bias"):
                keys[f"encoder.layers.{i}.{hf}.{kind}"] = f"transformer.resblocks.{i}.{oc}.{kind}"
    return keys


def _check_no_extra_keys(encoder: ConditioningEncoder, state: dict[str, torch.Tensor]) -> None:
    blocks = len(encoder.tower.transformer.resblocks)
    read = set(text_encoder_keys(encoder).values()) | UNUSED_TOWER_KEYS
    read |= {f"transformer.resblocks.{i}.attn.in_proj_{kind}" for i in range(blocks) for kind in ("weight", "bias")}
    if encoder.config.layer == "penultimate":  # the dropped last block, unused by the states as well
        read |= {k for k in state if k.startswith(f"transformer.resblocks.{blocks - 1}.")}
    extra = sorted(set(state) - read)
    if extra:
        raise _unsupported(encoder, f"extra weights the mapping does not place ({', '.join(extra[:4])}"
                                    f"{', ...' if len(extra) > 4 else ''})")


def text_encoder_weights(encoder: ConditioningEncoder) -> dict[str, torch.Tensor]:
    """The tower's weights under CLIPTextModel.text_model names, in_proj split into q/k/v."""
    state = encoder.tower.state_dict()
    _check_no_extra_keys(encoder, state)
    weights = {hf: state[oc] for hf, oc in text_encoder_keys(encoder).items()}
    for i in range(_exported_blocks(encoder)):
        for kind in ("weight", "bias"):
            q, k, v = state[f"transformer.resblocks.{i}.attn.in_proj_{kind}"].chunk(3)
            weights |= {f"encoder.layers.{i}.self_attn.{name}_proj.{kind}": t for name, t in zip("qkv", (q, k, v))}
    return weights


def text_encoder(encoder: ConditioningEncoder) -> Any:
    """A transformers CLIPTextModel whose last_hidden_state is the encoder's token states."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_encoder_config(encoder))
    model.text_model.load_state_dict(text_encoder_weights(encoder), strict=True)
    return model.to(encoder.tower.token_embedding.weight.dtype).eval()


# --- the open_clip tokenizer -> transformers CLIPTokenizer ---------------------------------------


def open_clip_tokenizer(encoder: ConditioningEncoder) -> Any:
    """The encoder's tokenizer, if it is the plain SimpleTokenizer a CLIPTokenizer reproduces."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    tokenizer = encoder.tokenizer
    name = encoder.config.model
    if not isinstance(tokenizer, SimpleTokenizer):
        raise ExportError(f"open_clip model {name!r}: its tokenizer is a {type(tokenizer).__name__}; export "
                          f"covers open_clip's SimpleTokenizer (CLIP BPE), which CLIPTokenizer reproduces")
    if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
        raise ExportError(f"open_clip model {name!r}: its tokenizer cleans text other than lower-casing or "
                          f"reduces long prompts (tokenizer_kwargs clean/reduction_mask); CLIPTokenizer "
                          f"lower-cases and truncates only")
    if tokenizer.context_length != encoder.tower.positional_embedding.shape[0]:
        raise ExportError(f"open_clip model {name!r}: tokenizer context {tokenizer.context_length} differs from "
                          f"the tower's {encoder.tower.positional_embedding.shape[0]} positions")
    return tokenizer


def _bpe_merges() -> list[str]:
    """The merges open_clip's SimpleTokenizer reads from its BPE file (its own slice of it)."""
    from open_clip.tokenizer import default_bpe

    return gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]


def _bpe_vocab(merges: list[str]) -> list[str]:
    """SimpleTokenizer's vocabulary in id order: bytes, bytes + </w>, merges, its two special tokens."""
    from open_clip.tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    return symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + list(HF_SPECIAL_TOKENS)


def write_tokenizer_files(encoder: ConditioningEncoder, folder: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt in HF's CLIP format, checked against the encoder's own vocabulary."""
    tokenizer = open_clip_tokenizer(encoder)
    merges = _bpe_merges()
    vocab = {token: i for i, token in enumerate(_bpe_vocab(merges))}
    if vocab != tokenizer.encoder:
        raise ExportError(f"open_clip model {encoder.config.model!r}: its tokenizer's vocabulary is not the one "
                          f"in open_clip's default BPE file (other BPE file or extra special tokens)")
    hf_vocab = {HF_SPECIAL_TOKENS.get(token, token): i for token, i in vocab.items()}
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(hf_vocab, ensure_ascii=False), encoding="utf-8")
    # CLIPTokenizer skips the first line (a version header) and takes the same slice open_clip does.
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def clip_tokenizer(encoder: ConditioningEncoder) -> Any:
    """A CLIPTokenizer giving the encoder's token ids: same BPE, padding with 0, same truncation."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        vocab_file, merges_file = write_tokenizer_files(encoder, Path(scratch))
        # split_special_tokens: "!" is the pad token, and as a special token HF would otherwise cut
        # it out of prompts as id 0 where open_clip reads "!</w>" (256), "!!" (748) and so on.
        return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=PAD_TOKEN,
                             model_max_length=open_clip_tokenizer(encoder).context_length,
                             split_special_tokens=True)


# --- the diffusers pipeline folder -----------------------------------------------------------------


def _require_text_conditioning(folder: Path) -> None:
    """Fail before loading the networks when the model is conditioned on images."""
    path = folder / "conditioning" / ENCODER_CONFIG
    encoder = json.loads(path.read_text()).get("encoder", "text")
    if encoder != "text":
        raise ExportError(f"{path}: encoder {encoder!r}; export covers text-conditioned models (a "
                          f"StableDiffusionPipeline takes prompts)")


def pipeline(model: Model, sampler: str = "dpmpp-2m", karras: bool = True) -> Any:
    """The model as a StableDiffusionPipeline, in memory."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=text_encoder(model.encoder), tokenizer=clip_tokenizer(model.encoder),
        unet=model.unet, scheduler=sample.make_scheduler(model.scheduler_config, sampler, karras),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_pipeline(model: Model, dest: Path, sampler: str = "dpmpp-2m", karras: bool = True,
                  extras: Extras | None = None) -> Path:
    """Write the pipeline folder at `dest`, all at once: built in a `.partial` sibling, then renamed.

    `extras` (given the model folder) names files to write beside the weights: ``cleanroom export``
    hands in the model card and the model license (audit.export), so a model from cleanroom leaves
    with its provenance. They are made before any weights are written, so their errors leave nothing.
    """
    dest = Path(dest)
    if dest.exists():
        raise ExportError(f"{dest}: already exists; remove it or choose another --out")
    files = dict(extras(model.folder)) if extras else {}
    built = pipeline(model, sampler, karras)
    with atomic_folder(dest) as partial:
        built.save_pretrained(partial, safe_serialization=True)
        for name, content in files.items():
            (partial / name).write_bytes(content)
    return dest


def export_diffusers(model_path: Path, dest: Path, sampler: str = "dpmpp-2m", karras: bool = True,
                     extras: Extras | None = None) -> Path:
    """A StableDiffusionPipeline folder at `dest` that ``from_pretrained`` loads offline; returns it."""
    folder = model_folder(model_path)
    _require_text_conditioning(folder)
    return save_pipeline(load(folder), dest, sampler, karras, extras)


# --- the single-file LDM checkpoint ------------------------------------------------------------------


@dataclass
class Renames:
    """diffusers key prefix -> LDM key prefix, with renames of the part after the prefix."""

    prefixes: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def add(self, diffusers: str, ldm: str, inner: dict[str, str] | None = None) -> None:
        self.prefixes[diffusers] = (ldm, inner or {})

    def ldm_key(self, key: str) -> str | None:
        """The LDM name of `key`, or None when no prefix places it."""
        for prefix, (ldm, inner) in self.prefixes.items():
            if key.startswith(prefix + "."):
                rest = key[len(prefix) + 1:]
                for old, new in inner.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
                return f"{ldm}.{rest}"
        return None


def _unet_renames(unet: nn.Module) -> Renames:
    """UNet2DConditionModel -> LDM's UNetModel, for any number of levels and resnets per level.

    LDM numbers input_blocks/output_blocks consecutively: one entry per resnet (attention beside it
    as .1) and one per down/upsampler. Spatial transformers keep their names inside an entry.
    """
    renames = Renames()
    for diffusers, ldm in (("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
                           ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2")):
        renames.add(diffusers, ldm)
    index = 1
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            renames.add(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{index}.0", RESNET_LDM)
            renames.add(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{index}.1")
            index += 1
        if block.downsamplers:
            renames.add(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{index}.0.op")
            index += 1
    if unet.mid_block is not None:
        for j in range(len(unet.mid_block.resnets)):
            renames.add(f"mid_block.resnets.{j}", f"middle_block.{2 * j}", RESNET_LDM)
            renames.add(f"mid_block.attentions.{j}", f"middle_block.{2 * j + 1}")
    index = 0
    for i, block in enumerate(unet.up_blocks):
        attentions = hasattr(block, "attentions")
        for j in range(len(block.resnets)):
            renames.add(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{index}.0", RESNET_LDM)
            renames.add(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{index}.1")
            index += 1
        if block.upsamplers:  # in the level's last entry, after its resnet and attention
            renames.add(f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{index - 1}.{2 if attentions else 1}.conv")
    return renames


def _vae_renames(vae: nn.Module) -> Renames:
    """AutoencoderKL -> LDM's AutoencoderKL; LDM numbers decoder levels from the bottom, diffusers from the top."""
    renames = Renames()
    for coder in ("encoder", "decoder"):
        for diffusers, ldm in (("conv_in", "conv_in"), ("conv_out", "conv_out"), ("conv_norm_out", "norm_out")):
            renames.add(f"{coder}.{diffusers}", f"{coder}.{ldm}")
        mid = getattr(vae, coder).mid_block
        for j in range(len(mid.resnets)):
            renames.add(f"{coder}.mid_block.resnets.{j}", f"{coder}.mid.block_{j + 1}", VAE_RESNET_LDM)
        renames.add(f"{coder}.mid_block.attentions.0", f"{coder}.mid.attn_1", VAE_ATTENTION_LDM)
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            renames.add(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", VAE_RESNET_LDM)
        renames.add(f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample")
    levels = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        level = levels - 1 - i
        for j in range(len(block.resnets)):
            renames.add(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}", VAE_RESNET_LDM)
        renames.add(f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{level}.upsample")
    renames.add("quant_conv", "quant_conv")
    renames.add("post_quant_conv", "post_quant_conv")
    return renames


def _renamed(network: nn.Module, renames: Renames, prefix: str, what: str) -> dict[str, torch.Tensor]:
    """The network's weights under LDM names; every weight must have a place."""
    out, unplaced = {}, []
    for key, tensor in network.state_dict().items():
        ldm = renames.ldm_key(key)
        if ldm is None:
            unplaced.append(key)
        else:
            out[prefix + ldm] = tensor
    if unplaced:
        raise ExportError(f"{what}: {len(unplaced)} weights have no place in the LDM layout (e.g. "
                          f"{', '.join(unplaced[:3])}); the single file covers SD-style UNets and autoencoders")
    return out


def _vae_ldm_weights(vae: nn.Module) -> dict[str, torch.Tensor]:
    """LDM's mid-block attention projects with 1x1 convolutions where diffusers uses linear layers."""
    weights = _renamed(vae, _vae_renames(vae), LDM_VAE, "autoencoder")
    return {k: v[:, :, None, None] if ".mid.attn_1." in k and v.ndim == 2 else v for k, v in weights.items()}


def ldm_state_dict(model: Model) -> dict[str, torch.Tensor]:
    """UNet, autoencoder and open_clip tower under the names of an SD 2 checkpoint."""
    _check_tower(model.encoder)
    text = {LDM_TEXT + k: v for k, v in model.encoder.tower.state_dict().items()}
    state = _renamed(model.unet, _unet_renames(model.unet), LDM_UNET, "unet") | _vae_ldm_weights(model.vae) | text
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def single_file_metadata(model: Model) -> dict[str, str]:
    """Provenance strings, and what an LDM yaml would have to say (its scale factor, its text layer)."""
    encoder = model.encoder.config
    return {"format": "pt", "cleanroom.model": model.name, "cleanroom.layout": "ldm-stable-diffusion-2",
            "cleanroom.conditioning": f"open_clip {encoder.model}, {encoder.layer} layer",
            "cleanroom.vae_scaling_factor": str(model.vae.config.scaling_factor),
            "cleanroom.prediction_type": str(model.scheduler_config.get("prediction_type", "epsilon"))}


def _warn_if_diffusers_skips_block_23(encoder: ConditioningEncoder) -> None:
    """diffusers' from_single_file never reads cond_stage_model.model.transformer.resblocks.23 (its SD 2 list of
    OpenCLIP-H's unused last block), so a text encoder that uses a 24th block loads without it."""
    if _exported_blocks(encoder) > 23:
        log.warning("the text encoder uses block 23, which diffusers' from_single_file skips (it takes it for "
                    "OpenCLIP-H's unused last block): load the single file with text_encoder="
                    "CLIPTextModel.from_pretrained(PIPELINE_FOLDER, subfolder='text_encoder')")


def write_single_file(model: Model, path: Path) -> Path:
    """The single-file LDM checkpoint at `path` (.safetensors), written to a temporary file then renamed."""
    from safetensors.torch import save_file

    state = ldm_state_dict(model)
    _warn_if_diffusers_skips_block_23(model.encoder)
    with atomic_path(Path(path)) as tmp:
        save_file(state, tmp, metadata=single_file_metadata(model))
    return Path(path)


# --- the whole export ------------------------------------------------------------------------------------


def export(model_path: Path, out: Path, sampler: str = "dpmpp-2m", karras: bool = True,
           single_file: Path | None = None, extras: Extras | None = None) -> dict[str, Any]:
    """The pipeline folder at `out` and the single file (default: OUT/<model name>.safetensors); a summary.

    What ``cleanroom export`` does (its command is audit.export's, which hands in the model card as `extras`).
    """
    folder = model_folder(Path(model_path))
    _require_text_conditioning(folder)
    model = load(folder)
    out = save_pipeline(model, Path(out), sampler, karras, extras)
    single = Path(single_file) if single_file else out / f"{model.name}.safetensors"
    write_single_file(model, single)
    return {"model": str(folder), "pipeline": str(out), "single_file": str(single),
            "sampler": sample.sampler_label(sampler, karras), "text_encoder_layers": _exported_blocks(model.encoder)}
