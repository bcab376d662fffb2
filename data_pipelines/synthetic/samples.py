"""Training samples, one builder per shard set: ``builder(context, index) -> record``.

A builder draws everything from ``rng_for(seed, set, index)``, so sample ``index`` is the same
whichever worker makes it. Records keep the scene's attributes in their metadata (``scene``;
triplets also ``negative_scenes``), so tests and analyses can check what a text claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmclip.data.formats import NUM_HARD_NEGATIVES, PAIR_KINDS, ImageText, TextPair, TextTriplet

from . import documents
from .languages import GRAMMARS
from .randomness import pick, rng_for
from .render import SCENE_LONG_SIDE, encode_jpeg, render_scene
from .scenes import Scene, hard_negatives, sample_scene

SINGLE_SHARE = 0.35  # one-group scenes, where a set mixes them with pairs
DOCUMENT_EVERY = 4  # default: every 4th image-text sample is a document page (QA in mm;s, described in mm;l)
SCENE_SOURCE, DOCUMENT_SOURCE = "synthetic/scenes", "synthetic/documents"


@dataclass(frozen=True)
class Context:
    seed: int
    languages: tuple[str, ...]
    image_side: int = SCENE_LONG_SIDE  # long side of scene images, in pixels
    document_every: int = DOCUMENT_EVERY  # every n-th image-text sample is a document page; 0: none

    def is_document(self, index: int) -> bool:
        return self.document_every > 0 and index % self.document_every == self.document_every - 1

    def language(self, index: int) -> str:
        """Languages take turns, so even a tiny corpus has every one."""
        return self.languages[index % len(self.languages)]


def image_text_short(ctx: Context, index: int) -> ImageText:
    """One-sentence scene captions, with a "question answer" document page every ``document_every``
    (the paper puts DocVQA-style QA sets among the short captions)."""
    rng = rng_for(ctx.seed, "image_text_short", index)
    if ctx.is_document(index):
        return document_record(f"short-{index:08d}", rng, pick(rng, ctx.languages), qa=True)
    scene = sample_scene(rng, pair=rng.random() >= SINGLE_SHARE)
    language, template = ctx.language(index), int(rng.integers(2))
    caption = GRAMMARS[language].caption(scene, template)
    return scene_record(ctx, f"short-{index:08d}", scene, rng, caption, language, "short", template=template)


def image_text_long(ctx: Context, index: int) -> ImageText:
    """Long scene captions, with a document page described at length every ``document_every``."""
    rng = rng_for(ctx.seed, "image_text_long", index)
    key = f"long-{index:08d}"
    if ctx.is_document(index):
        return document_record(key, rng, "en", qa=False)
    scene = sample_scene(rng, pair=True)
    language = ctx.language(index)
    return scene_record(ctx, key, scene, rng, GRAMMARS[language].long_caption(scene), language, "long")


def text_pair(ctx: Context, index: int) -> TextPair:
    """Translations, paraphrases (the two templates) and questions answered by a caption, in turn."""
    rng = rng_for(ctx.seed, "text_pair", index)
    kinds = [k for k in PAIR_KINDS if k != "other" and (k != "translation" or len(ctx.languages) > 1)]
    kind, language = kinds[index % len(kinds)], ctx.language(index)
    scene = sample_scene(rng, pair=kind == "qa" or rng.random() >= SINGLE_SHARE)
    grammar, template = GRAMMARS[language], int(rng.integers(2))
    extra = {}
    if kind == "translation":
        other = pick(rng, [code for code in ctx.languages if code != language])
        query, positive = grammar.caption(scene, template), GRAMMARS[other].caption(scene, template)
        extra["positive_language"] = other
    elif kind == "paraphrase":
        query, positive = grammar.caption(scene, template), grammar.caption(scene, 1 - template)
    else:  # "what is left of B?" -> a caption naming A, left of B
        query, positive = grammar.question(scene), grammar.caption(scene, template)
    return TextPair(
        f"pair-{index:08d}", query, positive, language, SCENE_SOURCE, kind, {"scene": scene.attributes(), **extra}
    )


def text_triplet(ctx: Context, index: int) -> TextTriplet:
    """Query and positive: the two templates of one scene; negatives: the scene with one attribute changed."""
    rng = rng_for(ctx.seed, "text_triplet", index)
    scene = sample_scene(rng, pair=True)
    language = ctx.language(index)
    grammar = GRAMMARS[language]
    negatives = hard_negatives(scene, rng, NUM_HARD_NEGATIVES)
    return TextTriplet(
        key=f"triplet-{index:08d}",
        query=grammar.caption(scene, 0),
        positive=grammar.caption(scene, 1),
        negatives=[grammar.caption(negative, 1) for _, negative in negatives],  # same template as the positive
        language=language,
        source=SCENE_SOURCE,
        extra={
            "scene": scene.attributes(),
            "negative_attributes": [attribute for attribute, _ in negatives],
            "negative_scenes": [negative.attributes() for _, negative in negatives],
        },
    )


def scene_record(
    ctx: Context, key: str, scene: Scene, rng, caption: str, language: str, caption_kind: str, **extra
) -> ImageText:
    image = render_scene(scene, rng, ctx.image_side)
    return ImageText(
        key=key,
        image=encode_jpeg(image, quality=int(rng.integers(82, 96))),
        image_format="jpg",
        caption=caption,
        language=language,
        source=SCENE_SOURCE,
        caption_kind=caption_kind,
        width=image.width,
        height=image.height,
        extra={"scene": scene.attributes(), **extra},
    )


def document_record(key: str, rng, language: str, qa: bool) -> ImageText:
    """A page captioned "question answer" about one small-print fact, or described at length in English."""
    page = documents.make_page(rng)
    extra = {"document": {"type": page.doc_type, "company": page.company, **page.fields}, "boxes": page.boxes}
    if qa:
        field = pick(rng, documents.FIELDS)
        caption = f"{documents.question(field, page.doc_type, language)} {page.fields[field]}"
        caption_kind = "qa"
        extra.update(question_field=field, answer=page.fields[field], answer_box=page.boxes[field])
    else:
        caption, caption_kind, language = page.describe(), "long", "en"
    return ImageText(
        key=key,
        image=encode_jpeg(page.image, quality=90),  # small print needs a high quality
        image_format="jpg",
        caption=caption,
        language=language,
        source=DOCUMENT_SOURCE,
        caption_kind=caption_kind,
        width=page.image.width,
        height=page.image.height,
        extra=extra,
    )


# shard set name -> (sample kind, builder)
TRAIN_SETS = {
    "image_text_short": ("image_text", image_text_short),
    "image_text_long": ("image_text", image_text_long),
    "text_pair": ("text_pair", text_pair),
    "text_triplet": ("text_triplet", text_triplet),
}
