"""mmclip's shard format, version 1: one WebDataset layout per kind of training sample.

The same layout serves real and synthetic data; ``docs/data.md`` documents every field. A shard
set is a directory of ``{kind}-{index:06d}.tar`` files plus ``manifest.json`` (format, version,
kind, per-shard sample counts) and open_clip's ``sizes.json``. Within a tar, the files of one
sample share a key (``{key}.{field}``):

============== ============================================================================
kind           files per sample
============== ============================================================================
image_text     ``jpg`` | ``png`` | ``webp`` (the image), ``txt`` (caption), ``json`` (metadata)
text_pair      ``query.txt``, ``positive.txt``, ``json`` (metadata)
text_triplet   ``query.txt``, ``positive.txt``, ``negatives.json`` (list of str), ``json``
text           ``txt`` (a passage of plain text), ``json`` (metadata)
============== ============================================================================

Metadata (``json``) always has ``language`` (ISO 639-1 or null) and ``source``; image-text adds
``caption_kind`` (short | long | qa) and the stored ``width`` / ``height``; text pairs add
``pair_kind`` (translation | paraphrase | qa | other). Extra metadata keys are kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_NAME = "mmclip-shards"
FORMAT_VERSION = 1
KINDS = ("image_text", "text_pair", "text_triplet", "text")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # read in this order; a jpeg is stored as jpg
CAPTION_KINDS = ("short", "long", "qa")
PAIR_KINDS = ("translation", "paraphrase", "qa", "other")
NUM_HARD_NEGATIVES = 7  # jina-clip-v2 stage 3


class BadSample(ValueError):
    """A sample that cannot be used; ``reason`` is a short stable tag for counting and logs."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class ImageText:
    key: str
    image: bytes  # encoded file bytes (JPEG, PNG or WebP)
    image_format: str  # jpg, png or webp
    caption: str
    language: str | None = None
    source: str = ""
    caption_kind: str = "short"
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    kind = "image_text"


@dataclass
class TextPair:
    key: str
    query: str
    positive: str
    language: str | None = None
    source: str = ""
    pair_kind: str = "other"
    extra: dict[str, Any] = field(default_factory=dict)

    kind = "text_pair"


@dataclass
class TextTriplet:
    key: str
    query: str
    positive: str
    negatives: list[str]
    language: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    kind = "text_triplet"


@dataclass
class Text:
    """Plain text (Wikitext-style corpora): LUSIFER's masked-reconstruction data."""

    key: str
    text: str
    language: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    kind = "text"


Record = ImageText | TextPair | TextTriplet | Text


def shard_name(kind: str, index: int) -> str:
    return f"{kind}-{index:06d}.tar"


def encode(record: Record) -> dict[str, Any]:
    """A record as the ``{"__key__": ..., field: bytes}`` dict webdataset's TarWriter writes."""
    metadata = {k: v for k, v in asdict(record).items() if k not in _CONTENT_FIELDS[record.kind]}
    metadata.update(metadata.pop("extra"))
    sample: dict[str, Any] = {"__key__": record.key, "json": json.dumps(metadata, ensure_ascii=False).encode()}
    if isinstance(record, ImageText):
        sample[record.image_format] = record.image
        sample["txt"] = record.caption.encode()
    elif isinstance(record, Text):
        sample["txt"] = record.text.encode()
    else:
        sample["query.txt"] = record.query.encode()
        sample["positive.txt"] = record.positive.encode()
        if isinstance(record, TextTriplet):
            sample["negatives.json"] = json.dumps(record.negatives, ensure_ascii=False).encode()
    return sample


def decode(kind: str, sample: dict[str, Any]) -> Record:
    """The record in a raw tar sample (bytes per field); raises :class:`BadSample` with a reason.

    Images stay encoded: decoding belongs to the loader's workers, at the stage's resolution.
    """
    key = sample.get("__key__", "")
    metadata = _json(sample, "json", key) if "json" in sample else {}  # foreign shards may have none
    if not isinstance(metadata, dict):
        raise BadSample("bad_metadata", f"{key}: json is not an object")
    language, source = metadata.pop("language", None), metadata.pop("source", "")
    if kind == "image_text":
        image_format = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if image_format is None:
            raise BadSample("missing_image", key)
        image = sample[image_format]
        if not image:
            raise BadSample("empty_image", key)
        return ImageText(
            key=key,
            image=image,
            image_format="jpg" if image_format == "jpeg" else image_format,
            caption=_text(sample, "txt", key),
            language=language,
            source=source,
            caption_kind=metadata.pop("caption_kind", "short"),
            width=metadata.pop("width", None),
            height=metadata.pop("height", None),
            extra=metadata,
        )
    if kind == "text":
        return Text(key, _text(sample, "txt", key), language, source, metadata)
    query, positive = _text(sample, "query.txt", key), _text(sample, "positive.txt", key)
    if kind == "text_pair":
        pair_kind = metadata.pop("pair_kind", "other")
        return TextPair(key, query, positive, language, source, pair_kind, metadata)
    if kind == "text_triplet":
        negatives = _json(sample, "negatives.json", key)
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise BadSample("bad_negatives", f"{key}: negatives.json is not a list of non-empty strings")
        return TextTriplet(key, query, positive, negatives, language, source, metadata)
    raise ValueError(f"unknown sample kind {kind!r}; expected one of {KINDS}")


_CONTENT_FIELDS = {
    "image_text": {"key", "image", "image_format", "caption"},
    "text_pair": {"key", "query", "positive"},
    "text_triplet": {"key", "query", "positive", "negatives"},
    "text": {"key", "text"},
}


def _field(sample: dict[str, Any], name: str, key: str) -> bytes:
    if name not in sample:
        raise BadSample("missing_field", f"{key}: no {name}")
    value = sample[name]
    return value.encode() if isinstance(value, str) else value


def _text(sample: dict[str, Any], name: str, key: str) -> str:
    try:
        text = _field(sample, name, key).decode("utf-8")
    except UnicodeDecodeError:
        raise BadSample("non_utf8_text", f"{key}: {name}") from None
    if not text.strip():
        raise BadSample("empty_text", f"{key}: {name}")
    return text


def _json(sample: dict[str, Any], name: str, key: str) -> Any:
    try:
        return json.loads(_field(sample, name, key).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadSample("bad_json", f"{key}: {name}") from None
