"""Our model checkpoint: one directory any mmclip command reads, wherever it was moved to.

Layout::

    model.yaml          family: clip | lusifer, then that family's model config fields
    model.safetensors   the full fp32 state dict (LUSIFER: LoRA merged into plain weights)
    tokenizer/          the text tower's (LUSIFER: the encoder's) tokenizer, copied in
    llm_tokenizer/      LUSIFER: the LLM's tokenizer, copied in

Paths in ``model.yaml`` are relative to the directory, and weights named by ``pretrained`` keys are
dropped (they are in ``model.safetensors``), so a checkpoint can be moved, copied or shipped.
Training (through :mod:`mmclip.train.run_checkpoint`), export, evaluation, search and the factory
all read it here; nothing else opens these files.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from .config import ConfigError, apply_overrides, from_dict, load_yaml, resolve_paths
from .models.configuration import CLIPConfig, LusiferConfig

CONFIG_FILE = "model.yaml"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint needs to know about one kind of model (no training knowledge)."""

    config: type  # its FILE_RELATIVE keys name files, relative to the YAML that names them
    model_path: str  # module:class, imported on use (LUSIFER's pulls in transformers' Mistral)
    weight_keys: tuple[str, ...]  # keys naming outside weights: None in a checkpoint, its own weights win
    tokenizers: dict[str, str]  # config key of a tokenizer directory -> its directory in the checkpoint

    @property
    def model(self) -> type:
        module, _, name = self.model_path.partition(":")
        return getattr(importlib.import_module(module), name)


FAMILIES = {
    "clip": ModelFamily(
        CLIPConfig, "mmclip.models.clip:MMCLIP",
        weight_keys=("pretrained", "vision.pretrained", "text.pretrained"),
        tokenizers={"text.tokenizer": "tokenizer"},
    ),
    "lusifer": ModelFamily(
        LusiferConfig, "mmclip.models.lusifer:LusiferModel",
        weight_keys=("llm_pretrained", "encoder.pretrained"),
        tokenizers={"encoder.tokenizer": "tokenizer", "llm_tokenizer": "llm_tokenizer"},
    ),
}


def family_of(config: Any) -> str:
    """The family name of a model config instance."""
    for name, family in FAMILIES.items():
        if isinstance(config, family.config):
            return name
    raise TypeError(f"not a model config of a known family: {type(config).__name__}")


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_family(path: str | Path) -> str:
    """The ``family:`` tag of a checkpoint's ``model.yaml`` (a missing tag: ``clip``, as written before tags)."""
    source = Path(path) / CONFIG_FILE
    family = load_yaml(source).get("family", "clip")
    if family not in FAMILIES:
        raise ConfigError(f"{source}: family: must be one of {tuple(FAMILIES)}, got {family!r}")
    return family


def read_config(path: str | Path, overrides: Iterable[str] = (), config: str | Path | None = None) -> tuple[str, Any]:
    """``(family, model config)`` of a checkpoint; ``config``: another model YAML of the same family to use."""
    path = Path(path)
    family = read_family(path)
    source = Path(config) if config is not None else path / CONFIG_FILE
    data = {k: v for k, v in load_yaml(source).items() if k != "family"}
    data = resolve_paths(data, FAMILIES[family].config.FILE_RELATIVE, source.absolute().parent)
    return family, from_dict(FAMILIES[family].config, apply_overrides(data, overrides, str(source)), str(source))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint directory or of a ``model.safetensors`` file."""
    from safetensors.torch import load_file

    path = Path(path)
    return load_file(str(path / WEIGHTS_FILE if path.is_dir() else path))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into ``model``, first moving a vision tower to their grid.

    The tower takes the checkpoint's resolution so the position embedding loads as trained; a caller
    that trains at another size resizes it afterwards (``set_image_size`` resamples it once).
    """
    weights = read_weights(path)
    vision = getattr(model, "vision", None)
    if vision is not None and "vision.pos_embed" in weights:
        grid = round((weights["vision.pos_embed"].shape[1] - 1) ** 0.5)
        # Compare grids, not sizes: 512 px and 504 px share the 36x36 grid, and 512 must stay 512.
        if grid != vision.config.grid_size:
            vision.set_image_size(grid * vision.config.patch_size)
    model.load_state_dict(weights)


def load(path: str | Path, overrides: Iterable[str] = (), **model_kwargs) -> torch.nn.Module:
    """The model of a checkpoint, in eval mode (fp32, at the checkpoint's resolution)."""
    family, config = read_config(path, overrides)
    model = FAMILIES[family].model(config, **model_kwargs)
    load_weights(model, path)
    return model.eval()


def write(directory: str | Path, config: Any, weights: dict[str, torch.Tensor]) -> Path:
    """Write ``weights`` and ``config`` (tagged with its family) into ``directory``, copying the
    tokenizers the config names into it and dropping outside-weight paths."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family_name = family_of(config)
    family = FAMILIES[family_name]
    fields = config_dict(config)
    for key in family.weight_keys:
        _set(fields, key, None)
    for key, name in family.tokenizers.items():
        source = _get(fields, key)
        if source is None:
            continue
        if Path(source).resolve() != (directory / name).resolve():
            shutil.copytree(source, directory / name, dirs_exist_ok=True)
        _set(fields, key, name)
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(directory / WEIGHTS_FILE))
    text = yaml.safe_dump({"family": family_name, **fields}, sort_keys=False, allow_unicode=True)
    (directory / CONFIG_FILE).write_text(text)
    return directory


def config_dict(config: Any) -> dict[str, Any]:
    """A model config as a YAML-able dict of init fields only (derived properties left out)."""

    def init_fields(node: Any) -> Any:
        if dataclasses.is_dataclass(node):
            return {f.name: init_fields(getattr(node, f.name)) for f in dataclasses.fields(node) if f.init}
        if isinstance(node, dict):
            return {k: init_fields(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [init_fields(v) for v in node]
        return node

    return init_fields(config)


def _get(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _set(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value
