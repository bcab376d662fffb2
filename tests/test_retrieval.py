"""Held-out retrieval: the eval layout is parsed, and clip_benchmark's recall comes out as constructed."""

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn
from transformers import BatchEncoding

from mmclip.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from eval.retrieval import evaluate_retrieval, find_annotation_files, read_annotations

N = 12  # images; >= 10 for recall@10
LEVEL = 20  # image i is a flat grey of level LEVEL * i


class IndexTokenizer:
    """HF tokenizer interface: caption "item i" -> the single token id i."""

    def __call__(self, texts, **kwargs):
        ids = torch.tensor([[int(text.split()[1])] for text in texts])
        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})


class KnownModel(nn.Module):
    """Embeddings built so the ranking is known.

    Image i -> e_i. Caption i -> e_i for the first half; for the second half e_(i - N/2) + 0.5 e_i, so
    the right image comes second (text -> image recall@1 = 0.5, recall@5 = 1), while every image
    still ranks its own caption first (image -> text recall@1 = 1).
    """

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(vision=SimpleNamespace(image_size=28))

    def encode_image(self, pixel_values, truncate_dim=None):
        level = pixel_values[:, 0].mean((1, 2)) * OPENAI_CLIP_STD[0] * 255 + OPENAI_CLIP_MEAN[0] * 255
        return torch.eye(N)[(level / LEVEL).round().long()]

    def truncate(self, embeds, dim=None):
        return embeds if dim is None else embeds[..., :dim]

    def encode_text(self, input_ids, attention_mask=None, truncate_dim=None):
        index = input_ids[:, 0]
        embeds = torch.eye(N)[index]
        second_half = index >= N // 2
        embeds[second_half] = torch.eye(N)[index[second_half] - N // 2] + 0.5 * embeds[second_half]
        return embeds


def write_eval_set(root, names):
    """clip_benchmark's layout: one annotation file per name, images relative to ``root``."""
    (root / "xtd10" / "images").mkdir(parents=True)
    paths = []
    for i in range(N):
        paths.append(f"xtd10/images/{i}.png")
        Image.new("RGB", (40, 32), (LEVEL * i,) * 3).save(root / paths[-1])
    annotation = {"image_paths": paths, "annotations": [f"item {i}" for i in range(N)], "indices": list(range(N))}
    for name in names:
        (root / name).write_text(json.dumps(annotation))


def test_layout_prefers_crossmodal3600_and_maps_jp_to_ja(tmp_path):
    names = ["xtd10-en.json", "crossmodal3600_captions-en.json", "xtd10-jp.json", "crossmodal3600_captions-hi.json"]
    write_eval_set(tmp_path, names)
    (tmp_path / "unrelated.json").write_text("{}")
    files = find_annotation_files(tmp_path)
    assert {lang: path.name for lang, path in files.items()} == {
        "en": "crossmodal3600_captions-en.json",
        "hi": "crossmodal3600_captions-hi.json",
        "ja": "xtd10-jp.json",
    }
    items = read_annotations(files["en"])
    assert items[3] == ("xtd10/images/3.png", ["item 3"])


def test_missing_layout_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation files"):
        find_annotation_files(tmp_path)


def test_recall_matches_the_constructed_ranking(tmp_path):
    write_eval_set(tmp_path, ["crossmodal3600_captions-en.json", "xtd10-de.json"])
    model = KnownModel().train()
    metrics = evaluate_retrieval(model, tmp_path, IndexTokenizer(), batch_size=5)  # batches split the set
    expected = {
        "image_retrieval_recall@1": 0.5,
        "image_retrieval_recall@5": 1.0,
        "image_retrieval_recall@10": 1.0,
        "text_retrieval_recall@1": 1.0,
        "text_retrieval_recall@5": 1.0,
        "text_retrieval_recall@10": 1.0,
    }
    assert metrics == {"de": expected, "en": expected}
    assert model.training  # given back in the mode it came in


def test_unknown_language_is_an_error(tmp_path):
    write_eval_set(tmp_path, ["xtd10-en.json"])
    with pytest.raises(ValueError, match="no annotation file"):
        evaluate_retrieval(KnownModel(), tmp_path, IndexTokenizer(), languages=["en", "fr"])


def test_real_model_on_the_synthetic_layout(tmp_path, tiny_model):
    """MMCLIP and an XLM-R-format tokenizer through the adapter: every language, scores in [0, 1]."""
    from data_pipelines.synthetic.tokenizer import train_tokenizer

    write_eval_set(tmp_path, ["crossmodal3600_captions-en.json", "crossmodal3600_captions-ar.json"])
    tokenizer = train_tokenizer([f"item {i}" for i in range(N)] * 4, 100, tmp_path / "tokenizer")
    metrics = evaluate_retrieval(tiny_model, tmp_path, tokenizer, context_length=8, recall_k=(1, 10))
    assert sorted(metrics) == ["ar", "en"]
    assert sorted(metrics["en"]) == [
        "image_retrieval_recall@1",
        "image_retrieval_recall@10",
        "text_retrieval_recall@1",
        "text_retrieval_recall@10",
    ]
    assert all(0 <= value <= 1 for m in metrics.values() for value in m.values())
