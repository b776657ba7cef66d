"""A trained model as a diffusers pipeline folder and a single-file LDM checkpoint with its YAML.

``cleanroom export MODEL --out DIR`` (`export`; the command is audit.export's) writes::

    DIR/model_index.json     StableDiffusionPipeline (text conditioning) or
                             StableDiffusionImageVariationPipeline (image conditioning); no safety checker
    DIR/unet/, DIR/vae/      the trained UNet and its frozen autoencoder, as trained
    DIR/text_encoder/        transformers CLIPTextModel converted from the open_clip text tower, and
    DIR/tokenizer/           CLIPTokenizer built from open_clip's own BPE file; or, for image conditioning,
    DIR/image_encoder/       CLIPVisionModelWithProjection converted from the open_clip image tower, and
    DIR/feature_extractor/   the CLIPImageProcessor the sampler prepares reference images with
    DIR/scheduler/           the chosen sampler on the training noise schedule
    DIR/<name>.safetensors   (default --single-file) the original LDM / Stable Diffusion 2 layout, and
    DIR/<name>.yaml          its original-layout config beside it (LatentDiffusion, real scale factor)
    DIR/MODEL_CARD.md        (unless --no-card) from the catalogs of the training shards, its sample
    DIR/samples.png          grid, and the model license: files a caller hands in (`extras`); the command
    DIR/LICENSE.md           is audit.export's, which reads the curation runs for them (audit.card)

The text tower is converted the way diffusers converted SD 2's OpenCLIP-H: a "penultimate"
tower keeps all but its last block, and CLIPTextModel's ``last_hidden_state`` (final layer
norm applied) is then exactly what the UNet was trained on. The image tower maps onto
CLIPVisionModelWithProjection weight for weight (class token, pre/post LayerNorm, the
projection transposed into a Linear), so ``image_embeds`` is open_clip's ``encode_image``.
Towers these mappings do not cover (LayerScale, bidirectional attention, a cls token on text,
other norms or pooling, ResNet or timm image towers, extra weights, Hugging Face text towers)
are refused, naming what is unsupported.

The tokenizer gives open_clip's ids for every prompt except two corners of HF's CLIPTokenizer:
it unescapes HTML entities once (ftfy) where open_clip does it twice more, and it reads the
literal strings ``<|startoftext|>``/``<|endoftext|>`` (rather than open_clip's
``<start_of_text>``/``<end_of_text>``) in a prompt as the special tokens.

The single file holds ``model.diffusion_model.*`` (UNet in LDM names), ``first_stage_model.*``
(autoencoder in LDM names) and ``cond_stage_model.model.*`` (the open_clip tower's own state
dict: the text tower with all its blocks, as SD 2 checkpoints hold it, or the image tower under
``.visual``): what A1111, ComfyUI and diffusers' ``from_single_file`` read, with
``from_single_file(..., config=DIR)`` or the YAML beside it. Its bytes depend on the weights
only (`safetensors_chunks`), so `single_file_sha256` knows its hash without writing it: the
PNGs of ``cleanroom sample`` carry the short hash A1111 shows for the exported file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.io import atomic_folder, atomic_path, write_text_atomic
from train import sample
from train.generate import Model, clip_image_processor, load, model_folder
from train.models import ConditioningEncoder

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
    tower, model = (("text", "CLIPTextModel") if encoder.config.encoder == "text"
                    else ("image", "CLIPVisionModelWithProjection"))
    return ExportError(f"open_clip model {encoder.config.model!r}: its {tower} tower has {feature}, which a "
                       f"transformers {model} cannot express; export covers towers laid out like "
                       f"OpenAI CLIP / OpenCLIP-H (SD 2)")


def _transformer(encoder: ConditioningEncoder) -> nn.Module:
    """The open_clip Transformer whose blocks the conditioning runs: the text tower's or the image tower's."""
    return encoder.tower.transformer if encoder.config.encoder == "text" else encoder.clip.visual.transformer


def _check_blocks(encoder: ConditioningEncoder) -> None:
    from open_clip.transformer import ResidualAttentionBlock

    for i, block in enumerate(_transformer(encoder).resblocks):
        if not isinstance(block, ResidualAttentionBlock):
            raise _unsupported(encoder, f"custom blocks ({type(block).__name__} at block {i}: qk-norm, scaled "
                                        f"cosine attention or head scaling)")
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            raise _unsupported(encoder, f"LayerScale (block {i}, ls_init_value set)")
        if hasattr(block, "ln_1_kv"):
            raise _unsupported(encoder, f"cross-attention (block {i})")
        if not block.attn._qkv_same_embed_dim or block.attn.in_proj_bias is None:
            raise _unsupported(encoder, f"attention without a packed, biased q/k/v projection (block {i})")


def _check_norms(encoder: ConditioningEncoder, norms: list[nn.Module]) -> None:
    odd = next((m for m in norms if not isinstance(m, nn.LayerNorm) or m.weight is None or m.bias is None), None)
    if odd is not None:
        raise _unsupported(encoder, f"{type(odd).__name__} norms (not an affine LayerNorm with bias)")
    if len({m.eps for m in norms}) > 1:
        raise _unsupported(encoder, f"LayerNorms with different eps ({sorted({m.eps for m in norms})})")


def _check_tower(encoder: ConditioningEncoder) -> None:
    """Refuse, naming the feature, any tower whose token states the CLIPTextModel mapping would change."""
    from open_clip.transformer import Transformer

    if encoder.config.encoder != "text":
        raise ExportError(f"conditioning encoder {encoder.config.encoder!r} (open_clip {encoder.config.model}): "
                          f"a text encoder is exported for text-conditioned models only")
    tower = encoder.tower
    if not isinstance(getattr(tower, "transformer", None), Transformer):
        raise _unsupported(encoder, f"a {type(tower).__name__} transformer (a Hugging Face text tower)")
    if getattr(tower, "cls_emb", None) is not None:
        raise _unsupported(encoder, "a cls embedding (embed_cls)")
    if tower.attn_mask is None:
        raise _unsupported(encoder, "no causal mask (no_causal_mask: bidirectional attention)")
    _check_blocks(encoder)
    _check_norms(encoder, [m for block in tower.transformer.resblocks for m in (block.ln_1, block.ln_2)]
                 + [tower.ln_final])
    if encoder.config.layer == "penultimate" and len(tower.transformer.resblocks) < 2:
        raise _unsupported(encoder, "a single block, so no penultimate layer")


def _hidden_act(encoder: ConditioningEncoder) -> str:
    """transformers' name for the blocks' MLP activation, read from the module (quick_gelu configs differ)."""
    from open_clip.transformer import QuickGELU

    activations = {repr(block.mlp.gelu): block.mlp.gelu for block in _transformer(encoder).resblocks}
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
    return keys | _block_keys(_exported_blocks(encoder))


def _block_keys(blocks: int) -> dict[str, str]:
    """CLIPEncoder layer key -> open_clip Transformer block key, all but the packed q/k/v projection."""
    parts = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    return {f"encoder.layers.{i}.{hf}.{kind}": f"transformer.resblocks.{i}.{oc}.{kind}"
            for i in range(blocks) for hf, oc in parts.items() for kind in ("weight", "bias")}


def _qkv_weights(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """open_clip's packed in_proj of each block, split into CLIPAttention's q/k/v projections."""
    weights = {}
    for i in range(blocks):
        for kind in ("weight", "bias"):
            q, k, v = state[f"transformer.resblocks.{i}.attn.in_proj_{kind}"].chunk(3)
            weights |= {f"encoder.layers.{i}.self_attn.{name}_proj.{kind}": t for name, t in zip("qkv", (q, k, v))}
    return weights


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
    return weights | _qkv_weights(state, _exported_blocks(encoder))


def text_encoder(encoder: ConditioningEncoder) -> Any:
    """A transformers CLIPTextModel whose last_hidden_state is the encoder's token states."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_encoder_config(encoder))
    model.text_model.load_state_dict(text_encoder_weights(encoder), strict=True)
    return model.to(encoder.tower.token_embedding.weight.dtype).eval()


