"""``mmclip export ... --onnx``: the two towers as ONNX graphs, and an onnxruntime encoder for them.

Written into the export directory::

    onnx/vision.onnx   pixel_values [batch, 3, S, S] float32        -> image_embeds [batch, D]
    onnx/text.onnx     input_ids, attention_mask [batch, sequence] int64 -> text_embeds [batch, D]
    onnx/*_int8.onnx   the same with int8 weights (--onnx-int8: onnxruntime's dynamic quantization)

The graphs return full-width, unnormalised embeddings, with dynamic batch and sequence axes (the
image size is fixed by the position embeddings). The Matryoshka truncation and the L2
normalisation stay outside, in :class:`OnnxEncoder`, so one graph serves every dim. The graphs are
traced in fp32 on the CPU with torch's SDPA attention (``torch.onnx.export(dynamo=False)``)::

    encoder = OnnxEncoder("DIR")                       # onnxruntime, CPU
    text = encoder.encode_text(["ein Hund im Schnee"], truncate_dim=256)
    image = encoder.encode_image(["dog.jpg"])
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import MMCLIP
from .models.processing_mmclip import tokenize_batch

ONNX_DIR = "onnx"
OPSET = 17


class _VisionTower(nn.Module):
    def __init__(self, model: MMCLIP):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class _TextTower(nn.Module):
    def __init__(self, model: MMCLIP):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask)


def export_onnx(model: MMCLIP, directory: Path, int8: bool = False) -> list[Path]:
    """Write ``directory/onnx/{vision,text}.onnx`` (and the int8 copies); the paths written."""
    import copy

    out = directory / ONNX_DIR
    out.mkdir(parents=True, exist_ok=True)
    # Traced on the CPU, where every attention backend resolves to torch SDPA (ONNX has no flash kernels).
    model = copy.deepcopy(model).cpu().float().eval()
    size = model.config.vision.image_size
    ids = torch.full((2, 7), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # a padded row, so the graph keeps the masking path
    towers = [
        ("vision", _VisionTower(model), (torch.zeros(2, 3, size, size),), ["pixel_values"], "image_embeds",
         {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}),
        ("text", _TextTower(model), (ids, mask), ["input_ids", "attention_mask"], "text_embeds",
         {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
          "text_embeds": {0: "batch"}}),
    ]
    written = []
    with torch.no_grad():
        for name, tower, args, inputs, output, axes in towers:
            path = out / f"{name}.onnx"
            torch.onnx.export(tower, args, str(path), input_names=inputs, output_names=[output],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            written.append(path)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))  # the quantizer logs a line per tensor it leaves in fp32
        try:
            for path in list(written):
                quantized = path.with_name(f"{path.stem}_int8.onnx")
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
                written.append(quantized)
        finally:
            root.setLevel(level)
    return written


class OnnxEncoder:
    """``encode_text`` / ``encode_image`` of an export's ONNX towers on onnxruntime: the same API,
    tokenizer and image processor as the export's ``AutoModel``, numpy in and out."""

    def __init__(self, model_dir: str | Path, int8: bool = False, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        import onnxruntime
        from transformers import AutoTokenizer

        from .models.processing_mmclip import MMCLIPImageProcessor

        self.model_dir = Path(model_dir)
        suffix = "_int8" if int8 else ""
        paths = {name: self.model_dir / ONNX_DIR / f"{name}{suffix}.onnx" for name in ("vision", "text")}
        missing = [str(path) for path in paths.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"no ONNX graphs {missing}; export with mmclip export --onnx{' --onnx-int8' * int8}")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=list(providers))
                         for name, path in paths.items()}
        config = json.loads((self.model_dir / "config.json").read_text())
        self.dims = list(config["clip"]["matryoshka_dims"])
        self.context_length = config["context_length"]
        self.task_instructions = config.get("task_instructions") or {}
        # trust_remote_code: the tokenizer's AutoConfig is the export's own configuration_mmclip.py.
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), trust_remote_code=True)
        self.image_processor = MMCLIPImageProcessor.from_pretrained(str(self.model_dir))

    def encode_text(self, texts: list[str], task: str | None = None, batch_size: int = 32,
                    truncate_dim: int | None = None) -> np.ndarray:
        """``[N, dim]`` float32, L2-normalised after truncation, in input order."""
        prefix = "" if task is None else self.task_instructions[task]
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenize_batch(self.tokenizer, [prefix + t for t in texts[start:start + batch_size]],
                                    self.context_length)
            out.append(self.run_text(tokens["input_ids"].numpy(), tokens["attention_mask"].numpy()))
        return self.finish(np.concatenate(out), truncate_dim)

    def encode_image(self, images, batch_size: int = 32, truncate_dim: int | None = None) -> np.ndarray:
        """``[N, dim]`` float32 for PIL images or file paths."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = [str(image) if isinstance(image, Path) else image for image in images[start:start + batch_size]]
            out.append(self.run_vision(self.image_processor(batch)["pixel_values"].numpy()))
        return self.finish(np.concatenate(out), truncate_dim)

    def run_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The text graph on token arrays: full-width, unnormalised ``[B, D]``."""
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self.sessions["text"].run(None, feed)[0]

    def run_vision(self, pixel_values: np.ndarray) -> np.ndarray:
        """The vision graph on normalised pixels ``[B, 3, S, S]``: full-width, unnormalised ``[B, D]``."""
        return self.sessions["vision"].run(None, {"pixel_values": pixel_values.astype(np.float32)})[0]

    def finish(self, embeds: np.ndarray, truncate_dim: int | None) -> np.ndarray:
        """The Matryoshka prefix, then L2 normalisation (what the torch model does inside)."""
        if truncate_dim is not None:
            if truncate_dim not in self.dims:
                raise ValueError(f"truncate_dim must be one of the Matryoshka dimensions {self.dims}, got {truncate_dim}")
            embeds = embeds[:, :truncate_dim]
        embeds = embeds.astype(np.float32)
        return embeds / np.linalg.norm(embeds, axis=-1, keepdims=True).clip(min=1e-12)
