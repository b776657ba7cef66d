"""``cleanroom compare-weights A B [--depth N] [--json PATH]``: how alike two models' weights are.

Per module of the UNet and the VAE, the cosine similarity of the two sides' concatenated,
flattened weights, as the Mitsua Diffusion One model card reports against Stable Diffusion
to show a model was trained from scratch: independently initialised and trained weights give
cosines near 0, a fine-tune of the other model cosines near 1.

The module cosine is taken over tensors with 2 or more dimensions (convolutions, linear
layers, embeddings). 1-D tensors (biases, GroupNorm/LayerNorm scales and shifts) are
reported apart: norm scales start at 1 and shifts at 0 in every model, so two unrelated
models look alike there. Tensors whose shapes differ or that one side lacks are listed by
name, and a component only one side has is stated.

A and B may each be:

* a diffusers pipeline folder (``unet/``, ``vae/`` with config.json and weights), such as
  our model folders (``OUT/diffusion/final``) or a downloaded Stable Diffusion;
* a training run folder holding ``diffusion/final`` (`train.generate.model_folder`);
* one diffusers component folder (config.json + weights), a UNet or VAE by its ``_class_name``;
* one of our training checkpoints (``checkpoints/step-N/`` or its ``model.safetensors``:
  UNet keys as they are, the autoencoder's under ``vae.``) or another weights file. A
  checkpoint holds the trained weights, ``final/`` the EMA ones where EMA was on;
* an original-LDM single file (``model.diffusion_model.*`` / ``first_stage_model.*`` keys, as
  SD v1.5 ships), renamed with diffusers' own single-file converters (their non-EMA weights
  where a file holds both). Those need the component's diffusers config, taken from the other
  side, which must then be a diffusers folder of the same architecture.

Weights are read tensor by tensor (safetensors lazily, pickles memory-mapped); no model is built.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from curate.io import write_text_atomic

COMPONENTS = ("unet", "vae")
CLASSES = {"UNet2DConditionModel": "unet", "AutoencoderKL": "vae"}
WEIGHTS = "diffusion_pytorch_model"
CHECKPOINT_WEIGHTS = "model.safetensors"  # accelerate's save_state, see train.loop
# Encoder and decoder hold the VAE's real top-level blocks, so they do not count as a level.
CONTAINERS = {"vae": ("encoder", "decoder")}
FLOW = {name: rank for rank, name in enumerate((
    "conv_in", "time_embedding", "class_embedding", "add_embedding", "encoder", "down_blocks", "mid_block",
    "quant_conv", "post_quant_conv", "decoder", "up_blocks", "conv_norm_out", "conv_out"))}
# (component, naming) -> (prefixes tried in order, a key only that naming has)
SIGNATURES = {
    ("unet", "diffusers"): (("", "unet."), "time_embedding.linear_1.weight"),
    ("vae", "diffusers"): (("", "vae."), "encoder.down_blocks.0.resnets.0.conv1.weight"),
    ("unet", "ldm"): (("model.diffusion_model.",), "time_embed.0.weight"),
    ("vae", "ldm"): (("first_stage_model.", "vae.", ""), "encoder.down.0.block.0.conv1.weight"),
}
EXPECTED = ("a diffusers pipeline folder (unet/, vae/ with config.json and weights), a training run holding "
            "diffusion/final, a diffusers UNet or VAE folder (config.json + diffusion_pytorch_model.safetensors "
            "or .bin), a training checkpoint folder (model.safetensors), or a .safetensors/.ckpt/.bin weights file")
NOTE = ("cosine: over tensors with 2 or more dimensions (convolutions, linear layers, embeddings). "
        "1-D tensors (biases, norm scales and shifts) are shown apart: norms start at scale 1 and shift 0 in "
        "every model, so unrelated models look alike there.")


@dataclass(frozen=True)
class TensorRef:
    """A tensor in a file, read only when compared."""

    read: Callable[[], torch.Tensor]
    shape: tuple[int, ...]
    indices: tuple[Any, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> TensorRef:
        # diffusers' LDM converters slice 1x1-conv attention weights down to linear ones
        shape = tuple(torch.empty(self.shape, device="meta")[index].shape)
        return replace(self, shape=shape, indices=self.indices + (index,))

    def load(self) -> torch.Tensor:
        tensor = self.read()
        for index in self.indices:
            tensor = tensor[index]
        return tensor


Tensors = dict[str, TensorRef]


@dataclass
class Component:
    tensors: Tensors
    config: dict[str, Any] | None  # the diffusers config.json, when the source has one


@dataclass
class Source:
    path: Path
    kind: str
    components: dict[str, Component] = field(default_factory=dict)
    ldm: dict[str, Tensors] = field(default_factory=dict)  # original-LDM names, converted with the other side


# ---- reading sources ----

def _read_safetensors(path: Path) -> Tensors:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")  # kept open by the references' closures
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable .safetensors file ({e})") from e
    return {key: TensorRef(lambda key=key: handle.get_tensor(key), tuple(handle.get_slice(key).get_shape()))
            for key in handle.keys()}


def _unpickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_pickle(path: Path) -> Tensors:
    try:
        state = _unpickle(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        # weights_only never runs code from the file: it refuses objects other than tensors and containers
        raise ValueError(f"{path}: not readable as plain tensors by torch.load(weights_only=True): not a "
                         f"checkpoint, or one pickling other objects; convert it to .safetensors") from e
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return {key: TensorRef(lambda value=value: value, tuple(value.shape))
            for key, value in state.items() if isinstance(value, torch.Tensor)}


def read_weights(path: Path) -> Tensors:
    tensors = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    return tensors


def _component_folder(path: Path) -> tuple[str, Component]:
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    class_name = config.get("_class_name")
    if class_name not in CLASSES:
        raise ValueError(f"{config_path}: _class_name {class_name!r} is none of {', '.join(CLASSES)}")
    return CLASSES[class_name], Component(read_weights(_weights_file(path)), config)


def _weights_file(folder: Path) -> Path:
    """The standard weights file, else the only variant (e.g. diffusion_pytorch_model.fp16.safetensors)."""
    for suffix in (".safetensors", ".bin"):
        if (folder / f"{WEIGHTS}{suffix}").is_file():
            return folder / f"{WEIGHTS}{suffix}"
    variants = sorted(p for suffix in (".safetensors", ".bin") for p in folder.glob(f"{WEIGHTS}.*{suffix}"))
    if len(variants) == 1:
        return variants[0]
    found = f"several variants ({', '.join(p.name for p in variants)})" if variants else "none"
    raise FileNotFoundError(f"{folder}: expected one weights file beside config.json ({WEIGHTS}.safetensors or "
                            f".bin; sharded weights are not supported), found {found}")


def _split(tensors: Tensors) -> tuple[dict[str, Tensors], dict[str, Tensors]]:
    """The UNet and VAE tensors of a weights file by naming: (diffusers names, original-LDM names)."""
    found: dict[str, dict[str, Tensors]] = {"diffusers": {}, "ldm": {}}
    for (component, naming), (prefixes, marker) in SIGNATURES.items():
        for prefix in prefixes:
            if prefix + marker in tensors:
                found[naming][component] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                break
    return found["diffusers"], found["ldm"]


def _file_source(path: Path, kind: str) -> Source:
    diffusers, ldm = _split(read_weights(path))
    if not diffusers and not ldm:
        raise ValueError(f"{path}: no UNet or VAE weights recognised (expected diffusers names such as "
                         f"time_embedding.linear_1.weight or encoder.down_blocks.0..., our checkpoints' vae.*, or "
                         f"original-LDM model.diffusion_model.* / first_stage_model.*)")
    if ldm:
        kind = "original-LDM single file"
    return Source(path, kind, {name: Component(t, None) for name, t in diffusers.items()}, ldm)


def _pipeline(path: Path, kind: str) -> Source:
    source = Source(path, kind)
    for sub in COMPONENTS:
        if (path / sub / "config.json").is_file():
            name, component = _component_folder(path / sub)
            source.components[name] = component
    return source


def open_source(path: Path) -> Source:
    """What `path` holds, recognised by layout; FileNotFoundError / ValueError name the path otherwise."""
    from train.generate import model_folder

    path = Path(path)
    if path.is_file():
        return _file_source(path, "weights file")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder; expected {EXPECTED}")
    if (path / "config.json").is_file():
        name, component = _component_folder(path)
        return Source(path, f"diffusers {name} folder", {name: component})
    if any((path / sub / "config.json").is_file() for sub in COMPONENTS):
        return _pipeline(path, "diffusers pipeline folder")
    if (path / CHECKPOINT_WEIGHTS).is_file():
        return _file_source(path / CHECKPOINT_WEIGHTS, "training checkpoint")
    try:
        return _pipeline(model_folder(path), "training run")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: no weights recognised; expected {EXPECTED}") from e


# ---- original-LDM files ----

def _convert(name: str, tensors: Tensors, config: dict[str, Any]) -> Tensors:
    from diffusers.loaders.single_file_utils import (LDM_UNET_KEY, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)

    if name == "unet":
        return convert_ldm_unet_checkpoint({LDM_UNET_KEY + k: v for k, v in tensors.items()}, config)
    return convert_ldm_vae_checkpoint(tensors, config)


def _from_ldm(side: Source, other: Source) -> None:
    """Rename `side`'s LDM tensors to diffusers names with the config of `other`'s same component."""
    for name, tensors in side.ldm.items():
        reference = other.components.get(name)
        if reference is None:
            if name in other.ldm:
                raise ValueError(f"{side.path} and {other.path} are both original-LDM files: converting their "
                                 f"{name} needs a diffusers config, so one side must be a diffusers folder")
            continue  # a component only this side has: reported as such
        if reference.config is None:
            raise ValueError(f"{side.path}: an original-LDM file; converting its {name} needs a diffusers config, "
                             f"and {other.path} ({other.kind}) has none: compare against a diffusers folder "
                             f"(config.json + weights) of the same architecture")
        try:
            converted = _convert(name, tensors, reference.config)
        except (KeyError, IndexError) as e:
            raise ValueError(f"{side.path}: its {name} does not fit the config of {other.path} ({e!r}); the "
                             f"other side must be a diffusers model of the same architecture") from e
        _check_fit(side.path, other.path, name, converted, reference.tensors)
        side.components[name] = Component(converted, None)


def _check_fit(path: Path, other: Path, name: str, converted: Tensors, reference: Tensors) -> None:
    extra, lacking = sorted(set(converted) - set(reference)), sorted(set(reference) - set(converted))
    if extra or lacking:
        raise ValueError(f"{path}: its {name}, renamed with the config of {other}, does not have that model's "
                         f"tensors: {len(extra)} not there (e.g. {extra[:3]}), {len(lacking)} missing "
                         f"(e.g. {lacking[:3]}); the other side must be a diffusers model of the same architecture")


# ---- comparing ----

@dataclass
class Stats:
    """Sums over tensors, so tensors add up to modules and modules to components."""

    dot: float = 0.0
    a: float = 0.0  # squared norms
    b: float = 0.0
    params: int = 0
    tensors: int = 0
    identical: int = 0

    def __iadd__(self, other: Stats) -> Stats:
        for name in ("dot", "a", "b", "params", "tensors", "identical"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def cosine(self) -> float | None:
        if self.a == 0 or self.b == 0:
            return None  # no direction to compare: nothing compared, or an all-zero side
        # sqrt(a * b), not sqrt(a) * sqrt(b): identical weights then give exactly 1.0
        return max(-1.0, min(1.0, self.dot / math.sqrt(self.a * self.b)))

    def as_dict(self) -> dict[str, Any]:
        return {"cosine": self.cosine, "params": self.params, "tensors": self.tensors, "identical": self.identical}


def tensor_stats(a: torch.Tensor, b: torch.Tensor) -> Stats:
    # float64: SD's fp16 weights and 15M-element tensors would lose digits near 1 otherwise
    x, y = a.detach().double().flatten(), b.detach().double().flatten()
    return Stats(float(torch.dot(x, y)), float(torch.dot(x, x)), float(torch.dot(y, y)), x.numel(), 1,
                 int(torch.equal(x, y)))


def module_of(component: str, name: str, depth: int) -> str:
    """`unet.down_blocks.0` for unet's down_blocks.0.resnets.1.conv1.weight at depth 1; an index joins its name."""
    levels: list[str] = []
    for part in name.split(".")[:-1]:
        if part.isdigit() and levels:
            levels[-1] += f".{part}"
        else:
            levels.append(part)
    keep = depth + (1 if levels and levels[0] in CONTAINERS.get(component, ()) else 0)
    return ".".join([component] + levels[:keep])