# --- the open_clip image tower -> transformers CLIPVisionModelWithProjection ------------------------------


def _check_vision_tower(encoder: ConditioningEncoder) -> None:
    """Refuse, naming the feature, any image tower whose projected embedding the CLIPVision mapping would change:
    CLIPVisionModelWithProjection is a ViT with a class token, pre- and post-LayerNorm, the class token pooled
    after the post-norm and a bias-free projection; ResNet and timm towers, attentional or average pooling and
    LayerScale have no counterpart there."""
    from open_clip.transformer import Transformer, VisionTransformer

    visual = encoder.clip.visual
    if not isinstance(visual, VisionTransformer):
        raise _unsupported(encoder, f"a {type(visual).__name__} (not a ViT: a ResNet or timm tower)")
    if not isinstance(visual.transformer, Transformer):
        raise _unsupported(encoder, f"a {type(visual.transformer).__name__} transformer")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise _unsupported(encoder, f"{visual.pool_type!r} pooling (attentional pooling, average pooling or the "
                                    f"norm after pooling; CLIPVision pools the class token after ln_post)")
    if visual.proj is None:
        raise _unsupported(encoder, "no projection (output_dim without proj)")
    if visual.conv1.bias is not None:
        raise _unsupported(encoder, "a patch embedding with bias")
    height, width = encoder.image_size
    patch = visual.conv1.kernel_size
    if height != width or patch[0] != patch[1] or tuple(visual.conv1.stride) != tuple(patch):
        raise _unsupported(encoder, f"a {height}x{width} input or {patch[0]}x{patch[1]} patches (not square)")
    _check_blocks(encoder)
    _check_norms(encoder, [visual.ln_pre, visual.ln_post]
                 + [m for block in visual.transformer.resblocks for m in (block.ln_1, block.ln_2)])


