"""Load outside checkpoints into mmclip's towers, detecting their layout from the keys.

Vision (EVA02): timm, open_clip (a timm trunk), EVA-CLIP / Jina's open_clip fork, released
jina-clip-v2. Text: HF XLM-RoBERTa (absolute positions), Jina XLM-RoBERTa in flash-attn layout
(LoRA parametrizations merged), released jina-clip-v2.

Each layout is a prefix, a probe key only that layout has, and a pure key/tensor conversion onto
our module names. Loading is strict: keys under the layout's prefix either land on a parameter
or are dropped by one of the documented rules in ``_VISION_IGNORED`` / ``_TEXT_IGNORED``; keys
outside the prefix belong to something else (the other tower, a classifier) and are left alone.
Any missing, unexpected or mis-shaped key raises :class:`WeightLoadingError` before anything is
copied, so a tower is never loaded half-way.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from . import integrity
from .models import MMCLIP, EvaVisionTower, XLMRobertaTextTower
from .models.eva import resample_pos_embed

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# Weight files of a checkpoint directory, in order of preference (HF, then open_clip's hub names).
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
_MAX_LISTED = 20  # keys named per category in an error; the count is always given


class WeightLoadingError(RuntimeError):
    """A checkpoint that cannot be read, recognised or loaded into the model as it is configured."""


# --- reading ------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> StateDict:
    """All tensors of a checkpoint file or HF-style directory (sharded or not), on the CPU.

    Files: ``.safetensors``, or torch pickles read with ``weights_only=True``; training checkpoints
    wrapping the weights (timm's CheckpointSaver ``{"state_dict", "state_dict_ema", "args": Namespace}``,
    whose EMA weights win as in timm; open_clip ``{"state_dict": ...}``, timm ``{"model": ...}``,
    DeepSpeed ``{"module": ...}``) are unwrapped, and DDP's ``module.`` / torch.compile's
    ``_orig_mod.`` prefixes are stripped.
    """
    path = Path(path)
    if path.is_dir():
        path = _weights_file(path)
    elif not path.exists():
        raise WeightLoadingError(f"{path}: no such file or directory")
    try:
        integrity.check_source(path.parent)  # an mmclip export: its manifest
    except integrity.IntegrityError as error:
        raise WeightLoadingError(str(error)) from None
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(_read_file(path.parent / shard))
        return state_dict
    return _read_file(path)


def _weights_file(directory: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (directory / name).exists():
            return directory / name
    raise WeightLoadingError(f"{directory}: no weights file, expected one of {', '.join(_WEIGHT_FILES)}")


# Training-checkpoint wrappers around the weights, in order of preference: timm's EMA weights first
# (``timm.models.load_state_dict(use_ema=True)``, what ``load_checkpoint`` does by default), then
# open_clip / timm ``state_dict``, timm ``model``, DeepSpeed ``module``.
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
# Key prefixes of wrapped modules, stripped per key as timm's clean_state_dict does: DDP, torch.compile.
_MODULE_PREFIXES = ("module.", "_orig_mod.")


def _read_file(path: Path) -> StateDict:
    # Any file can be named here: the parsers' own errors (IndexError, SafetensorError, zipfile's,
    # ...) become one WeightLoadingError naming the file and the format it was read as.
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(path)
        except Exception as error:
            raise WeightLoadingError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from None
    try:
        # timm's CheckpointSaver stores the training arguments as an argparse.Namespace: allowed, as
        # timm's own loader allows it; anything else outside weights-only pickles is refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightLoadingError(f"{path}: not a weights-only torch checkpoint ({error})") from error
    except Exception as error:
        raise WeightLoadingError(f"{path}: not a torch checkpoint ({type(error).__name__}: {error})") from None
    for wrapper in _WRAPPERS:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict) and checkpoint[wrapper]:
            if wrapper in ("state_dict_ema", "model_ema"):
                logger.info("%s: a timm training checkpoint; loading its EMA weights (%s), as timm does", path, wrapper)
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightLoadingError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {_strip_module_prefixes(key): value for key, value in checkpoint.items()}


def _strip_module_prefixes(key: str) -> str:
    while key.startswith(_MODULE_PREFIXES):
        key = next(key.removeprefix(p) for p in _MODULE_PREFIXES if key.startswith(p))
    return key


def _read_config(path: Path) -> dict:
    """The ``config.json`` beside the weights (in the directory, or next to the file), else ``{}``."""
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    return json.loads(config_file.read_text()) if config_file.exists() else {}


# --- key and tensor mapping ---------------------------------------------------------------------


def _rename(state_dict: StateDict, renames: dict[str, str]) -> StateDict:
    """Apply substring renames to every key, in table order."""

    def rename(key: str) -> str:
        for old, new in renames.items():
            key = key.replace(old, new)
        return key

    return {rename(key): value for key, value in state_dict.items()}


def _fuse(state_dict: StateDict, parts: tuple[str, ...], fused: str) -> StateDict:
    """Concatenate sibling tensors ``<module>.<part>`` on dim 0, in ``parts`` order, into ``<module>.<fused>``.

    A module that lacks one of the parts is left as it is, so the strict load names its keys.
    """
    out = dict(state_dict)
    for key in state_dict:
        if not key.endswith("." + parts[0]):
            continue
        module = key[: -len(parts[0])]
        names = [module + part for part in parts]
        if all(name in out for name in names):
            out[module + fused] = torch.cat([out.pop(name) for name in names])
    return out


# timm's names for the EVA02 modules, renamed to EVA-CLIP's (the inverse of timm's eva.checkpoint_filter_fn).
_TIMM_TO_EVA = {
    ".attn.q_proj.bias": ".attn.q_bias",
    ".attn.v_proj.bias": ".attn.v_bias",
    ".attn.norm.": ".attn.inner_attn_ln.",
    ".mlp.fc1_g.": ".mlp.w1.",  # the SiLU gate
    ".mlp.fc1_x.": ".mlp.w2.",
    ".mlp.norm.": ".mlp.ffn_ln.",
    ".mlp.fc2.": ".mlp.w3.",
}

# HF BERT names to Jina's flash layout, as Jina's own remap_state_dict (Wqkv already fused).
_HF_TO_FLASH = {
    "embeddings.LayerNorm.": "emb_ln.",
    "encoder.layer.": "encoder.layers.",
    ".attention.self.Wqkv.": ".mixer.Wqkv.",
    ".attention.output.dense.": ".mixer.out_proj.",  # before ".output.dense.", which it contains
    ".attention.output.LayerNorm.": ".norm1.",
    ".intermediate.dense.": ".mlp.fc1.",
    ".output.dense.": ".mlp.fc2.",
    ".output.LayerNorm.": ".norm2.",
}

_FLASH_TO_MMCLIP = {"encoder.layers.": "layers."}


def _eva_to_mmclip(state_dict: StateDict) -> StateDict:
    state_dict = _fuse(state_dict, ("q_proj.weight", "k_proj.weight", "v_proj.weight"), "qkv.weight")
    state_dict = _fuse(state_dict, ("w1.weight", "w2.weight"), "w12.weight")
    return _fuse(state_dict, ("w1.bias", "w2.bias"), "w12.bias")


def _timm_to_mmclip(state_dict: StateDict) -> StateDict:
    return _eva_to_mmclip(_rename(state_dict, _TIMM_TO_EVA))


def _flash_to_mmclip(state_dict: StateDict) -> StateDict:
    return _rename(state_dict, _FLASH_TO_MMCLIP)


def _hf_to_mmclip(state_dict: StateDict) -> StateDict:
    for part in ("weight", "bias"):
        state_dict = _fuse(state_dict, (f"query.{part}", f"key.{part}", f"value.{part}"), f"Wqkv.{part}")
    return _flash_to_mmclip(_rename(state_dict, _HF_TO_FLASH))


# --- layouts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    name: str
    prefix: str  # stripped; keys outside it belong to other models and are left alone
    probe: str  # a key (after the prefix) that identifies the layout
    convert: Callable[[StateDict], StateDict]


_TIMM_PROBE = "blocks.0.mlp.fc1_g.weight"
_EVA_PROBE = "blocks.0.mlp.w1.weight"
_VISION_LAYOUTS = (
    _Layout("jina_clip_v2", "vision_model.", _EVA_PROBE, _eva_to_mmclip),
    _Layout("open_clip", "visual.trunk.", _TIMM_PROBE, _timm_to_mmclip),
    _Layout("eva_clip", "visual.", _EVA_PROBE, _eva_to_mmclip),  # EVA-CLIP and Jina's open_clip fork
    _Layout("eva_clip", "", _EVA_PROBE, _eva_to_mmclip),
    _Layout("timm", "", _TIMM_PROBE, _timm_to_mmclip),
)

_FLASH_PROBE = "emb_ln.weight"
_HF_PROBE = "embeddings.LayerNorm.weight"
_TEXT_LAYOUTS = (
    _Layout("jina_clip_v2", "text_model.transformer.roberta.", _FLASH_PROBE, _flash_to_mmclip),
    # Jina's open_clip fork: jina-embeddings-v3 (XLMRobertaLoRA) or jina-xlm-roberta-large-rope-8k as text.transformer
    _Layout("jina_xlm_roberta", "text.transformer.roberta.", _FLASH_PROBE, _flash_to_mmclip),
    _Layout("jina_xlm_roberta", "text.transformer.", _FLASH_PROBE, _flash_to_mmclip),
    _Layout("jina_xlm_roberta", "roberta.", _FLASH_PROBE, _flash_to_mmclip),
    _Layout("jina_xlm_roberta", "", _FLASH_PROBE, _flash_to_mmclip),
    _Layout("hf_xlm_roberta", "roberta.", _HF_PROBE, _hf_to_mmclip),  # XLMRobertaForMaskedLM & co.
    _Layout("hf_xlm_roberta", "text.transformer.", _HF_PROBE, _hf_to_mmclip),  # open_clip HFTextEncoder
    _Layout("hf_xlm_roberta", "", _HF_PROBE, _hf_to_mmclip),
)

# Dual-encoder checkpoints: the root prefixes of (vision, text) and the name of the pair.
_CLIP_LAYOUTS = {("vision_model.", "text_model."): "jina_clip_v2", ("visual.", "text."): "open_clip"}

# Keys under a tower's prefix that it does not load, with the reason (matched after the prefix) and
# whether they carry trained weights: those are dropped with a WARNING naming them, buffers and
# tables that are recomputed at INFO. A dual encoder's projections never reach these rules:
# load_clip_weights maps them onto vision_proj / text_proj first (_PROJECTIONS).
_VISION_IGNORED = (
    # A real fc_norm comes with an Identity norm, whose absence the strict load reports.
    (re.compile(r"^(head|fc_norm)\."), "timm classifier head (a CLIP checkpoint's projection into its own text "
     "space) and fc_norm: the tower ends at the CLS; load the whole dual encoder to keep the projection", True),
    (re.compile(r"(^|\.)rope\."), "RoPE tables: recomputed on every forward", False),
    (re.compile(r"^(mask_token$|lm_head\.)"), "EVA masked-image-modelling pretraining head", True),
)
_TEXT_IGNORED = (
    (re.compile(r"^pooler\."), "HF CLS pooler: the tower mean-pools", True),
    (re.compile(r"^lm_head\."), "masked-language-modelling head", True),
    (re.compile(r"\.rotary_emb\."), "RoPE tables: recomputed on every forward", False),
    (re.compile(r"^embeddings\.(position_ids|token_type_ids)$"), "index buffers older transformers versions saved",
     False),
)

# A dual encoder's projections, by the source's names: open_clip's timm trunk head (``timm_proj``
# unset: the trunk's classifier, a Linear with bias, is the projection; EVA02-L-14 and co.), its
# ``head.proj`` (``timm_proj: linear``), EVA-CLIP / Jina's fork ``visual.head``, and open_clip's HF
# text projection. Anything else under them (an MLP head) is left under its new name, where the
# strict load reports it as unexpected.
_PROJECTIONS = (
    ("visual.trunk.head.", "vision_proj."),
    ("visual.head.proj.", "vision_proj."),
    ("visual.head.", "vision_proj."),
    ("text.proj.", "text_proj."),
)


def _detect(layouts: tuple[_Layout, ...], state_dict: StateDict, tower: str, path: Path) -> _Layout:
    for layout in layouts:
        if layout.prefix + layout.probe in state_dict:
            return layout
    probes = sorted({layout.prefix + layout.probe for layout in layouts})
    found = describe_layout(state_dict)
    raise WeightLoadingError(
        f"{path}: no known {tower} layout (looked for any of {probes}); "
        + (f"it is {found}" if found else f"the checkpoint starts with {_listing(sorted(state_dict))}")
    )


def describe_layout(keys) -> str | None:
    """What a checkpoint holds, by the probes it matches: e.g. "a hf_xlm_roberta text checkpoint"."""
    found = [f"{layout.name} {tower}" for tower, layouts in (("vision", _VISION_LAYOUTS), ("text", _TEXT_LAYOUTS))
             if (layout := next((lay for lay in layouts if lay.prefix + lay.probe in keys), None))]
    return f"a {' + '.join(found)} checkpoint" if found else None


def _tower_weights(state_dict: StateDict, layout: _Layout, ignored, path: Path) -> StateDict:
    """The keys under the layout's prefix, without it, minus those dropped by rule (logged per rule, weights loudly)."""
    weights, dropped = {}, {}
    for key, value in state_dict.items():
        if not key.startswith(layout.prefix):
            continue
        key = key[len(layout.prefix) :]
        rule = next(((reason, loud) for pattern, reason, loud in ignored if pattern.search(key)), None)
        if rule is None:
            weights[key] = value
        else:
            dropped.setdefault(rule, []).append(layout.prefix + key)
    for (reason, loud), keys in dropped.items():
        logger.log(logging.WARNING if loud else logging.INFO, "%s: not loading %d keys (%s): %s",
                   path, len(keys), reason, _listing(keys))
    return weights


