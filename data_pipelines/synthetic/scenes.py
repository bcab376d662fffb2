"""The scene model: groups of identical shapes, where they sit, and single-attribute changes.

A scene is what a caption says, in any language: one or two groups (shape, colour, size, count),
where they sit in the image and, for two groups, how the first relates to the second. Pixels
(``render.py``) and words (``languages/``) are both derived from it, so every sample keeps its
attributes, and a hard negative is the same scene with exactly one attribute changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .randomness import pick

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "brown", "black")
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
SIZES = ("small", "large")
COUNTS = (1, 2, 3)
RELATIONS = ("left_of", "right_of", "above", "below")
INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
# A single group sits at one of five places; a pair sits along a row (left_of / right_of) or a
# column (above / below), so position and relation never contradict each other.
SINGLE_CELLS = {  # position -> (row, column) of the 3 x 3 grid
    "centre": ("centre", "centre"),
    "left": ("centre", "left"),
    "right": ("centre", "right"),
    "top": ("top", "centre"),
    "bottom": ("bottom", "centre"),
}
SINGLE_POSITIONS = tuple(SINGLE_CELLS)
ROWS = ("top", "centre", "bottom")
COLUMNS = ("left", "centre", "right")
BACKGROUNDS = ("light_grey", "cream", "pale_blue", "pale_green", "pale_pink")
TEXTURES = ("plain", "gradient", "stripes", "speckles")
IMAGE_SIZES = ((384, 384), (384, 288), (288, 384), (384, 320))

GROUP_ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "count": COUNTS}
# The attribute kinds a caption states; a hard negative changes one of them.
ATTRIBUTE_KINDS = ("colour", "shape", "size", "count", "position", "relation")


@dataclass(frozen=True)
class Group:
    shape: str
    colour: str
    size: str
    count: int


@dataclass(frozen=True)
class Scene:
    groups: tuple[Group, ...]
    position: str
    relation: str | None = None  # how groups[0] stands to groups[1]
    background: str = "light_grey"
    texture: str = "plain"
    width: int = 384
    height: int = 384

    @property
    def axis(self) -> str:
        return "horizontal" if self.relation in ("left_of", "right_of") else "vertical"

    @property
    def orientation(self) -> str:
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"

    def cells(self) -> tuple[tuple[str, str], ...]:
        """Each group's (row, column) in the 3 x 3 grid of the image."""
        if len(self.groups) == 1:
            return (SINGLE_CELLS[self.position],)
        first_side = self.relation in ("left_of", "above")
        if self.axis == "horizontal":
            return tuple((self.position, col) for col in (("left", "right") if first_side else ("right", "left")))
        return tuple((row, self.position) for row in (("top", "bottom") if first_side else ("bottom", "top")))

    def regions(self) -> tuple[str, ...]:
        """Each group's cell by name: ``top_left``, ``top``, ``left``, ``centre``, ..."""
        return tuple(_cell_name(row, col) for row, col in self.cells())

    def attributes(self) -> dict:
        """Flat attributes, ``a.colour`` ... ``b.count``, ``position``, ``relation``, background."""
        flat = {
            f"{name}.{key}": getattr(group, key) for name, group in zip("ab", self.groups) for key in GROUP_ATTRIBUTES
        }
        flat.update(position=self.position, relation=self.relation, background=self.background, texture=self.texture)
        return flat

    def caption_attributes(self) -> tuple[str, ...]:
        """The attributes captions state and negatives may change."""
        names = [f"{name}.{key}" for name in "ab"[: len(self.groups)] for key in GROUP_ATTRIBUTES]
        return (*names, "position", "relation") if self.relation else (*names, "position")


def sample_scene(rng: np.random.Generator, pair: bool) -> Scene:
    def group() -> Group:
        return Group(*(pick(rng, values) for values in GROUP_ATTRIBUTES.values()))

    width, height = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    look = {"background": pick(rng, BACKGROUNDS), "texture": pick(rng, TEXTURES), "width": width, "height": height}
    if not pair:
        return Scene((group(),), pick(rng, SINGLE_POSITIONS), **look)
    a = group()
    b = group()
    while not _distinct(a, b):
        b = group()
    relation = pick(rng, RELATIONS)
    position = pick(rng, ROWS if relation in ("left_of", "right_of") else COLUMNS)
    return Scene((a, b), position, relation, **look)


def change(scene: Scene, attribute: str, rng: np.random.Generator) -> Scene:
    """``scene`` with ``attribute`` (e.g. ``b.colour``) set to another value that still makes sense."""
    if attribute == "relation":  # the opposite relation keeps the pair on its row or column
        return replace(scene, relation=INVERSE[scene.relation])
    if attribute == "position":
        if len(scene.groups) == 1:
            places = SINGLE_POSITIONS
        else:
            places = ROWS if scene.axis == "horizontal" else COLUMNS
        return replace(scene, position=pick(rng, [p for p in places if p != scene.position]))
    index, key = "ab".index(attribute[0]), attribute[2:]
    groups = list(scene.groups)
    options = []
    for value in GROUP_ATTRIBUTES[key]:
        candidate = replace(groups[index], **{key: value})
        # The groups must stay distinguishable, or "A left of B" would say the same as "B left of A".
        if value != getattr(groups[index], key) and all(
            _distinct(candidate, g) for g in groups[:index] + groups[index + 1 :]
        ):
            options.append(candidate)
    groups[index] = pick(rng, options)
    return replace(scene, groups=tuple(groups))


def hard_negatives(scene: Scene, rng: np.random.Generator, n: int = 7) -> list[tuple[str, Scene]]:
    """``n`` copies of ``scene``, each with one attribute changed: every kind once (if ``n`` allows), then others.

    Different attributes changed give different scenes, so the negatives also differ from each other.
    """
    names = scene.caption_attributes()
    kinds = [kind for kind in ATTRIBUTE_KINDS if any(_kind(a) == kind for a in names)]
    one_per_kind = [pick(rng, [a for a in names if _kind(a) == kind]) for kind in kinds]
    others = [a for a in names if a not in one_per_kind]
    ranked = [one_per_kind[i] for i in rng.permutation(len(one_per_kind))] + [
        others[i] for i in rng.permutation(len(others))
    ]
    if len(ranked) < n:
        raise ValueError(f"a scene with {len(names)} attributes cannot give {n} single-attribute negatives")
    chosen = ranked[:n]
    return [(name, change(scene, name, rng)) for name in (chosen[i] for i in rng.permutation(n))]


def mutate(scene: Scene, k: int, rng: np.random.Generator) -> Scene:
    """``scene`` with ``k`` distinct caption attributes changed (for graded similarity)."""
    names = scene.caption_attributes()
    for i in rng.permutation(len(names))[:k]:
        scene = change(scene, names[i], rng)
    return scene


def agreement(a: Scene, b: Scene) -> float:
    """Fraction of caption attributes two scenes share."""
    names = a.caption_attributes()
    first, second = a.attributes(), b.attributes()
    return sum(first[name] == second[name] for name in names) / len(names)


def _kind(attribute: str) -> str:
    return attribute.split(".")[-1]  # "b.colour" -> "colour"


def _cell_name(row: str, col: str) -> str:
    if row == "centre" or col == "centre":
        return col if row == "centre" else row
    return f"{row}_{col}"


def _distinct(a: Group, b: Group) -> bool:
    return (a.shape, a.colour) != (b.shape, b.colour)
