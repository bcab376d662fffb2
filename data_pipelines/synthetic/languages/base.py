"""What every grammar provides: word tables and sentence builders over the scene model."""

from __future__ import annotations

from ..scenes import Group, Scene


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


class Grammar:
    """A language's words for a scene: subclasses fill the tables and the five sentence builders."""

    code: str
    joiner = " "  # between sentences of a long caption
    POSITIONS: dict[str, str]  # where a single group or a pair sits, mid-sentence
    REGIONS: dict[str, str]  # a group's grid cell, sentence-initial
    BACKGROUNDS: dict[str, str]
    TOTALS: dict[int, str]  # "three shapes", for 2-6 objects
    OVERVIEW: str  # format string with {total} and {background}
    TEXTURES: dict[str, str]
    LAYOUTS: dict[str, str]  # by axis: horizontal, vertical
    ORIENTATIONS: dict[str, str]
    CLOSING: str

    def caption(self, scene: Scene, template: int = 0) -> str:
        position = self.POSITIONS[scene.position]
        if len(scene.groups) == 1:
            return self.single(scene.groups[0], position, template)
        a, b = scene.groups
        return self.pair(a, b, scene.relation, position, template)

    def long_caption(self, scene: Scene) -> str:
        a, b = scene.groups
        region_a, region_b = scene.regions()
        total = self.TOTALS[a.count + b.count]
        return self.joiner.join(
            [
                self.OVERVIEW.format(total=total, background=self.BACKGROUNDS[scene.background]),
                self.TEXTURES[scene.texture],
                self.located(a, self.REGIONS[region_a]),
                self.located(b, self.REGIONS[region_b]),
                self.related(a, b, scene.relation),
                self.LAYOUTS[scene.axis],
                self.ORIENTATIONS[scene.orientation],
                self.CLOSING,
            ]
        )

    def question(self, scene: Scene) -> str:
        return self.ask(scene.groups[1], scene.relation)

    # Sentence builders; ``position`` / ``region`` are already phrases of this language.
    def single(self, group: Group, position: str, template: int) -> str:
        raise NotImplementedError

    def pair(self, a: Group, b: Group, relation: str, position: str, template: int) -> str:
        raise NotImplementedError

    def located(self, group: Group, region: str) -> str:
        raise NotImplementedError

    def related(self, a: Group, b: Group, relation: str) -> str:
        raise NotImplementedError

    def ask(self, b: Group, relation: str) -> str:
        raise NotImplementedError


class RomanceGrammar(Grammar):
    """French and Spanish noun phrases: gendered determiners, adjectives agreeing in gender and number."""

    SHAPES: dict[str, tuple[str, str]]  # shape -> (singular noun, gender "m" | "f")
    NUMBERS: dict[int, str]
    COLOURS: dict[str, tuple[str, str, str, str]]  # by form: m, f, m plural, f plural
    SIZES: dict[str, tuple[str, str, str, str]]
    DETERMINERS: dict[tuple[bool, bool, bool], dict[str, str]]  # (plural, definite, after "de") -> gender
    SIZE_BEFORE_NOUN: bool  # "un grand cercle rouge" / "un círculo rojo grande"

    def np(self, g: Group, definite: bool = False, de: bool = False) -> str:
        noun, gender = self.SHAPES[g.shape]
        plural = g.count > 1
        form = (gender == "f") + 2 * plural
        determiner = self.DETERMINERS[plural, definite, de][gender]
        if plural:
            determiner = f"{determiner} {self.NUMBERS[g.count]}".strip()
            noun += "s"
        colour, size = self.COLOURS[g.colour][form], self.SIZES[g.size][form]
        if self.SIZE_BEFORE_NOUN:
            return f"{determiner} {size} {noun} {colour}"
        return f"{determiner} {noun} {colour} {size}"