def _check_config(config: dict, checks: tuple[tuple[str, str, object], ...], path: Path) -> None:
    """Architecture fields of config.json that no tensor shape reveals: (key, our field, our value)."""
    for key, field, ours in checks:
        if key in config and config[key] != ours:
            raise WeightLoadingError(f"{path}: config.json has {key}={config[key]} but {field} is {ours}")


# --- vision -------------------------------------------------------------------------------------


def _vision_state_dict(tower: EvaVisionTower, state_dict: StateDict, path: Path) -> tuple[_Layout, StateDict]:
    layout = _detect(_VISION_LAYOUTS, state_dict, "vision", path)
    _check_config(
        _read_config(path).get("vision_config", {}),  # jina-clip-v2
        (
            ("head_width", "the vision head dim (width / num_heads)", tower.config.head_dim),
            ("pt_hw_seq_len", "vision.rope_reference_grid", tower.config.rope_reference_grid),
        ),
        path,
    )
    weights = layout.convert(_tower_weights(state_dict, layout, _VISION_IGNORED, path))
    pos_embed = weights.get("pos_embed")
    # Another grid (same width) is resampled; any other difference is left to the strict load to report.
    target = tower.pos_embed.shape
    if pos_embed is not None and pos_embed.shape[1] != target[1] and pos_embed.shape[2:] == target[2:]:
        old_grid, grid = math.isqrt(pos_embed.shape[1] - 1), tower.config.grid_size
        if old_grid == 0 or old_grid**2 + 1 != pos_embed.shape[1]:
            raise WeightLoadingError(f"{path}: pos_embed {list(pos_embed.shape)} is not a CLS row plus a square grid")
        logger.info("%s: resampling pos_embed from a %dx%d to a %dx%d grid", path, old_grid, old_grid, grid, grid)
        weights["pos_embed"] = resample_pos_embed(pos_embed, grid)
    return layout, weights