def _in_model_order(name: str) -> list[tuple[int, str]]:
    """Sort key: blocks in the order data flows through them, indices by number, other names after."""
    return [(int(part), "") if part.isdigit() else (FLOW.get(part, len(FLOW)), part) for part in name.split(".")]


def compare_component(name: str, a: Tensors, b: Tensors, depth: int) -> dict[str, Any]:
    modules: dict[str, dict[str, Any]] = {}
    totals, rows, mismatched = {"weights": Stats(), "vectors": Stats()}, [], []
    for key in sorted(set(a) | set(b), key=_in_model_order):
        module_name = module_of(name, key, depth)
        module = modules.setdefault(module_name, {"weights": Stats(), "vectors": Stats(), "not_compared": 0})
        if key not in a or key not in b or a[key].shape != b[key].shape:
            module["not_compared"] += 1
            if key in a and key in b:
                mismatched.append({"name": key, "a": list(a[key].shape), "b": list(b[key].shape)})
            continue
        stats = tensor_stats(a[key].load(), b[key].load())
        group = "weights" if a[key].ndim >= 2 else "vectors"
        module[group] += stats
        totals[group] += stats
        rows.append({"name": key, "module": module_name, "shape": list(a[key].shape), "cosine": stats.cosine,
                     "identical": bool(stats.identical), "params": stats.params, "vector": group == "vectors"})
    return {"summary": _summary(totals["weights"], totals["vectors"], rows),
            "modules": [{"module": m, "weights": v["weights"].as_dict(), "vectors": v["vectors"].as_dict(),
                         "not_compared": v["not_compared"]} for m, v in modules.items()],
            "shape_mismatch": mismatched,
            "only_in_a": sorted(set(a) - set(b), key=_in_model_order),
            "only_in_b": sorted(set(b) - set(a), key=_in_model_order),
            "tensors": rows}


