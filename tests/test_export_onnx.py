"""`mmclip export --onnx`: both towers as ONNX graphs with dynamic batch and sequence axes, equal to
the torch model on onnxruntime (cosine >= 0.9999) at two batch sizes and two sequence lengths,
Matryoshka truncation outside the graph, and the int8 copies close to them."""

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from mmclip.cli import main
from mmclip.export_onnx import OnnxEncoder
from mmclip.search import load_model

from .conftest import MULTILINGUAL_SENTENCES
from .test_export import cosines, make_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    checkpoint, _ = make_checkpoint(root)
    assert main(["export", str(checkpoint), "--output", str(root / "out"), "--onnx", "--onnx-int8"]) == 0
    return root / "out"


def test_graphs_have_dynamic_batch_and_sequence_axes(exported):
    names = sorted(path.name for path in (exported / "onnx").iterdir())
    assert names == ["text.onnx", "text_int8.onnx", "vision.onnx", "vision_int8.onnx"]

    def shapes(path):
        graph = onnx.load(str(path)).graph
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*graph.input, *graph.output]}

    text, vision = shapes(exported / "onnx" / "text.onnx"), shapes(exported / "onnx" / "vision.onnx")
    assert text["input_ids"] == text["attention_mask"] == ["batch", "sequence"]
    assert vision["pixel_values"] == ["batch", 3, 56, 56]  # the position embeddings fix the image size
    assert text["text_embeds"][0] == vision["image_embeds"][0] == "batch"


def test_onnx_towers_match_torch_at_two_batch_sizes_and_two_lengths(exported):
    model, encoder = load_model(exported), OnnxEncoder(exported)
    for batch in (1, 5):
        texts = (MULTILINGUAL_SENTENCES * 2)[:batch]
        for length in (8, 40):  # padded to the length: most rows are cut at 8, padded at 40
            tokens = model.tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                                     return_tensors="pt", return_token_type_ids=False)
            with torch.no_grad():
                expected = model.get_text_features(tokens["input_ids"], tokens["attention_mask"]).numpy()
            ours = encoder.run_text(tokens["input_ids"].numpy(), tokens["attention_mask"].numpy())
            assert ours.shape == (batch, 64)
            assert cosines(ours, expected).min() >= 0.9999, (batch, length)
        pixels = torch.randn(batch, 3, 56, 56, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model.get_image_features(pixels).numpy()
        assert cosines(encoder.run_vision(pixels.numpy()), expected).min() >= 0.9999, batch


def test_encode_api_truncates_outside_the_graph_and_int8_stays_close(exported):
    model, encoder, int8 = load_model(exported), OnnxEncoder(exported), OnnxEncoder(exported, int8=True)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    texts = MULTILINGUAL_SENTENCES
    for dim in (None, 16):
        text, image = encoder.encode_text(texts, truncate_dim=dim), encoder.encode_image(images, truncate_dim=dim)
        assert text.shape == (len(texts), dim or 64) and image.shape == (3, dim or 64)
        np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, atol=1e-5)
        assert cosines(text, model.encode_text(texts, truncate_dim=dim)).min() >= 0.9999
        assert cosines(image, model.encode_image(images, truncate_dim=dim)).min() >= 0.9999
        # int8 weights: measured minimum cosine 0.9999 (text), 0.9988 (images) on this model.
        assert cosines(int8.encode_text(texts, truncate_dim=dim), text).min() >= 0.99
        assert cosines(int8.encode_image(images, truncate_dim=dim), image).min() >= 0.99
    with pytest.raises(ValueError, match=r"Matryoshka dimensions \[16, 32, 64\], got 48"):
        encoder.encode_text(texts, truncate_dim=48)