def load_vision_weights(tower: EvaVisionTower, path: str | Path) -> str:
    """Load an EVA02 checkpoint (any layout in ``_VISION_LAYOUTS``) into ``tower``; returns the layout name.

    A position embedding for another grid is resampled to the tower's; anything else that does
    not match the tower's configuration raises.
    """
    path = Path(path)
    layout, weights = _vision_state_dict(tower, read_state_dict(path), path)
    _load_strict(tower, weights, layout.name, path)
    return layout.name


# --- text ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoRA:
    adapter: int  # index into the adapter dimension of lora_A / lora_B
    scaling: float  # lora_alpha / lora_rank
    name: str | None  # its task name in config.json's lora_adaptations, if listed


def task_instructions(path: str | Path) -> dict[str, str]:
    """Task name -> instruction prefix of a jina-clip-v2 / jina-embeddings-v3 checkpoint's config.json
    (``task_instructions``, nested in jina-clip-v2's ``text_config.hf_model_config_kwargs``), else ``{}``."""
    return dict(_text_config(Path(path)).get("task_instructions") or {})


def _text_config(path: Path) -> dict:
    """Text fields of config.json, flat: jina-clip-v2 nests them in ``text_config.hf_model_config_kwargs``."""
    config = _read_config(path)
    text_config = config.get("text_config", {})
    return {**config, **text_config, **text_config.get("hf_model_config_kwargs", {})}


