"""Spanish: gender and number agreement, colour then size after the noun, de + el -> del."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import RomanceGrammar, capitalize


class Spanish(RomanceGrammar):
    code = "es"
    SHAPES = {  # noun, gender; plurals add -s
        "circle": ("círculo", "m"),
        "square": ("cuadrado", "m"),
        "triangle": ("triángulo", "m"),
        "star": ("estrella", "f"),
        "hexagon": ("hexágono", "m"),
        "diamond": ("rombo", "m"),
    }
    # (m sg, f sg, m pl, f pl); both adjectives follow the noun: colour, then size
    SIZES = {
        "small": ("pequeño", "pequeña", "pequeños", "pequeñas"),
        "large": ("grande", "grande", "grandes", "grandes"),
    }
    COLOURS = {
        "red": ("rojo", "roja", "rojos", "rojas"),
        "green": ("verde", "verde", "verdes", "verdes"),
        "blue": ("azul", "azul", "azules", "azules"),
        "yellow": ("amarillo", "amarilla", "amarillos", "amarillas"),
        "orange": ("naranja", "naranja", "naranjas", "naranjas"),
        "purple": ("morado", "morada", "morados", "moradas"),
        "brown": ("marrón", "marrón", "marrones", "marrones"),
        "black": ("negro", "negra", "negros", "negras"),
    }
    NUMBERS = {2: "dos", 3: "tres"}
    RELATIONS = {"left_of": "a la izquierda", "right_of": "a la derecha", "above": "encima", "below": "debajo"}  # + de
    POSITIONS = {
        "top": "en la parte superior de la imagen",
        "bottom": "en la parte inferior de la imagen",
        "left": "en el lado izquierdo de la imagen",
        "right": "en el lado derecho de la imagen",
        "centre": "en el centro de la imagen",
    }
    REGIONS = {
        "top_left": "En la esquina superior izquierda de la imagen",
        "top": "En la parte superior de la imagen",
        "top_right": "En la esquina superior derecha de la imagen",
        "left": "En el lado izquierdo de la imagen",
        "centre": "En el centro de la imagen",
        "right": "En el lado derecho de la imagen",
        "bottom_left": "En la esquina inferior izquierda de la imagen",
        "bottom": "En la parte inferior de la imagen",
        "bottom_right": "En la esquina inferior derecha de la imagen",
    }
    BACKGROUNDS = {
        "light_grey": "gris claro",
        "cream": "color crema",
        "pale_blue": "azul claro",
        "pale_green": "verde claro",
        "pale_pink": "rosa claro",
    }
    TOTALS = {2: "dos formas", 3: "tres formas", 4: "cuatro formas", 5: "cinco formas", 6: "seis formas"}
    OVERVIEW = "La imagen muestra {total} sobre un fondo {background}."
    TEXTURES = {
        "plain": "El fondo es casi uniforme, con un grano fino.",
        "gradient": "El fondo tiene un degradado suave.",
        "stripes": "El fondo tiene tenues rayas diagonales.",
        "speckles": "El fondo está cubierto de tenues motas.",
    }
    LAYOUTS = {
        "horizontal": "Los dos grupos están uno al lado del otro en una fila, y ninguna forma se superpone a otra.",
        "vertical": "Los dos grupos están uno encima del otro, y ninguna forma se superpone a otra.",
    }
    ORIENTATIONS = {
        "square": "La imagen es cuadrada.",
        "landscape": "La imagen es más ancha que alta.",
        "portrait": "La imagen es más alta que ancha.",
    }
    CLOSING = "El resto de la imagen es fondo vacío."
    SIZE_BEFORE_NOUN = False
    DETERMINERS = {
        (False, False, False): {"m": "un", "f": "una"},
        (False, False, True): {"m": "de un", "f": "de una"},
        (False, True, False): {"m": "el", "f": "la"},
        (False, True, True): {"m": "del", "f": "de la"},
        (True, False, False): {"m": "", "f": ""},
        (True, False, True): {"m": "de", "f": "de"},
        (True, True, False): {"m": "los", "f": "las"},
        (True, True, True): {"m": "de los", "f": "de las"},
    }

    @staticmethod
    def be(g: Group) -> str:
        return "está" if g.count == 1 else "están"

    def single(self, g, position, template):
        if template == 0:
            return f"{capitalize(self.np(g))} {self.be(g)} {position}."
        return f"{capitalize(position)} hay {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return (
                f"{capitalize(position)}, {self.np(a)} {self.be(a)} {self.RELATIONS[relation]} {self.np(b, de=True)}."
            )
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{capitalize(self.np(b))} {self.be(b)} {inverse} {self.np(a, de=True)}, {position}."

    def located(self, g, region):
        return f"{region} hay {self.np(g)}."

    def related(self, a, b, relation):
        return (
            f"{capitalize(self.np(a, definite=True))} {self.be(a)} {self.RELATIONS[relation]} {self.np(b, True, True)}."
        )

    def ask(self, b, relation):
        return f"¿Qué hay {self.RELATIONS[relation]} {self.np(b, de=True)}?"