def _summary(weights: Stats, vectors: Stats, rows: list[dict[str, Any]]) -> dict[str, Any]:
    # The concatenated cosine leans on high-norm tensors; the parameter-weighted mean of per-tensor
    # cosines counts every weight alike.
    counted = [r for r in rows if not r["vector"] and r["cosine"] is not None]
    total = sum(r["params"] for r in counted)
    mean = sum(r["params"] * r["cosine"] for r in counted) / total if total else None
    return {"weights": weights.as_dict() | {"weighted_mean": mean}, "vectors": vectors.as_dict()}


def compare(path_a: Path, path_b: Path, depth: int = 1) -> dict[str, Any]:
    """The full comparison of two sources, JSON-ready."""
    if depth < 1:
        raise ValueError(f"--depth {depth}: must be 1 or more (1 = top-level blocks)")
    a, b = open_source(Path(path_a)), open_source(Path(path_b))
    _from_ldm(a, b)
    _from_ldm(b, a)
    shared = [c for c in COMPONENTS if c in a.components and c in b.components]
    if not shared:
        raise ValueError(f"nothing to compare: {a.path} has {_names(a)}, {b.path} has {_names(b)}")
    return {"a": {"path": str(a.path), "kind": a.kind, "components": _names(a)},
            "b": {"path": str(b.path), "kind": b.kind, "components": _names(b)},
            "depth": depth, "note": NOTE,
            "components": {c: compare_component(c, a.components[c].tensors, b.components[c].tensors, depth)
                           for c in shared},
            "missing": {c: "only in A" if _has(a, c) else "only in B"
                        for c in COMPONENTS if c not in shared and _has(a, c) != _has(b, c)}}


