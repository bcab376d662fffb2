"""German: article and adjective endings by gender, number and case (dative after links von,
rechts von, über, unter; von dem -> vom)."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar, capitalize


class German(Grammar):
    code = "de"
    # singular, plural, dative plural, gender
    SHAPES = {
        "circle": ("Kreis", "Kreise", "Kreisen", "m"),
        "square": ("Quadrat", "Quadrate", "Quadraten", "n"),
        "triangle": ("Dreieck", "Dreiecke", "Dreiecken", "n"),
        "star": ("Stern", "Sterne", "Sternen", "m"),
        "hexagon": ("Sechseck", "Sechsecke", "Sechsecken", "n"),
        "diamond": ("Raute", "Rauten", "Rauten", "f"),
    }
    # adjective stems; endings follow the article
    ADJECTIVES = {
        "small": "klein",
        "large": "groß",
        "red": "rot",
        "green": "grün",
        "blue": "blau",
        "yellow": "gelb",
        "orange": "orangefarben",
        "purple": "violett",
        "brown": "braun",
        "black": "schwarz",
    }
    NUMBERS = {2: "zwei", 3: "drei"}
    RELATIONS = {"left_of": "links von", "right_of": "rechts von", "above": "über", "below": "unter"}  # + dative
    POSITIONS = {
        "top": "oben im Bild",
        "bottom": "unten im Bild",
        "left": "links im Bild",
        "right": "rechts im Bild",
        "centre": "in der Bildmitte",
    }
    REGIONS = {
        "top_left": "Oben links im Bild",
        "top": "Oben im Bild",
        "top_right": "Oben rechts im Bild",
        "left": "Links im Bild",
        "centre": "In der Bildmitte",
        "right": "Rechts im Bild",
        "bottom_left": "Unten links im Bild",
        "bottom": "Unten im Bild",
        "bottom_right": "Unten rechts im Bild",
    }
    BACKGROUNDS = {
        "light_grey": "hellgrauen",
        "cream": "cremefarbenen",
        "pale_blue": "hellblauen",
        "pale_green": "hellgrünen",
        "pale_pink": "rosafarbenen",
    }
    TOTALS = {2: "zwei Formen", 3: "drei Formen", 4: "vier Formen", 5: "fünf Formen", 6: "sechs Formen"}
    OVERVIEW = "Das Bild zeigt {total} auf einem {background} Hintergrund."
    TEXTURES = {
        "plain": "Der Hintergrund ist fast einfarbig und leicht körnig.",
        "gradient": "Der Hintergrund hat einen sanften Farbverlauf.",
        "stripes": "Der Hintergrund hat schwache diagonale Streifen.",
        "speckles": "Der Hintergrund ist mit schwachen Sprenkeln bedeckt.",
    }
    LAYOUTS = {
        "horizontal": "Die beiden Gruppen stehen nebeneinander in einer Reihe, und keine Form überdeckt eine andere.",
        "vertical": "Die beiden Gruppen stehen übereinander, und keine Form überdeckt eine andere.",
    }
    ORIENTATIONS = {
        "square": "Das Bild ist quadratisch.",
        "landscape": "Das Bild ist breiter als hoch.",
        "portrait": "Das Bild ist höher als breit.",
    }
    CLOSING = "Der Rest des Bildes ist leerer Hintergrund."
    # (article, adjective ending) by (number, case, definite); singular entries by gender
    INFLECTION = {
        ("sg", "nom", False): {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")},
        ("sg", "dat", False): {"m": ("einem", "en"), "n": ("einem", "en"), "f": ("einer", "en")},
        ("sg", "nom", True): {"m": ("der", "e"), "n": ("das", "e"), "f": ("die", "e")},
        ("sg", "dat", True): {"m": ("dem", "en"), "n": ("dem", "en"), "f": ("der", "en")},
        ("pl", "nom", False): ("", "e"),
        ("pl", "dat", False): ("", "en"),
        ("pl", "nom", True): ("die", "en"),
        ("pl", "dat", True): ("den", "en"),
    }

    def np(self, g: Group, case: str = "nom", definite: bool = False) -> str:
        singular, plural, dative_plural, gender = self.SHAPES[g.shape]
        if g.count == 1:
            article, ending = self.INFLECTION["sg", case, definite][gender]
            noun = singular
        else:
            article, ending = self.INFLECTION["pl", case, definite]
            article = f"{article} {self.NUMBERS[g.count]}".strip()
            noun = dative_plural if case == "dat" else plural
        size, colour = (self.ADJECTIVES[w] + ending for w in (g.size, g.colour))
        return f"{article} {size} {colour} {noun}"

    def relation(self, relation: str, g: Group, definite: bool = False) -> str:
        phrase = f"{self.RELATIONS[relation]} {self.np(g, 'dat', definite)}"
        return phrase.replace("von dem ", "vom ")  # the contraction is obligatory here

    @staticmethod
    def be(g: Group) -> str:
        return "ist" if g.count == 1 else "sind"

    @staticmethod
    def located_verb(g: Group) -> str:
        return "befindet sich" if g.count == 1 else "befinden sich"

    def single(self, g, position, template):
        if template == 0:
            return f"{capitalize(self.np(g))} {self.located_verb(g)} {position}."
        return f"{capitalize(position)} {self.be(g)} {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{capitalize(position)} {self.be(a)} {self.np(a)} {self.relation(relation, b)}."
        return f"{capitalize(self.np(b))} {self.located_verb(b)} {position} {self.relation(INVERSE[relation], a)}."

    def located(self, g, region):
        return f"{region} {self.be(g)} {self.np(g)}."

    def related(self, a, b, relation):
        return f"{capitalize(self.np(a, definite=True))} {self.be(a)} {self.relation(relation, b, definite=True)}."

    def ask(self, b, relation):
        return f"Was ist {self.relation(relation, b)}?"
