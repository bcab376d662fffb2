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
