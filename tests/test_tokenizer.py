"""Tokenizers in XLM-R's real format: trained locally, loaded with AutoTokenizer, fed to the tower."""

import pytest
import torch

from mmclip import ConfigError
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.tokenizer import load_tokenizer

from .conftest import MULTILINGUAL_SENTENCES

CORPUS = MULTILINGUAL_SENTENCES * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, vocab_size=300, output_dir=path)
    return path


def test_trained_tokenizer_has_xlmr_special_ids(tokenizer_dir, tiny_config):
    tokenizer = load_tokenizer(tokenizer_dir, tiny_config.text)
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == len(tokenizer) - 1 <= 300
    ids = tokenizer("красный куб 红色")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "красный куб 红色"


def test_tokenizer_feeds_the_text_tower(tokenizer_dir, tiny_model, tiny_config):
    tokenizer = load_tokenizer(tokenizer_dir, tiny_config.text)
    batch = tokenizer(CORPUS[:7], padding=True, return_tensors="pt")
    embeds = tiny_model.encode_text(batch["input_ids"], batch["attention_mask"])
    alone = tiny_model.encode_text(tokenizer(CORPUS[3:4], return_tensors="pt")["input_ids"])
    assert embeds.shape == (7, 64)
    assert torch.allclose(embeds[3], alone[0], atol=1e-5)


def test_tokenizer_that_does_not_fit_the_tower_is_rejected(tokenizer_dir, tiny_config):
    tiny_config.text.vocab_size = 50
    with pytest.raises(ConfigError, match="text.vocab_size: the tokenizer has"):
        load_tokenizer(tokenizer_dir, tiny_config.text)
    tiny_config.text.vocab_size, tiny_config.text.pad_token_id = 1000, 0
    with pytest.raises(ConfigError, match="text.pad_token_id"):
        load_tokenizer(tokenizer_dir, tiny_config.text)


@pytest.mark.parametrize("kind", ["xlm-r", "mistral", "xlm-r, left padding"])
def test_batch_tokenization_gives_transformers_ids(tokenizer_dir, tmp_path, kind):
    # tokenize_batch runs the fast tokenizer's backend itself: the same tensors as transformers' call.
    from transformers import AutoTokenizer

    from data_pipelines.synthetic.tiny_llm import train_llm_tokenizer
    from mmclip.models.processing_mmclip import tokenize_batch
    from mmclip.tokenizer import tokenize

    if kind == "mistral":  # byte-level BPE, <s> without </s>, its own <pad>
        train_llm_tokenizer(CORPUS, 400, tmp_path / "llm")
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llm")
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.padding_side = "left" if "left" in kind else "right"
    texts = [*MULTILINGUAL_SENTENCES[:6], "", " ".join(MULTILINGUAL_SENTENCES)]  # an empty one, one truncated
    for max_length in (8, 64):
        expected = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ours = tokenize_batch(tokenizer, texts, max_length)
        assert ours["input_ids"].shape[1] == min(max_length, expected["input_ids"].shape[1])
        assert torch.equal(ours["input_ids"], expected["input_ids"])
        assert torch.equal(ours["attention_mask"], expected["attention_mask"])
        assert torch.equal(tokenize(tokenizer, texts, max_length)["input_ids"], expected["input_ids"])
    # The backend's settings do not leak into transformers' own calls.
    assert tokenizer(texts[:2])["input_ids"] == [tokenizer(text)["input_ids"] for text in texts[:2]]
    assert len({len(ids) for ids in tokenizer(texts[:6])["input_ids"]}) > 1  # unpadded