def image_encoder_config(encoder: ConditioningEncoder) -> Any:
    """The CLIPVisionConfig whose model computes the encoder's image embedding."""
    from transformers import CLIPVisionConfig

    _check_vision_tower(encoder)
    visual = encoder.clip.visual
    block = visual.transformer.resblocks[0]
    return CLIPVisionConfig(
        hidden_size=visual.transformer.width,
        intermediate_size=block.mlp.c_fc.out_features,
        projection_dim=visual.proj.shape[1],
        num_hidden_layers=len(visual.transformer.resblocks),
        num_attention_heads=block.attn.num_heads,
        num_channels=visual.conv1.in_channels,
        image_size=encoder.image_size[0],
        patch_size=visual.conv1.kernel_size[0],
        hidden_act=_hidden_act(encoder),
        layer_norm_eps=visual.ln_post.eps,
    )


def image_encoder_weights(encoder: ConditioningEncoder) -> dict[str, torch.Tensor]:
    """The image tower's weights under CLIPVisionModelWithProjection names; every weight must have a place."""
    state = encoder.clip.visual.state_dict()
    blocks = len(encoder.clip.visual.transformer.resblocks)
    keys = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
            "embeddings.position_embedding.weight": "positional_embedding",
            "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",  # transformers' spelling
            "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias"} | _block_keys(blocks)
    read = set(keys.values()) | {"proj"}
    read |= {f"transformer.resblocks.{i}.attn.in_proj_{kind}" for i in range(blocks) for kind in ("weight", "bias")}
    extra = sorted(set(state) - read)
    if extra:
        raise _unsupported(encoder, f"extra weights the mapping does not place ({', '.join(extra[:4])}"
                                    f"{', ...' if len(extra) > 4 else ''})")
    weights = {f"vision_model.{hf}": state[oc] for hf, oc in keys.items()}
    weights |= {f"vision_model.{k}": v for k, v in _qkv_weights(state, blocks).items()}
    # open_clip projects as x @ proj; a Linear computes x @ weight.T
    return weights | {"visual_projection.weight": state["proj"].t().contiguous()}


def image_encoder(encoder: ConditioningEncoder) -> Any:
    """A transformers CLIPVisionModelWithProjection whose image_embeds is the encoder's image embedding."""
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(image_encoder_config(encoder))
    model.load_state_dict(image_encoder_weights(encoder), strict=True)
    return model.to(encoder.mean.dtype).eval()


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