def _choose_lora(state_dict: StateDict, config: dict, adapter: str | None, path: Path) -> _LoRA | None:
    """Which adapter to merge and with what scaling; None when the checkpoint has no LoRA factors."""
    factors = [value for key, value in state_dict.items() if key.endswith(".parametrizations.weight.0.lora_A")]
    if not factors:
        if adapter is not None:
            raise WeightLoadingError(f"{path}: lora_adapter {adapter!r} given, but the checkpoint has no LoRA weights")
        return None
    num_adapters = factors[0].shape[0]
    names = config.get("lora_adaptations")
    if names is not None and len(names) != num_adapters:
        raise WeightLoadingError(
            f"{path}: config.json lists {len(names)} lora_adaptations, the weights hold {num_adapters}"
        )
    if adapter is not None:
        if names is None:
            raise WeightLoadingError(
                f"{path}: lora_adapter {adapter!r} given, but no config.json lists lora_adaptations"
            )
        if adapter not in names:
            raise WeightLoadingError(f"{path}: no LoRA adapter {adapter!r}; config.json lists {names}")
        index = names.index(adapter)
    elif num_adapters == 1:
        index = 0
    elif config.get("default_lora_task") in (names or ()):
        index = names.index(config["default_lora_task"])
    else:
        raise WeightLoadingError(f"{path}: {num_adapters} LoRA adapters {names}; choose one with text.lora_adapter")
    if "lora_alpha" in config and "lora_rank" in config:
        scaling = config["lora_alpha"] / config["lora_rank"]
    else:
        scaling = 1.0
        logger.info("%s: no lora_alpha / lora_rank in a config.json beside the weights; LoRA scaling 1.0", path)
    name = names[index] if names else None
    logger.info("%s: merging LoRA adapter %s (scaling %g)", path, name or f"#{index}", scaling)
    return _LoRA(index, scaling, name)


