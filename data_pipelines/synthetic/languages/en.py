"""English: articles and plural -s; the size always comes first, so the article is always "a"."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar, capitalize


class English(Grammar):
    code = "en"
    SHAPES = {
        "circle": "circle",
        "square": "square",
        "triangle": "triangle",
        "star": "star",
        "hexagon": "hexagon",
        "diamond": "diamond",
    }
    NUMBERS = {2: "two", 3: "three"}
    RELATIONS = {"left_of": "to the left of", "right_of": "to the right of", "above": "above", "below": "below"}
    POSITIONS = {
        "top": "at the top of the image",
        "bottom": "at the bottom of the image",
        "left": "on the left of the image",
        "right": "on the right of the image",
        "centre": "in the centre of the image",
    }
    REGIONS = {
        "top_left": "In the top left corner of the image",
        "top": "At the top of the image",
        "top_right": "In the top right corner of the image",
        "left": "On the left side of the image",
        "centre": "In the centre of the image",
        "right": "On the right side of the image",
        "bottom_left": "In the bottom left corner of the image",
        "bottom": "At the bottom of the image",
        "bottom_right": "In the bottom right corner of the image",
    }
    BACKGROUNDS = {
        "light_grey": "light grey",
        "cream": "cream",
        "pale_blue": "pale blue",
        "pale_green": "pale green",
        "pale_pink": "pale pink",
    }
    TOTALS = {2: "two shapes", 3: "three shapes", 4: "four shapes", 5: "five shapes", 6: "six shapes"}
    OVERVIEW = "The image shows {total} on a {background} background."
    TEXTURES = {
        "plain": "The background is almost uniform, with a fine grain.",
        "gradient": "The background has a soft gradient.",
        "stripes": "The background has faint diagonal stripes.",
        "speckles": "The background is covered with faint speckles.",
    }
    LAYOUTS = {
        "horizontal": "The two groups stand side by side in a row, and none of the shapes overlap.",
        "vertical": "The two groups are stacked one above the other, and none of the shapes overlap.",
    }
    ORIENTATIONS = {
        "square": "The picture is square.",
        "landscape": "The picture is wider than it is tall.",
        "portrait": "The picture is taller than it is wide.",
    }
    CLOSING = "Everything else in the picture is empty background."

    def np(self, g: Group, definite: bool = False) -> str:
        noun = self.SHAPES[g.shape] + ("s" if g.count > 1 else "")
        if g.count == 1:
            determiner = "the" if definite else "a"  # size always comes first: never "an"
        else:
            determiner = ("the " if definite else "") + self.NUMBERS[g.count]
        return f"{determiner} {g.size} {g.colour} {noun}"

    @staticmethod
    def be(g: Group) -> str:
        return "is" if g.count == 1 else "are"

    def single(self, g, position, template):
        if template == 0:
            return f"{capitalize(self.np(g))} {self.be(g)} {position}."
        return f"{capitalize(position)} there {self.be(g)} {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{capitalize(position)}, {self.np(a)} {self.be(a)} {self.RELATIONS[relation]} {self.np(b)}."
        return f"{capitalize(self.np(b))} {self.be(b)} {self.RELATIONS[INVERSE[relation]]} {self.np(a)}, {position}."

    def located(self, g, region):
        return f"{region} there {self.be(g)} {self.np(g)}."

    def related(self, a, b, relation):
        return f"{capitalize(self.np(a, True))} {self.be(a)} {self.RELATIONS[relation]} {self.np(b, True)}."

    def ask(self, b, relation):
        return f"What is {self.RELATIONS[relation]} {self.np(b)}?"