def pipeline(model: Model, sampler: str = "dpmpp-2m", karras: bool = True) -> Any:
    """The model as a StableDiffusionPipeline (text conditioning) or a StableDiffusionImageVariationPipeline
    (image conditioning), in memory."""
    from diffusers import StableDiffusionImageVariationPipeline, StableDiffusionPipeline

    scheduler = sample.make_scheduler(model.scheduler_config, sampler, karras)
    if model.encoder.config.encoder == "image":
        return StableDiffusionImageVariationPipeline(
            vae=model.vae, image_encoder=image_encoder(model.encoder), unet=model.unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=clip_image_processor(model.encoder), requires_safety_checker=False)
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=text_encoder(model.encoder), tokenizer=clip_tokenizer(model.encoder),
        unet=model.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


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
    return save_pipeline(load(model_folder(model_path)), dest, sampler, karras, extras)


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


def _cond_stage_weights(encoder: ConditioningEncoder) -> dict[str, torch.Tensor]:
    """The open_clip tower's own state dict under cond_stage_model.model: the text tower, all its blocks, as SD 2
    checkpoints hold it; or the image tower under .visual, as image-embedding embedders hold a CLIP's."""
    if encoder.config.encoder == "image":
        _check_vision_tower(encoder)
        return {f"{LDM_TEXT}visual.{k}": v for k, v in encoder.clip.visual.state_dict().items()}
    _check_tower(encoder)
    return {LDM_TEXT + k: v for k, v in encoder.tower.state_dict().items()}


def ldm_state_dict(model: Model) -> dict[str, torch.Tensor]:
    """UNet, autoencoder and open_clip tower under the names of an SD 2 checkpoint."""
    state = (_renamed(model.unet, _unet_renames(model.unet), LDM_UNET, "unet") | _vae_ldm_weights(model.vae)
             | _cond_stage_weights(model.encoder))
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def single_file_metadata(model: Model) -> dict[str, str]:
    """Provenance strings, and what the LDM yaml beside the file says (its scale factor, its conditioning)."""
    encoder = model.encoder.config
    conditioning = (f"open_clip {encoder.model}, image embedding" if encoder.encoder == "image"
                    else f"open_clip {encoder.model}, {encoder.layer} layer")
    return {"format": "pt", "cleanroom.model": model.name, "cleanroom.layout": "ldm-stable-diffusion-2",
            "cleanroom.conditioning": conditioning,
            "cleanroom.vae_scaling_factor": str(model.vae.config.scaling_factor),
            "cleanroom.prediction_type": str(model.scheduler_config.get("prediction_type", "epsilon"))}


def _warn_if_diffusers_skips_block_23(encoder: ConditioningEncoder) -> None:
    """diffusers' from_single_file never reads cond_stage_model.model.transformer.resblocks.23 (its SD 2 list of
    OpenCLIP-H's unused last block), so a text encoder that uses a 24th block loads without it."""
    if encoder.config.encoder == "text" and _exported_blocks(encoder) > 23:
        log.warning("the text encoder uses block 23, which diffusers' from_single_file skips (it takes it for "
                    "OpenCLIP-H's unused last block): load the single file with text_encoder="
                    "CLIPTextModel.from_pretrained(PIPELINE_FOLDER, subfolder='text_encoder')")


SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors_chunks(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Iterator[bytes]:
    """A .safetensors file of `state`, as byte chunks: the same bytes for the same weights, every time.

    safetensors' own writer orders ``__metadata__`` by a hash map seeded per process, so two writes of one
    model differ, and so would the sha256 that A1111 names a checkpoint by. Here the metadata is sorted and
    the tensors laid out as safetensors lays them out (widest dtype first, then by name: each one aligned);
    chunks are one tensor each, so the whole file is never in memory.
    """
    order = sorted(state, key=lambda k: (-state[k].element_size(), k))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name in order:
        tensor = state[name]
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ExportError(f"weight {name}: dtype {tensor.dtype} has no safetensors name")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads its header
    yield struct.pack("<Q", len(text)) + text
    for name in order:
        tensor = state[name].detach().cpu().contiguous().reshape(-1)  # a 0-d tensor has no byte view
        yield tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _single_file_model(model: Model) -> Model:
    """The model as `export` loads it (fp32 on the CPU): a model sampled in fp16 hashes the file export writes."""
    return model if model.dtype == torch.float32 else load(model.folder)


def single_file_sha256(model: Model) -> str:
    """sha256 of the single file `write_single_file` writes for this model, computed without writing it."""
    model = _single_file_model(model)
    digest = hashlib.sha256()
    for chunk in safetensors_chunks(ldm_state_dict(model), single_file_metadata(model)):
        digest.update(chunk)
    return digest.hexdigest()


def a1111_hashes(path: Path) -> dict[str, str]:
    """The hashes AUTOMATIC1111's web UI gives a checkpoint file (modules/hashes.py, sd_models.py): "sha256" over
    the whole file, its first 10 hex digits the short hash written as "Model hash" in PNGs, and the old
    "model hash": sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits."""
    whole = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            whole.update(block)
        f.seek(0x100000)
        old = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    return {"sha256": whole.hexdigest(), "short_hash": whole.hexdigest()[:10], "old_hash": old}


def write_single_file(model: Model, path: Path) -> Path:
    """The single-file LDM checkpoint at `path` (.safetensors), written to a temporary file then renamed."""
    model = _single_file_model(model)
    chunks = safetensors_chunks(ldm_state_dict(model), single_file_metadata(model))
    _warn_if_diffusers_skips_block_23(model.encoder)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    return Path(path)


# --- the original-layout config beside the single file -------------------------------------------------

# diffusers' beta_schedule -> LDM's name for the same betas (LDM's "linear" is linear in sqrt(beta)).
LDM_BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "cosine"}


