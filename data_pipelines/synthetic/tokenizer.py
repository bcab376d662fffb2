"""A small XLM-R-format tokenizer trained on the synthetic corpus (no tokenizer can be downloaded offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

# XLM-R's special tokens and their ids; <mask> is the last id of the vocabulary.
XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# Kana, CJK ideographs and half-width katakana: scripts written without spaces between words.
UNSPACED_SCRIPTS = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]"


def train_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: str | Path):
    """Train a SentencePiece-style Unigram model on ``texts`` and save it as an XLM-R tokenizer.

    ``vocab_size`` is an upper bound: a small corpus yields fewer pieces.

    Ids follow XLM-R (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` last), so the
    saved directory loads with ``AutoTokenizer`` exactly as ``xlm-roberta-large``'s does.

    Chinese and Japanese characters are kept apart while training, so their pieces are single
    characters: on a small, templated corpus the trainer otherwise learns clause-long pieces (a
    25-character caption in 5 tokens) that share nothing with each other, where a web-scale corpus
    yields short ones by itself. The saved tokenizer is plain XLM-R; it needs no such rule at use.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizer

    # No normalizer: XLMRobertaTokenizer rebuilds itself from the vocabulary on load and keeps only
    # SentencePiece's precompiled charsmap, so any other normalization would differ at use.
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex(UNSPACED_SCRIPTS), behavior="isolated")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - len(XLMR_SPECIALS) - 1, special_tokens=[], unk_token=None, shrinking_factor=0.75
    )
    unigram.train_from_iterator(texts, trainer=trainer)
    trained = json.loads(unigram.to_str())["model"]["vocab"]
    # The trainer counts words in a hash map seeded anew in every process, so its EM sums floats in
    # another order on every run: the same pieces come out with scores that differ in the last
    # bits, near-equal ones in either order. Rounded scores sorted with the piece as tie-break give
    # the same file, ids included, on every run.
    pieces = sorted(
        ((piece, round(score, 8)) for piece, score in trained if piece not in XLMR_SPECIALS),
        key=lambda item: (-item[1], item[0]),
    )
    # Characters the trainer must keep come last, with made-up scores stepping down by 1e-4 from
    # the lowest in that hash map's order: the same scores, given to the same pieces in sorted order.
    last, step = pieces[-1][1], 1e-4
    start = len(pieces)
    while start > 0 and abs((offset := (pieces[start - 1][1] - last) / step) - round(offset)) < 1e-3:
        start -= 1
    tail = pieces[start:]
    pieces[start:] = zip(sorted(piece for piece, _ in tail), sorted((score for _, score in tail), reverse=True))
    vocab = [(token, 0.0) for token in XLMR_SPECIALS] + pieces + [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab)
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer
