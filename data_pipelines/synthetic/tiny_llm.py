"""A tiny Mistral checkpoint directory, for tests and the CPU demo of LUSIFER (no model can be downloaded).

``write_tiny_mistral(DIR, texts)`` trains a byte-level BPE tokenizer on ``texts`` with
``tokenizers`` and writes a randomly initialised ``MistralForCausalLM`` with ``save_pretrained``:
``config.json``, ``model.safetensors`` and the tokenizer files, the same formats as a real
Mistral directory, so every loading path is the one a 7B model takes. Like Mistral's own
tokenizer it adds ``<s>`` and not ``</s>``; ``<pad>`` is its own token.

The model is pretrained for ``pretrain_steps`` of causal language modelling on the same texts
(transformers' own loss), because LUSIFER's alignment freezes the LLM: a randomly initialised one
predicts the uniform distribution whatever its inputs, and there would be nothing to align to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
TINY_MISTRAL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
}


def train_llm_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: str | Path):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (bos ``<s>`` added, eos ``</s>``, pad ``<pad>``), saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer


def write_tiny_mistral(
    output_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int = 2000,
    seed: int = 0,
    pretrain_steps: int = 200,
    batch_size: int = 32,
    max_length: int = 64,
    lr: float = 3e-3,
    **sizes,
) -> Path:
    """Tokenizer + ``MistralForCausalLM`` (``TINY_MISTRAL`` updated with ``sizes``), pretrained on
    ``texts``, saved in ``output_dir``."""
    from transformers import MistralConfig, MistralForCausalLM

    output_dir = Path(output_dir)
    texts = list(texts)
    tokenizer = train_llm_tokenizer(texts, vocab_size, output_dir)
    config = MistralConfig(
        **{**TINY_MISTRAL, **sizes},
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MistralForCausalLM(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        for step in range(pretrain_steps):
            index = torch.randint(len(texts), (batch_size,)).tolist()
            batch = tokenizer([texts[i] + tokenizer.eos_token for i in index], max_length=max_length,
                              truncation=True, padding=True, return_tensors="pt")
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval().save_pretrained(str(output_dir))
    return output_dir