def _merge_lora(state_dict: StateDict, lora: _LoRA) -> StateDict:
    """Fold torch-parametrize LoRA into plain weights: ``<m>.parametrizations.weight.{original,0.lora_A,0.lora_B}``.

    Jina's LoRA (from minLoRA) adds ``B @ A * scaling`` to a Linear weight ``[out, in]`` (A ``[n, r, in]``,
    B ``[n, out, r]``) and ``A @ B * scaling`` to an Embedding weight ``[num, dim]`` (A ``[n, num, r]``,
    B ``[n, r, dim]``); ``n`` is the adapter dimension. The merged weight is kept in fp32.
    """
    out = {}
    for key, value in state_dict.items():
        module, _, part = key.partition(".parametrizations.weight.")
        if not part:
            out[key] = value
        elif part == "original":
            factors = [f"{module}.parametrizations.weight.0.lora_{name}" for name in "AB"]
            if any(name not in state_dict for name in factors):
                raise WeightLoadingError(f"{key} has no LoRA factors {' / '.join(factors)}")
            lora_a, lora_b = (state_dict[name][lora.adapter].float() for name in factors)
            delta = lora_a @ lora_b if module.endswith("_embeddings") else lora_b @ lora_a
            if delta.shape != value.shape:
                raise WeightLoadingError(
                    f"LoRA factors of {module} give a {list(delta.shape)} update for a {list(value.shape)} weight"
                )
            out[f"{module}.weight"] = value.float() + delta * lora.scaling
    return out