def _has(source: Source, component: str) -> bool:
    return component in source.components or component in source.ldm


def _names(source: Source) -> list[str]:
    return [c for c in COMPONENTS if _has(source, c)] or ["no unet or vae"]


# ---- output ----

def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


def _table(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "",
             "| module | cosine | params | tensors | identical | 1-D cosine | 1-D params | not compared |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result["modules"]:
        w, v = m["weights"], m["vectors"]
        lines.append(f"| {m['module']} | {_number(w['cosine'])} | {w['params']:,} | {w['tensors']} | "
                     f"{w['identical']} | {_number(v['cosine'])} | {v['params']:,} | {m['not_compared']} |")
    w, v = result["summary"]["weights"], result["summary"]["vectors"]
    not_compared = len(result["shape_mismatch"]) + len(result["only_in_a"]) + len(result["only_in_b"])
    lines += [f"| **{name} (all)** | **{_number(w['cosine'])}** | {w['params']:,} | {w['tensors']} | "
              f"{w['identical']} | {_number(v['cosine'])} | {v['params']:,} | {not_compared} |",
              "", f"Parameter-weighted mean of per-tensor cosines: {_number(w['weighted_mean'])}"]
    if result["shape_mismatch"]:
        lines += ["", f"Shapes differ ({len(result['shape_mismatch'])}), not compared:"]
        lines += [f"- {r['name']}: A {tuple(r['a'])}, B {tuple(r['b'])}" for r in result["shape_mismatch"]]
    for side in ("a", "b"):
        names = result[f"only_in_{side}"]
        if names:
            lines += ["", f"Only in {side.upper()} ({len(names)}), not compared:"] + [f"- {n}" for n in names]
    return lines + [""]


def markdown(result: dict[str, Any]) -> str:
    lines = ["## Weight similarity", "",
             f"- A: {result['a']['path']} ({result['a']['kind']}: {', '.join(result['a']['components'])})",
             f"- B: {result['b']['path']} ({result['b']['kind']}: {', '.join(result['b']['components'])})",
             f"- module depth {result['depth']}; {result['note']}", ""]
    lines += [f"**{c}: {where}**, not compared." for c, where in result["missing"].items()]
    if result["missing"]:
        lines.append("")
    for name, component in result["components"].items():
        lines += _table(name, component)
    return "\n".join(lines)


def write_json(path: Path, result: dict[str, Any]) -> None:
    write_text_atomic(json.dumps(result, indent=2), path)


def _run(args: argparse.Namespace) -> int:
    result = compare(Path(args.a), Path(args.b), args.depth)
    print(markdown(result))
    if args.json:
        write_json(Path(args.json), result)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser("compare-weights")  # its help line is in audit.cli.COMMANDS
    command.add_argument("a", help="model folder, training run, diffusers pipeline or component folder, "
                                   "training checkpoint, or weights file (original-LDM single files too)")
    command.add_argument("b", help="the other model, in any of the same forms")
    command.add_argument("--depth", type=int, default=1,
                         help="module depth: 1 = top-level blocks (unet.down_blocks.0, vae.encoder.mid_block), "
                              "2 = their children (unet.down_blocks.0.resnets.1), ...")
    command.add_argument("--json", help="also write the full result (every tensor's cosine) to this JSON file")
    command.set_defaults(handler=_run)
