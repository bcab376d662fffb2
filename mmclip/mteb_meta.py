"""The export's mteb model metadata: ``mteb_model_meta.json`` beside ``config.json``.

The fields of mteb's ``ModelMeta`` (mteb 2.x) as JSON, written without importing mteb (an
optional dependency): name, revision (a fingerprint of config + weights), parameters, the
Matryoshka dims as ``embed_dim``, max tokens, modalities. mteb resolves model names only through
its registry or the Hub, so a local export's metadata is read from this file by
``eval.mteb_tasks.load_model_meta``, which attaches a loader (``mmclip eval mteb`` runs
``mteb.evaluate`` on it); mteb copies it into its result folder as ``model_meta.json``.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from .search.index import model_fingerprint

MTEB_META_FILE = "mteb_model_meta.json"


def write_mteb_meta(directory: Path, name: str) -> None:
    """``directory/mteb_model_meta.json`` for the export named ``name`` (the final directory's name),
    from its ``config.json`` and weights (call once both are written: the revision hashes them)."""
    from safetensors import safe_open

    config = json.loads((directory / "config.json").read_text())
    if "clip" in config:
        dims = sorted(config["clip"]["matryoshka_dims"], reverse=True)
        modalities = ["image", "text"]
    else:  # LUSIFER: text only, one width
        dims, modalities = [config["lusifer"]["llm"]["hidden_size"]], ["text"]  # the LLM's width
    with safe_open(str(directory / "model.safetensors"), "pt") as weights:
        n_parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    meta = {
        "name": f"mmclip/{name}",
        "revision": model_fingerprint(directory),
        "release_date": datetime.date.today().isoformat(),
        "languages": None,  # what the model was trained on is not recorded in a checkpoint
        "n_parameters": n_parameters,
        "memory_usage_mb": round((directory / "model.safetensors").stat().st_size / 2**20, 1),
        "max_tokens": config["context_length"],
        "embed_dim": dims,  # full width first, then the Matryoshka prefixes
        "license": None,
        "open_weights": True,
        "public_training_code": None,
        "public_training_data": None,
        "framework": ["PyTorch", *(["Sentence Transformers"] if (directory / "modules.json").is_file() else [])],
        "similarity_fn_name": "cosine",
        "use_instructions": bool(config.get("task_instructions")),
        "training_datasets": None,
        "modalities": modalities,
        "model_type": ["dense"],
    }
    (directory / MTEB_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