def _ldm_unet_params(unet: nn.Module) -> dict[str, Any]:
    """LDM UNetModel params that build the UNet the single file's model.diffusion_model weights fit."""
    config = unet.config
    channels = list(config.block_out_channels)
    if any(c % channels[0] for c in channels):
        raise ExportError(f"unet: block_out_channels {channels} are not multiples of the first, so LDM's "
                          f"channel_mult cannot express them")
    heads = config.num_attention_heads or config.attention_head_dim  # diffusers names heads attention_head_dim
    params: dict[str, Any] = {
        "image_size": config.sample_size, "in_channels": config.in_channels, "out_channels": config.out_channels,
        "model_channels": channels[0],
        "attention_resolutions": [2 ** i for i, kind in enumerate(config.down_block_types) if "CrossAttn" in kind],
        "num_res_blocks": config.layers_per_block, "channel_mult": [c // channels[0] for c in channels]}
    if isinstance(heads, int):
        params["num_heads"] = heads
    else:  # heads per level: LDM sets a width per head instead, the same at every level
        widths = {c // h for c, h in zip(channels, heads)}
        if len(widths) > 1:
            raise ExportError(f"unet: attention heads {list(heads)} give heads of different widths per level; "
                              f"LDM takes one num_heads or one num_head_channels")
        params["num_head_channels"] = widths.pop()
    depth = config.transformer_layers_per_block
    return params | {"use_spatial_transformer": True,
                     "transformer_depth": depth if isinstance(depth, int) else list(depth),
                     "context_dim": config.cross_attention_dim,
                     "use_linear_in_transformer": config.use_linear_projection, "use_checkpoint": False,
                     "legacy": False}


def _ldm_autoencoder_params(vae: nn.Module) -> dict[str, Any]:
    config = vae.config
    channels = list(config.block_out_channels)
    return {"embed_dim": config.latent_channels, "monitor": "val/rec_loss",
            "ddconfig": {"double_z": True, "z_channels": config.latent_channels, "resolution": config.sample_size,
                         "in_channels": config.in_channels, "out_ch": config.out_channels, "ch": channels[0],
                         "ch_mult": [c // channels[0] for c in channels], "num_res_blocks": config.layers_per_block,
                         "attn_resolutions": [], "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"}}


def _ldm_cond_stage(encoder: ConditioningEncoder) -> dict[str, Any]:
    """The embedder of the original repositories that computes the encoder's states from the single file's
    cond_stage_model weights; `version` is the open_clip pretrained tag, null for local or random weights."""
    import open_clip

    config = encoder.config
    tags = open_clip.list_pretrained_tags_by_model(config.model)
    params = {"arch": config.model, "version": config.pretrained if config.pretrained in tags else None,
              "freeze": True}
    if config.encoder == "image":
        return {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPImageEmbedder", "params": params | {
            "layer": "pooled"}}
    return {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder", "params": params | {
        "layer": config.layer}}


def original_config(model: Model) -> dict[str, Any]:
    """The single file's original-layout config (the shape of SD's v1-inference.yaml / v2-inference.yaml): what
    A1111 reads from the .yaml beside a checkpoint, and diffusers' from_single_file(original_config=...)."""
    schedule = model.scheduler_config
    beta_schedule = schedule.get("beta_schedule", "scaled_linear")
    if beta_schedule not in LDM_BETA_SCHEDULES:
        raise ExportError(f"scheduler: beta_schedule {beta_schedule!r} has no LDM name "
                          f"(known: {', '.join(LDM_BETA_SCHEDULES)})")
    image = model.encoder.config.encoder == "image"
    params = {
        "linear_start": schedule.get("beta_start", 0.0001), "linear_end": schedule.get("beta_end", 0.02),
        "beta_schedule": LDM_BETA_SCHEDULES[beta_schedule], "timesteps": schedule.get("num_train_timesteps", 1000),
        "parameterization": "v" if schedule.get("prediction_type") == "v_prediction" else "eps",
        "num_timesteps_cond": 1, "log_every_t": 200, "first_stage_key": "jpg",
        "cond_stage_key": "jpg" if image else "txt",
        "image_size": model.resolution // model.vae_scale_factor, "channels": model.vae.config.latent_channels,
        "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
        "scale_factor": float(model.vae.config.scaling_factor), "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                        "params": _ldm_unet_params(model.unet)},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL",
                               "params": _ldm_autoencoder_params(model.vae)},
        "cond_stage_config": _ldm_cond_stage(model.encoder),
    }
    return {"model": {"base_learning_rate": model.config.diffusion.optim.lr,
                      "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


def _norm_groups_warning(model: Model) -> str | None:
    """LDM's UNet and autoencoder normalise in 32 groups, a number no config sets: other group counts load but
    compute other images there."""
    groups = {part: getattr(model, part).config.norm_num_groups for part in ("unet", "vae")}
    odd = {part: n for part, n in groups.items() if n != 32}
    if not odd:
        return None
    return (f"norm_num_groups {', '.join(f'{part} {n}' for part, n in odd.items())}: LDM code normalises in 32 "
            f"groups, so the original repositories (and A1111) compute other images from this file; diffusers "
            f"with config=PIPELINE_FOLDER computes the trained model")


def write_original_config(model: Model, path: Path) -> Path:
    """The original-layout YAML at `path` (A1111 reads NAME.yaml beside NAME.safetensors)."""
    import yaml

    warning = _norm_groups_warning(model)
    if warning:
        log.warning("%s: %s", path, warning)
    note = f"# {warning}\n" if warning else ""
    write_text_atomic(note + yaml.safe_dump(original_config(model), sort_keys=False), Path(path))
    return Path(path)


# --- the whole export ------------------------------------------------------------------------------------


def export(model_path: Path, out: Path, sampler: str = "dpmpp-2m", karras: bool = True,
           single_file: Path | None = None, extras: Extras | None = None) -> dict[str, Any]:
    """The pipeline folder at `out`, the single file (default: OUT/<model name>.safetensors) with its original-
    layout YAML beside it (same name, .yaml); a summary with the file's A1111 hashes.

    What ``cleanroom export`` does (its command is audit.export's, which hands in the model card as `extras`).
    """
    folder = model_folder(Path(model_path))
    model = load(folder)
    original_config(model)  # refuses what LDM cannot express before anything is written
    out = save_pipeline(model, Path(out), sampler, karras, extras)
    single = Path(single_file) if single_file else out / f"{model.name}.safetensors"
    write_single_file(model, single)
    yaml_path = write_original_config(model, single.with_suffix(".yaml"))
    layers = {"text_encoder_layers": _exported_blocks(model.encoder)} if model.encoder.config.encoder == "text" \
        else {"image_encoder_layers": len(model.encoder.clip.visual.transformer.resblocks)}
    return {"model": str(folder), "pipeline": str(out), "single_file": str(single), "original_config": str(yaml_path),
            "sampler": sample.sampler_label(sampler, karras), **layers, "a1111": a1111_hashes(single)}
