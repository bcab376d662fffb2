"""``mmclip export CHECKPOINT --output DIR``: a self-contained Hugging Face directory.

Sources: an mmclip model checkpoint (``model.yaml`` + ``model.safetensors``, :mod:`mmclip.checkpoint`)
or a released jina-clip-v2 directory (``config.json`` + ``model.safetensors``, LoRA merged on load;
its text architecture comes from ``--config``, default ``configs/model/jina-clip-v2.yaml``).

The output loads offline with ``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` (and with
``SentenceTransformer(DIR, trust_remote_code=True)``) and needs no other repository::

    config.json                     MMCLIPHFConfig, auto_map into the code below
    model.safetensors               MMCLIP's state dict under ``clip.``, fp32 or bf16
    configuration_mmclip.py, modeling_mmclip.py, processing_mmclip.py, clip.py, eva.py, ...
                                    mmclip/models/*.py, copied verbatim (relative imports only)
    tokenizer.json, tokenizer_config.json, ...      the XLM-R tokenizer
    preprocessor_config.json, processor_config.json the eval transform and the processor
    modules.json, sentence_bert_config.json, config_sentence_transformers.json, 1_Normalize/
                                    sentence-transformers: text and images, then Normalize

A LUSIFER checkpoint (``family: lusifer`` in its ``model.yaml``) becomes ``config.json`` with
``LusiferHFConfig`` / ``LusiferHFModel`` (``encode_text``), ``model.safetensors`` under ``lusifer.``
(LoRA merged, no LM head), the same remote code, the encoder's tokenizer and ``llm_tokenizer/``.

Everything is written into ``DIR.tmp`` and renamed, so ``DIR`` is complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import checkpoint
from .config import CONFIG_DIR, ConfigError
from .factory import create_model
from .models import MMCLIP
from .models.configuration_lusifer import LusiferHFConfig
from .models.configuration_mmclip import MMCLIPHFConfig
from .models.processing_mmclip import MMCLIPImageProcessor, MMCLIPProcessor

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
JINA_CLIP_V2_CONFIG = CONFIG_DIR / "model" / "jina-clip-v2.yaml"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json")
AUTO_MAP = {
    "AutoConfig": "configuration_mmclip.MMCLIPHFConfig",
    "AutoModel": "modeling_mmclip.MMCLIPHFModel",
}
LUSIFER_AUTO_MAP = {
    "AutoConfig": "configuration_lusifer.LusiferHFConfig",
    "AutoModel": "modeling_lusifer.LusiferHFModel",
}
PROCESSOR_AUTO_MAP = {
    "AutoImageProcessor": "processing_mmclip.MMCLIPImageProcessor",
    "AutoProcessor": "processing_mmclip.MMCLIPProcessor",
}


@dataclasses.dataclass
class Source:
    """A loaded model with what the export needs beside the weights."""

    model: MMCLIP
    tokenizer: Path | None
    context_length: int
    task_instructions: dict[str, str]


def load_source(path: str | Path, config: str | Path | None = None, overrides=()) -> Source:
    """An mmclip CLIP checkpoint or a jina-clip-v2 directory, as a ready MMCLIP (fp32, eval mode)."""
    path = Path(path)
    if checkpoint.is_checkpoint(path):
        family, model_config = checkpoint.read_config(path, overrides, config)
        if family != "clip":
            raise ConfigError(f"{path}: a {family} checkpoint, not a CLIP one")
        model = MMCLIP(model_config)
        checkpoint.load_weights(model, path)  # also moves the vision tower to the checkpoint's resolution
        context_length = min(512, model_config.text.max_position_embeddings - 2)  # <s> and </s> included
        return Source(model.eval(), _path(model_config.text.tokenizer), context_length, {})
    if (path / "config.json").is_file():
        released = json.loads((path / "config.json").read_text())
        if "vision_config" not in released or "text_config" not in released:
            raise ConfigError(f"{path}/config.json: not a jina-clip-v2 config (no vision_config / text_config)")
        vision, text = released["vision_config"], released["text_config"]
        settings = [f"pretrained={path}"]
        if "image_size" in vision:
            settings.append(f"vision.image_size={vision['image_size']}")
        dims = [d for d in released.get("matryoshka_dimensions") or [] if d <= text.get("embed_dim", 1 << 30)]
        if dims:
            settings.append(f"matryoshka_dims={json.dumps(dims)}")
        model = create_model(config or JINA_CLIP_V2_CONFIG, overrides=[*settings, *overrides])
        lora = text.get("hf_model_config_kwargs", {})
        has_tokenizer = any((path / name).exists() for name in TOKENIZER_FILES)
        # jina-clip-v2's encode_text truncates at 512 tokens by default (jina-clip-v2.md, section 10).
        return Source(model.eval(), path if has_tokenizer else None, 512, dict(lora.get("task_instructions") or {}))
    raise ConfigError(f"{path}: neither a training checkpoint (model.yaml) nor a jina-clip-v2 directory (config.json)")


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def export(
    source: str | Path,
    output: str | Path,
    *,
    dtype: str = "fp32",
    config: str | Path | None = None,
    tokenizer: str | Path | None = None,
    context_length: int | None = None,
    overrides=(),
) -> Path:
    """Write the Hugging Face directory of ``source`` to ``output`` (see the module docstring);
    a LUSIFER training checkpoint gets :func:`write_lusifer`'s layout."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; export writes a new directory")
    lusifer = checkpoint.is_checkpoint(source) and checkpoint.read_family(source) == "lusifer"
    write = write_lusifer if lusifer else write_clip
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(Path(source), tmp, dtype, config, tokenizer, context_length, overrides)
        for module in sorted(MODELS_DIR.glob("*.py")):
            if module.name != "__init__.py":  # the package's re-exports; remote code imports modules directly
                shutil.copy2(module, tmp / module.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(output, ignore_errors=True)
    os.replace(tmp, output)
    logger.info("exported %s -> %s (%s)", source, output, dtype)
    return output


def write_clip(source: Path, tmp: Path, dtype: str, config, tokenizer, context_length: int | None, overrides) -> None:
    from transformers import AutoTokenizer

    loaded = load_source(source, config, overrides)
    tokenizer_dir = Path(tokenizer) if tokenizer else loaded.tokenizer
    if tokenizer_dir is None:
        raise ConfigError(f"{source}: no tokenizer recorded with the model; pass --tokenizer DIR")
    text_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if len(text_tokenizer) > loaded.model.config.text.vocab_size:
        raise ConfigError(
            f"{tokenizer_dir}: the tokenizer has {len(text_tokenizer)} tokens, the text tower only "
            f"{loaded.model.config.text.vocab_size}"
        )
    context_length = context_length or loaded.context_length
    text_tokenizer.model_max_length = context_length

    clip_fields = _portable_config(loaded.model)
    hf_config = MMCLIPHFConfig(
        clip=clip_fields,
        context_length=context_length,
        task_instructions=loaded.task_instructions,
        architectures=["MMCLIPHFModel"],
        auto_map=AUTO_MAP,
        dtype="bfloat16" if dtype == "bf16" else "float32",
    )
    hf_config.save_pretrained(tmp)
    weights = {
        f"clip.{key}": value.detach().to(DTYPES[dtype]).contiguous() for key, value in loaded.model.state_dict().items()
    }
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    text_tokenizer.save_pretrained(str(tmp))
    image_processor = MMCLIPImageProcessor(size=loaded.model.config.vision.image_size)
    image_processor.save_pretrained(str(tmp))
    MMCLIPProcessor(image_processor=image_processor, tokenizer=text_tokenizer).save_pretrained(str(tmp))
    for name in ("preprocessor_config.json", "processor_config.json"):
        _add_auto_map(tmp / name, PROCESSOR_AUTO_MAP)
    _write_sentence_transformers_files(tmp, loaded.task_instructions)
    (tmp / "README.md").write_text(_model_card(loaded.model, dtype, context_length))


# --- LUSIFER -------------------------------------------------------------------------------------


def write_lusifer(source: Path, tmp: Path, dtype: str, config, tokenizer, context_length: int | None, overrides) -> None:
    """``config.json`` (LusiferHFConfig, auto_map), ``model.safetensors`` (``lusifer.``, LoRA merged by the
    trainer, no LM head), the encoder's tokenizer and the LLM's in ``llm_tokenizer/``."""
    from transformers import AutoTokenizer

    from .models.lusifer import LusiferModel

    _, lusifer = checkpoint.read_config(source, overrides, config)
    tokenizer_dir = Path(tokenizer) if tokenizer else _path(lusifer.encoder.tokenizer)
    if tokenizer_dir is None or not tokenizer_dir.is_dir():
        raise ConfigError(f"{source}: the encoder tokenizer {tokenizer_dir} is not a directory; pass --tokenizer DIR")
    encoder_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    context_length = context_length or min(512, lusifer.encoder.max_position_embeddings - 2)
    encoder_tokenizer.model_max_length = context_length
    model = LusiferModel(lusifer, lm_head=False)
    weights = {k: v for k, v in checkpoint.read_weights(source).items() if not k.startswith("lm_head.")}
    model.load_state_dict(weights)

    portable = dataclasses.asdict(lusifer)
    portable.update(llm_pretrained=None, llm_tokenizer=None)
    portable["encoder"].update(pretrained=None, tokenizer=None)
    LusiferHFConfig(
        lusifer=portable,
        context_length=context_length,
        architectures=["LusiferHFModel"],
        auto_map=LUSIFER_AUTO_MAP,
        dtype="bfloat16" if dtype == "bf16" else "float32",
    ).save_pretrained(tmp)
    state = {f"lusifer.{k}": v.detach().to(DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    encoder_tokenizer.save_pretrained(str(tmp))
    if lusifer.llm_tokenizer is not None:
        AutoTokenizer.from_pretrained(lusifer.llm_tokenizer).save_pretrained(str(tmp / "llm_tokenizer"))
    (tmp / "README.md").write_text(f"""---
library_name: transformers
tags: [mmclip, lusifer, multilingual, text-embeddings]
---
# mmclip LUSIFER

Multilingual text tower ({lusifer.encoder.hidden_size}-d, {lusifer.encoder.depth} layers) -> connector ->
Mistral ({lusifer.llm["hidden_size"]}-d, {lusifer.llm["num_hidden_layers"]} layers, bidirectional), mean-pooled
{lusifer.embed_dim}-d embeddings, weights in {dtype}, text up to {context_length} tokens.

```python
from transformers import AutoModel
model = AutoModel.from_pretrained("DIR", trust_remote_code=True)
embeddings = model.encode_text(["ein Hund im Schnee", "a dog in the snow"])   # numpy, L2-normalised
```
""")


def _portable_config(model: MMCLIP) -> dict:
    """The model config without the local paths it was built from (weights and tokenizer travel along)."""
    fields = dataclasses.asdict(model.config)
    fields["pretrained"] = None
    fields["vision"]["pretrained"] = None
    fields["text"]["pretrained"] = None
    fields["text"]["tokenizer"] = None
    return fields


def _add_auto_map(path: Path, auto_map: dict[str, str]) -> None:
    data = json.loads(path.read_text())
    data["auto_map"] = auto_map
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_sentence_transformers_files(directory: Path, task_instructions: dict[str, str]) -> None:
    """sentence-transformers' own Transformer module (texts and images) followed by Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Normalize",
            "type": "sentence_transformers.base.modules.normalize.Normalize",
        },
    ]
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    features = {"method_output_name": None}
    transformer = {
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": {"method": "get_text_features", **features},
            "image": {"method": "get_image_features", **features},
        },
        "module_output_name": "sentence_embedding",
    }
    (directory / "sentence_bert_config.json").write_text(json.dumps(transformer, indent=2) + "\n")
    (directory / "1_Normalize").mkdir()
    settings = {"prompts": task_instructions, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (directory / "config_sentence_transformers.json").write_text(json.dumps(settings, indent=2) + "\n")


def _model_card(model: MMCLIP, dtype: str, context_length: int) -> str:
    config = model.config
    return f"""---
library_name: transformers
tags: [mmclip, clip, multilingual, sentence-transformers]
---
# mmclip dual encoder

EVA02 vision tower ({config.vision.image_size} px) + Jina-XLM-RoBERTa text tower, {config.embed_dim}-d
Matryoshka embeddings (dims {config.matryoshka_dims}), weights in {dtype}, text up to {context_length} tokens.

```python
from transformers import AutoModel
model = AutoModel.from_pretrained("DIR", trust_remote_code=True)
text = model.encode_text(["ein Hund im Schnee", "a dog in the snow"], truncate_dim={config.matryoshka_dims[0]})
image = model.encode_image(["dog.jpg"])          # PIL images or paths; numpy, L2-normalised
```
"""
