"""CLIP Benchmark plug-in: model type ``mmclip``, and clip_benchmark's own ``eval`` command.

clip_benchmark 1.6.2 has no plug-in entry point: its CLI offers ``--model_type`` from the list
``clip_benchmark.models.MODEL_TYPES`` and loads through ``TYPE2FUNC``. :func:`register` adds
``mmclip`` to both (in place, so the CLI's ``choices`` see it); :func:`main` then runs
``clip_benchmark.cli.main`` with the arguments unchanged::

    mmclip eval clip-benchmark eval --model_type mmclip --pretrained runs/hf --model full 64 256 \\
        --dataset xtd10 --language de en zh --dataset_root DIR --recall_k 1 5 10

``--pretrained`` is an ``mmclip export`` directory or a training checkpoint (``model.yaml``).
``--model`` picks the Matryoshka width: ``full`` (or any name that is not a number) or one of the
model's dims, so a list of them evaluates every dimension in one run (the paper's Table 5).
Metrics, datasets (flickr30k, mscoco_captions, xtd10, crossmodal3600, zero-shot classification,
...) and the JSON output are clip_benchmark's.
"""

from __future__ import annotations

import functools
import sys
import weakref
from pathlib import Path

import torch

from mmclip import checkpoint
from mmclip.models.pixels import normalize, resize_center_crop

from .retrieval import BenchmarkModel, Tokenize

MODEL_TYPE = "mmclip"
# Full-width image embeddings per loaded model (BenchmarkModel's image_cache), for as long as the
# model lives: clip_benchmark encodes a set's images again for every language and --model width.
_IMAGE_EMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_mmclip(model_name: str, pretrained: str, cache_dir=None, device="cpu", **kwargs):
    """clip_benchmark's loader contract: ``(model, transform, tokenizer)``."""
    from transformers import AutoTokenizer

    path = Path(pretrained)
    if checkpoint.is_checkpoint(path):  # an mmclip model checkpoint
        from mmclip.export import load_source

        source = load_source(path)
        clip, context_length = source.model, source.context_length
        if source.tokenizer is None:
            raise ValueError(f"{path}: its model.yaml names no text.tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(str(source.tokenizer))
        dims, image_size = clip.config.matryoshka_dims, clip.config.vision.image_size
    elif (path / "config.json").is_file():  # an mmclip export: image-text needs the dual encoder's module
        hf_model = _load_export(str(path.resolve()), torch.device(device).type == "cuda")
        if "image" not in hf_model.modalities:
            raise ValueError(f"--pretrained {pretrained}: a {'/'.join(hf_model.modalities)} model, not image-text")
        clip, context_length, tokenizer = hf_model.clip, hf_model.config.context_length, hf_model.tokenizer
        dims, image_size = hf_model.matryoshka_dims, hf_model.image_processor.size
    else:
        raise ValueError(
            f"--pretrained {pretrained}: neither an mmclip export (config.json) nor a checkpoint (model.yaml)"
        )
    truncate_dim = int(model_name) if model_name.isdigit() else None
    if truncate_dim is not None and truncate_dim not in dims:
        raise ValueError(f"--model {model_name}: not one of the Matryoshka dims {dims}")
    # An export is loaded once per run (below), so its image embeddings serve every call.
    model = BenchmarkModel(clip.eval(), truncate_dim, image_cache=_IMAGE_EMBEDDINGS.setdefault(clip, {})).to(device)
    transform = functools.partial(_eval_transform, size=image_size)
    return model, transform, Tokenize(tokenizer, context_length)


@functools.lru_cache(maxsize=2)
def _load_export(path: str, on_cuda: bool):
    """Loaded once per run: clip_benchmark calls the loader for every model x dataset x language."""
    from transformers import AutoModel

    # fp32 off CUDA, as jina-clip-v2 does: bf16 weights would otherwise run bf16 CPU matmuls.
    return AutoModel.from_pretrained(path, trust_remote_code=True, dtype="auto" if on_cuda else torch.float32)


def _eval_transform(image, size: int) -> torch.Tensor:
    return normalize(resize_center_crop(image, size))


def register() -> None:
    from clip_benchmark import models

    models.TYPE2FUNC[MODEL_TYPE] = load_mmclip
    if MODEL_TYPE not in models.MODEL_TYPES:
        models.MODEL_TYPES.append(MODEL_TYPE)  # the same list object the CLI's --model_type choices use


def main(argv: list[str]) -> int:
    """``clip_benchmark ARGV`` with the ``mmclip`` model type available."""
    register()
    from clip_benchmark import cli

    saved = sys.argv
    sys.argv = ["clip_benchmark", *argv]
    try:
        cli.main()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