def _text_state_dict(
    tower: XLMRobertaTextTower, state_dict: StateDict, path: Path, lora_adapter: str | None
) -> tuple[_Layout, StateDict, _LoRA | None]:
    layout = _detect(_TEXT_LAYOUTS, state_dict, "text", path)
    config = _text_config(path)
    _check_config(
        config,
        (
            ("rotary_emb_base", "text.rotary_base", tower.config.rotary_base),
            ("num_attention_heads", "text.num_heads", tower.config.num_heads),
            ("layer_norm_eps", "text.layer_norm_eps", tower.config.layer_norm_eps),
        ),
        path,
    )
    weights = _tower_weights(state_dict, layout, _TEXT_IGNORED, path)
    lora = _choose_lora(weights, config, lora_adapter, path)
    if lora is not None:
        weights = _merge_lora(weights, lora)
    weights = layout.convert(weights)
    positions = weights.get("embeddings.position_embeddings.weight")
    if (positions is None) != (tower.config.position_embedding == "rotary"):
        wanted = "rotary" if positions is None else "absolute"
        raise WeightLoadingError(
            f"{path}: the {layout.name} checkpoint has {wanted} positions, "
            f"text.position_embedding is {tower.config.position_embedding!r}; set it to {wanted!r}"
        )
    if positions is not None and positions.shape[0] != tower.config.max_position_embeddings:
        raise WeightLoadingError(
            f"{path}: the checkpoint has {positions.shape[0]} position embeddings, "
            f"text.max_position_embeddings is {tower.config.max_position_embeddings}"
        )
    return layout, weights, lora


def _record_adapter(tower: XLMRobertaTextTower, lora: _LoRA | None) -> None:
    """The merged adapter's task name goes into the tower's config, so checkpoints and exports name it."""
    if lora is not None and lora.name is not None:
        tower.config.lora_adapter = lora.name


def load_text_weights(tower: XLMRobertaTextTower, path: str | Path, lora_adapter: str | None = None) -> str:
    """Load an XLM-R checkpoint (any layout in ``_TEXT_LAYOUTS``) into ``tower``; returns the layout name.

    Jina LoRA adapters are merged into the weights: ``lora_adapter`` names one of config.json's
    ``lora_adaptations``; by default the only one, or jina-clip-v2's ``default_lora_task``. The
    merged adapter's name is recorded in ``tower.config.lora_adapter``.
    """
    path = Path(path)
    layout, weights, lora = _text_state_dict(tower, read_state_dict(path), path, lora_adapter)
    _load_strict(tower, weights, layout.name, path)
    _record_adapter(tower, lora)
    return layout.name


# --- dual encoder -------------------------------------------------------------------------------


def load_clip_weights(model: MMCLIP, path: str | Path) -> str:
    """Load a whole dual encoder: released jina-clip-v2 or a Jina open_clip training checkpoint.

    Both towers and ``logit_scale`` (into ``logit_scale_image_text``) must load; the checkpoint has
    no text-text temperature, so ``logit_scale_text_text`` keeps its initial value. Projections
    (``_PROJECTIONS``) load into ``vision_proj`` / ``text_proj``, which the model config must then
    have (``projections``, with ``vision_proj_bias`` / ``text_proj_bias`` where the source has a bias).
    """
    path = Path(path)
    state_dict = {_projection_name(key): value for key, value in read_state_dict(path).items()}
    vision_layout, vision = _vision_state_dict(model.vision, state_dict, path)
    text_layout, text, lora = _text_state_dict(model.text, state_dict, path, model.config.text.lora_adapter)
    name = _clip_layout(vision_layout, text_layout, path)
    weights = {f"vision.{key}": value for key, value in vision.items()}
    weights |= {f"text.{key}": value for key, value in text.items()}
    # What neither tower took (projections, a logit bias, ...) stays in under its own name: unexpected.
    towers = (vision_layout.prefix, text_layout.prefix)
    weights |= {key: value for key, value in state_dict.items() if not key.startswith(towers)}
    if "logit_scale" in weights:
        weights["logit_scale_image_text"] = weights.pop("logit_scale")
    _load_strict(model, weights, name, path, keep=frozenset({"logit_scale_text_text"}))
    _record_adapter(model.text, lora)
    return name


