"""Russian: case after numerals (два / две / три + genitive singular) and after слева от,
справа от, выше, ниже (genitive); feminine nouns take nominative plural adjectives after 2-3."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar, capitalize


class Russian(Grammar):
    code = "ru"
    # nominative sg, genitive sg, nominative pl, genitive pl, gender
    SHAPES = {
        "circle": ("круг", "круга", "круги", "кругов", "m"),
        "square": ("квадрат", "квадрата", "квадраты", "квадратов", "m"),
        "triangle": ("треугольник", "треугольника", "треугольники", "треугольников", "m"),
        "star": ("звезда", "звезды", "звёзды", "звёзд", "f"),
        "hexagon": ("шестиугольник", "шестиугольника", "шестиугольники", "шестиугольников", "m"),
        "diamond": ("ромб", "ромба", "ромбы", "ромбов", "m"),
    }
    # m nom sg, f nom sg, m gen sg, f gen sg, nom pl, gen pl
    ADJECTIVES = {
        "small": ("маленький", "маленькая", "маленького", "маленькой", "маленькие", "маленьких"),
        "large": ("большой", "большая", "большого", "большой", "большие", "больших"),
        "red": ("красный", "красная", "красного", "красной", "красные", "красных"),
        "green": ("зелёный", "зелёная", "зелёного", "зелёной", "зелёные", "зелёных"),
        "blue": ("синий", "синяя", "синего", "синей", "синие", "синих"),
        "yellow": ("жёлтый", "жёлтая", "жёлтого", "жёлтой", "жёлтые", "жёлтых"),
        "orange": ("оранжевый", "оранжевая", "оранжевого", "оранжевой", "оранжевые", "оранжевых"),
        "purple": ("фиолетовый", "фиолетовая", "фиолетового", "фиолетовой", "фиолетовые", "фиолетовых"),
        "brown": ("коричневый", "коричневая", "коричневого", "коричневой", "коричневые", "коричневых"),
        "black": ("чёрный", "чёрная", "чёрного", "чёрной", "чёрные", "чёрных"),
    }
    NUMBERS = {
        "nom": {(2, "m"): "два", (2, "f"): "две", (3, "m"): "три", (3, "f"): "три"},
        "gen": {2: "двух", 3: "трёх"},
    }
    RELATIONS = {"left_of": "слева от", "right_of": "справа от", "above": "выше", "below": "ниже"}  # + genitive
    POSITIONS = {
        "top": "в верхней части изображения",
        "bottom": "в нижней части изображения",
        "left": "в левой части изображения",
        "right": "в правой части изображения",
        "centre": "в центре изображения",
    }
    REGIONS = {
        "top_left": "В левом верхнем углу изображения",
        "top": "В верхней части изображения",
        "top_right": "В правом верхнем углу изображения",
        "left": "В левой части изображения",
        "centre": "В центре изображения",
        "right": "В правой части изображения",
        "bottom_left": "В левом нижнем углу изображения",
        "bottom": "В нижней части изображения",
        "bottom_right": "В правом нижнем углу изображения",
    }
    BACKGROUNDS = {  # prepositional case, after "на ... фоне"
        "light_grey": "светло-сером",
        "cream": "кремовом",
        "pale_blue": "бледно-голубом",
        "pale_green": "бледно-зелёном",
        "pale_pink": "бледно-розовом",
    }
    TOTALS = {2: "две фигуры", 3: "три фигуры", 4: "четыре фигуры", 5: "пять фигур", 6: "шесть фигур"}
    OVERVIEW = "На изображении {total} на {background} фоне."
    TEXTURES = {
        "plain": "Фон почти однородный, с мелким зерном.",
        "gradient": "На фоне мягкий градиент.",
        "stripes": "На фоне едва заметные диагональные полосы.",
        "speckles": "Фон покрыт едва заметными крапинками.",
    }
    LAYOUTS = {
        "horizontal": "Обе группы стоят рядом в один ряд, и фигуры не перекрывают друг друга.",
        "vertical": "Обе группы расположены одна над другой, и фигуры не перекрывают друг друга.",
    }
    ORIENTATIONS = {
        "square": "Изображение квадратное.",
        "landscape": "Изображение в ширину больше, чем в высоту.",
        "portrait": "Изображение в высоту больше, чем в ширину.",
    }
    CLOSING = "Остальная часть изображения — пустой фон."

    def np(self, g: Group, case: str = "nom") -> str:
        nom_sg, gen_sg, _, gen_pl, gender = self.SHAPES[g.shape]
        size, colour = self.ADJECTIVES[g.size], self.ADJECTIVES[g.colour]
        feminine = gender == "f"
        if g.count == 1:
            form = feminine + (2 if case == "gen" else 0)
            return f"{size[form]} {colour[form]} {nom_sg if case == 'nom' else gen_sg}"
        if case == "gen":
            return f"{self.NUMBERS['gen'][g.count]} {size[5]} {colour[5]} {gen_pl}"
        # два/три + genitive singular noun; adjectives genitive plural, or nominative plural with feminine nouns
        form = 4 if feminine else 5
        return f"{self.NUMBERS['nom'][g.count, gender]} {size[form]} {colour[form]} {gen_sg}"

    @staticmethod
    def located_verb(g: Group) -> str:
        return "находится" if g.count == 1 else "находятся"

    def single(self, g, position, template):
        if template == 0:
            return f"{capitalize(self.np(g))} {self.located_verb(g)} {position}."
        return f"{capitalize(position)} {self.located_verb(g)} {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{capitalize(position)} {self.np(a)} {self.located_verb(a)} {self.RELATIONS[relation]} {self.np(b, 'gen')}."
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{capitalize(self.np(b))} {self.located_verb(b)} {inverse} {self.np(a, 'gen')} {position}."

    def located(self, g, region):
        return f"{region} {self.located_verb(g)} {self.np(g)}."

    def related(self, a, b, relation):
        return f"{capitalize(self.np(a))} {self.located_verb(a)} {self.RELATIONS[relation]} {self.np(b, 'gen')}."

    def ask(self, b, relation):
        return f"Что находится {self.RELATIONS[relation]} {self.np(b, 'gen')}?"
