"""Field mapping: where a foreign WebDataset layout keeps what mmclip's format calls a caption, a query...

A stream's ``fields`` (config) maps each role of its kind to a place in the raw sample: a member
of the sample by its extension (``txt``, ``en.txt``) or a key of its JSON metadata
(``json:caption``). ``language`` may also be ``identify`` (py3langid on the caption, text or
query) or null (unknown); ``image`` lists the extensions tried, in order::

    fields: {caption: json:caption_en, language: identify, image: [webp, jpg]}

:class:`FieldMap` rewrites a raw sample into mmclip's layout (``formats.decode`` then reads it as
any mmclip sample), so a missing or broken field is skipped with the same reasons. Roles left
out keep mmclip's defaults, which already read img2dataset, LAION, DataComp and COYO shards
(``jpg`` + ``txt`` + ``json``) and Hugging Face WebDataset datasets.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from .formats import IMAGE_EXTENSIONS, BadSample

JSON = "json:"
IDENTIFY = "identify"
# role -> its member in mmclip's layout, which is also where it is looked for by default
ROLES = {
    "image_text": {"caption": "txt"},
    "text": {"text": "txt"},
    "text_pair": {"query": "query.txt", "positive": "positive.txt"},
    "text_triplet": {"query": "query.txt", "positive": "positive.txt", "negatives": "negatives.json"},
}
LANGUAGE_TEXT = {"image_text": "caption", "text": "text", "text_pair": "query", "text_triplet": "query"}


def check_fields(kind: str, fields: dict[str, Any]) -> None:
    """Raises ``ValueError`` naming the first bad entry of a stream's ``fields``."""
    roles = {*ROLES[kind], "language"} | ({"image"} if kind == "image_text" else set())
    for role, place in fields.items():
        if role not in roles:
            raise ValueError(f"{role}: not a field of {kind}; expected one of {sorted(roles)}")
        if role == "image":
            places = [place] if isinstance(place, str) else place
            if not places or not all(isinstance(p, str) and p and not p.startswith(JSON) for p in places):
                raise ValueError("image: a list of member extensions, e.g. [jpg, png]")
        elif role == "language":
            if place is not None and not (place == IDENTIFY or (isinstance(place, str) and place.startswith(JSON))):
                raise ValueError(f"language: json:KEY, {IDENTIFY} or null, got {place!r}")
        elif not isinstance(place, str) or not place or place == JSON:
            raise ValueError(f"{role}: a member extension (txt) or json:KEY, got {place!r}")


class FieldMap:
    """Raw sample in a foreign layout -> raw sample in mmclip's layout (picklable, for the workers)."""

    def __init__(self, kind: str, fields: dict[str, Any] | None = None):
        fields = dict(fields or {})
        check_fields(kind, fields)
        self.kind, self.identity = kind, not fields
        self.roles = {role: (member, fields.get(role, member)) for role, member in ROLES[kind].items()}
        image = fields.get("image", IMAGE_EXTENSIONS)
        self.images = [image] if isinstance(image, str) else list(image)
        self.language = fields.get("language", f"{JSON}language")

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        if self.identity:
            return raw
        key = raw["__key__"]
        metadata = _metadata(raw, key)
        sample: dict[str, Any] = {"__key__": key}
        for role, (member, place) in self.roles.items():
            value = _value(raw, metadata, place, as_list=role == "negatives")
            if value is not None:
                sample[member] = value
        if self.kind == "image_text":
            found = next((ext for ext in self.images if ext in raw), None)
            if found is not None:
                sample["jpg" if found == "jpeg" else found] = raw[found]
        if self.language is None:
            metadata["language"] = None
        elif self.language == IDENTIFY:
            text = sample.get(self.roles[LANGUAGE_TEXT[self.kind]][0])
            metadata["language"] = identify_language(text.decode("utf-8", "replace"))[0] if text else None
        else:
            metadata["language"] = metadata.get(self.language[len(JSON) :])
        sample["json"] = json.dumps(metadata, ensure_ascii=False).encode()
        return sample


def _metadata(raw: dict[str, Any], key: str) -> dict[str, Any]:
    if "json" not in raw:
        return {}
    try:
        metadata = json.loads(raw["json"])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadSample("bad_json", f"{key}: json") from None
    if not isinstance(metadata, dict):
        raise BadSample("bad_metadata", f"{key}: json is not an object")
    return metadata


def _value(raw: dict[str, Any], metadata: dict[str, Any], place: str, as_list: bool) -> bytes | None:
    """A role's bytes: a member as it is; from JSON, a list as JSON (negatives) or its first item
    (MS MARCO's ``positive: [...]``), a string as UTF-8."""
    if not place.startswith(JSON):
        return raw.get(place)
    value = metadata.pop(place[len(JSON) :], None)
    if as_list:
        return None if value is None else json.dumps(value, ensure_ascii=False).encode()
    if isinstance(value, list):
        value = value[0] if value else ""
    return None if value is None else str(value).encode()


@functools.cache
def _language_identifier():
    # Loaded once per process (about 0.5 s); normalised probabilities make confidences comparable.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """py3langid's ISO 639 code for ``text`` and its probability."""
    return _language_identifier().classify(text)