def projection_shapes(path: str | Path) -> dict[str, list[int]]:
    """The dual-encoder projections a checkpoint holds, under our names (``vision_proj.weight``, ...),
    with their shapes: what a model config needs (``projections``, ``embed_dim``, the biases) to load it."""
    return {name: list(value.shape) for key, value in read_state_dict(path).items()
            if (name := _projection_name(key)).startswith(("vision_proj.", "text_proj."))}


def _projection_name(key: str) -> str:
    for source, ours in _PROJECTIONS:
        if key.startswith(source):
            return ours + key.removeprefix(source)
    return key


# --- the strict load ----------------------------------------------------------------------------


def _clip_layout(vision_layout: _Layout, text_layout: _Layout, path: Path) -> str:
    roots = (vision_layout.prefix.partition(".")[0] + ".", text_layout.prefix.partition(".")[0] + ".")
    name = _CLIP_LAYOUTS.get(roots)
    if name is None:
        raise WeightLoadingError(
            f"{path}: not a dual-encoder checkpoint: {vision_layout.name} vision under {vision_layout.prefix!r}, "
            f"{text_layout.name} text under {text_layout.prefix!r}"
        )
    return name


def check_layout(path: str | Path, tower: str) -> str:
    """The layout ``path`` has for ``tower`` (``vision``, ``text`` or ``clip``), from its keys alone:
    the check a stage runs before building anything. Raises :class:`WeightLoadingError` naming what it found."""
    path = Path(path)
    keys = read_keys(path)
    if tower == "vision":
        return _detect(_VISION_LAYOUTS, keys, "vision", path).name
    if tower == "text":
        return _detect(_TEXT_LAYOUTS, keys, "text", path).name
    return _clip_layout(_detect(_VISION_LAYOUTS, keys, "vision", path), _detect(_TEXT_LAYOUTS, keys, "text", path), path)


def read_keys(path: Path) -> dict[str, None]:
    """The tensor names of a checkpoint; safetensors files are not read beyond their header."""
    file = _weights_file(path) if path.is_dir() else path
    if file.suffix == ".safetensors" and file.is_file():
        try:
            with safetensors.safe_open(file, "pt") as handle:
                return dict.fromkeys(handle.keys())
        except Exception as error:  # as _read_file: whatever the parser raises on a foreign file
            raise WeightLoadingError(f"{file}: not a readable safetensors file ({type(error).__name__}: {error})") from None
    return dict.fromkeys(read_state_dict(path))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _load_strict(
    module: nn.Module, weights: StateDict, layout: str, path: Path, keep: frozenset[str] = frozenset()
) -> None:
    """Copy ``weights`` into ``module`` (in its dtype and device) only if every key and shape matches.

    ``keep`` names the module's keys the checkpoint may lack; they keep their current values.
    """
    expected = module.state_dict()
    missing = sorted(expected.keys() - weights.keys() - keep)
    unexpected = sorted(weights.keys() - expected.keys())
    mismatched = [
        f"{key}: checkpoint {list(weights[key].shape)} vs model {list(expected[key].shape)}"
        for key in sorted(weights.keys() & expected.keys())
        if weights[key].shape != expected[key].shape
    ]
    problems = [
        f"{title} ({len(keys)}): {_listing(keys)}"
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        raise WeightLoadingError(
            f"{path}: cannot load the {layout} checkpoint into {type(module).__name__} "
            f"(keys after conversion to mmclip names):\n  " + "\n  ".join(problems)
        )
    module.load_state_dict(weights, strict=not keep)
