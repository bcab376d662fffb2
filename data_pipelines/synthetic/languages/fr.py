"""French: gender and number agreement, sizes before and colours after the noun, de + article
(d'un, du, de la, des); orange and marron never agree."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import RomanceGrammar, capitalize


class French(RomanceGrammar):
    code = "fr"
    SHAPES = {  # noun, gender; plurals add -s
        "circle": ("cercle", "m"),
        "square": ("carré", "m"),
        "triangle": ("triangle", "m"),
        "star": ("étoile", "f"),
        "hexagon": ("hexagone", "m"),
        "diamond": ("losange", "m"),
    }
    # (m sg, f sg, m pl, f pl); sizes go before the noun, colours after; orange and marron never agree
    SIZES = {"small": ("petit", "petite", "petits", "petites"), "large": ("grand", "grande", "grands", "grandes")}
    COLOURS = {
        "red": ("rouge", "rouge", "rouges", "rouges"),
        "green": ("vert", "verte", "verts", "vertes"),
        "blue": ("bleu", "bleue", "bleus", "bleues"),
        "yellow": ("jaune", "jaune", "jaunes", "jaunes"),
        "orange": ("orange", "orange", "orange", "orange"),
        "purple": ("violet", "violette", "violets", "violettes"),
        "brown": ("marron", "marron", "marron", "marron"),
        "black": ("noir", "noire", "noirs", "noires"),
    }
    NUMBERS = {2: "deux", 3: "trois"}
    RELATIONS = {"left_of": "à gauche", "right_of": "à droite", "above": "au-dessus", "below": "au-dessous"}  # + de
    POSITIONS = {
        "top": "en haut de l'image",
        "bottom": "en bas de l'image",
        "left": "à gauche de l'image",
        "right": "à droite de l'image",
        "centre": "au centre de l'image",
    }
    REGIONS = {
        "top_left": "En haut à gauche de l'image",
        "top": "En haut de l'image",
        "top_right": "En haut à droite de l'image",
        "left": "À gauche de l'image",
        "centre": "Au centre de l'image",
        "right": "À droite de l'image",
        "bottom_left": "En bas à gauche de l'image",
        "bottom": "En bas de l'image",
        "bottom_right": "En bas à droite de l'image",
    }
    BACKGROUNDS = {
        "light_grey": "gris clair",
        "cream": "crème",
        "pale_blue": "bleu pâle",
        "pale_green": "vert pâle",
        "pale_pink": "rose pâle",
    }
    TOTALS = {2: "deux formes", 3: "trois formes", 4: "quatre formes", 5: "cinq formes", 6: "six formes"}
    OVERVIEW = "L'image montre {total} sur un fond {background}."
    TEXTURES = {
        "plain": "Le fond est presque uni, avec un grain fin.",
        "gradient": "Le fond présente un léger dégradé.",
        "stripes": "Le fond présente de fines rayures diagonales.",
        "speckles": "Le fond est parsemé de légères mouchetures.",
    }
    LAYOUTS = {
        "horizontal": "Les deux groupes sont côte à côte sur une même ligne, et aucune forme n'en chevauche une autre.",
        "vertical": "Les deux groupes sont placés l'un au-dessus de l'autre, et aucune forme n'en chevauche une autre.",
    }
    ORIENTATIONS = {
        "square": "L'image est carrée.",
        "landscape": "L'image est plus large que haute.",
        "portrait": "L'image est plus haute que large.",
    }
    CLOSING = "Le reste de l'image est un fond vide."
    SIZE_BEFORE_NOUN = True
    DETERMINERS = {
        (False, False, False): {"m": "un", "f": "une"},
        (False, False, True): {"m": "d'un", "f": "d'une"},
        (False, True, False): {"m": "le", "f": "la"},
        (False, True, True): {"m": "du", "f": "de la"},
        (True, False, False): {"m": "", "f": ""},
        (True, False, True): {"m": "de", "f": "de"},
        (True, True, False): {"m": "les", "f": "les"},
        (True, True, True): {"m": "des", "f": "des"},
    }

    @staticmethod
    def be(g: Group) -> str:
        return "est" if g.count == 1 else "sont"

    @staticmethod
    def located_verb(g: Group) -> str:
        return "se trouve" if g.count == 1 else "se trouvent"

    def single(self, g, position, template):
        if template == 0:
            return f"{capitalize(self.np(g))} {self.located_verb(g)} {position}."
        return f"{capitalize(position)}, il y a {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{capitalize(position)}, {self.np(a)} {self.located_verb(a)} {self.RELATIONS[relation]} {self.np(b, de=True)}."
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{capitalize(self.np(b))} {self.be(b)} {inverse} {self.np(a, de=True)}, {position}."

    def located(self, g, region):
        return f"{region}, il y a {self.np(g)}."

    def related(self, a, b, relation):
        return (
            f"{capitalize(self.np(a, definite=True))} {self.be(a)} {self.RELATIONS[relation]} {self.np(b, True, True)}."
        )

    def ask(self, b, relation):
        return f"Qu'y a-t-il {self.RELATIONS[relation]} {self.np(b, de=True)} ?"
