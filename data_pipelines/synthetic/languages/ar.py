"""Arabic: gender; the dual (nominative -ān, genitive -ayn); plurals of things agree as feminine
singular; "three" takes the gender opposite to its noun; يوجد / توجد before the subject."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar


class Arabic(Grammar):
    code = "ar"
    # singular, dual (nominative), plural, gender; multi-word nouns inflect word by word
    SHAPES = {
        "circle": ("دائرة", "دائرتان", "دوائر", "f"),
        "square": ("مربع", "مربعان", "مربعات", "m"),
        "triangle": ("مثلث", "مثلثان", "مثلثات", "m"),
        "star": ("نجمة", "نجمتان", "نجوم", "f"),
        "hexagon": ("شكل سداسي", "شكلان سداسيان", "أشكال سداسية", "m"),
        "diamond": ("معين", "معينان", "معينات", "m"),
    }
    # m sg, f sg, m dual, f dual; plurals of things take the feminine singular
    ADJECTIVES = {
        "small": ("صغير", "صغيرة", "صغيران", "صغيرتان"),
        "large": ("كبير", "كبيرة", "كبيران", "كبيرتان"),
        "red": ("أحمر", "حمراء", "أحمران", "حمراوان"),
        "green": ("أخضر", "خضراء", "أخضران", "خضراوان"),
        "blue": ("أزرق", "زرقاء", "أزرقان", "زرقاوان"),
        "yellow": ("أصفر", "صفراء", "أصفران", "صفراوان"),
        "orange": ("برتقالي", "برتقالية", "برتقاليان", "برتقاليتان"),
        "purple": ("بنفسجي", "بنفسجية", "بنفسجيان", "بنفسجيتان"),
        "brown": ("بني", "بنية", "بنيان", "بنيتان"),
        "black": ("أسود", "سوداء", "أسودان", "سوداوان"),
    }
    THREE = {"m": "ثلاثة", "f": "ثلاث"}  # "three" takes the opposite gender of its noun
    RELATIONS = {"left_of": "على يسار", "right_of": "على يمين", "above": "فوق", "below": "تحت"}  # + genitive
    POSITIONS = {
        "top": "في أعلى الصورة",
        "bottom": "في أسفل الصورة",
        "left": "في الجهة اليسرى من الصورة",
        "right": "في الجهة اليمنى من الصورة",
        "centre": "في وسط الصورة",
    }
    REGIONS = {
        "top_left": "في الزاوية العليا اليسرى من الصورة",
        "top": "في أعلى الصورة",
        "top_right": "في الزاوية العليا اليمنى من الصورة",
        "left": "في الجهة اليسرى من الصورة",
        "centre": "في وسط الصورة",
        "right": "في الجهة اليمنى من الصورة",
        "bottom_left": "في الزاوية السفلى اليسرى من الصورة",
        "bottom": "في أسفل الصورة",
        "bottom_right": "في الزاوية السفلى اليمنى من الصورة",
    }
    BACKGROUNDS = {  # agree with the feminine خلفية
        "light_grey": "رمادية فاتحة",
        "cream": "بلون الكريم",
        "pale_blue": "زرقاء فاتحة",
        "pale_green": "خضراء فاتحة",
        "pale_pink": "وردية فاتحة",
    }
    TOTALS = {2: "شكلان", 3: "ثلاثة أشكال", 4: "أربعة أشكال", 5: "خمسة أشكال", 6: "ستة أشكال"}
    OVERVIEW = "يظهر في الصورة {total} على خلفية {background}."
    TEXTURES = {
        "plain": "الخلفية شبه موحدة اللون مع حبيبات دقيقة.",
        "gradient": "في الخلفية تدرج لوني ناعم.",
        "stripes": "في الخلفية خطوط مائلة باهتة.",
        "speckles": "الخلفية مغطاة بنقاط باهتة.",
    }
    LAYOUTS = {
        "horizontal": "تقف المجموعتان جنبًا إلى جنب في صف واحد، ولا يتداخل أي شكل مع شكل آخر.",
        "vertical": "تقع إحدى المجموعتين فوق الأخرى، ولا يتداخل أي شكل مع شكل آخر.",
    }
    ORIENTATIONS = {
        "square": "الصورة مربعة.",
        "landscape": "عرض الصورة أكبر من ارتفاعها.",
        "portrait": "ارتفاع الصورة أكبر من عرضها.",
    }
    CLOSING = "بقية الصورة خلفية فارغة."

    def np(self, g: Group, genitive: bool = False, definite: bool = False) -> str:
        singular, dual, plural, gender = self.SHAPES[g.shape]
        size, colour = self.ADJECTIVES[g.size], self.ADJECTIVES[g.colour]
        if g.count == 1:
            form = gender == "f"
            words = [*singular.split(), colour[form], size[form]]
        elif g.count == 2:
            form = 2 + (gender == "f")
            words = [*dual.split(), colour[form], size[form]]
            if genitive:  # the dual's genitive: -ān -> -ayn on every word
                words = [w[:-2] + "ين" for w in words]
        else:
            words = [*plural.split(), colour[1], size[1]]
        if definite:
            words = ["ال" + w for w in words]
            if g.count == 3:  # the number follows a definite noun: المربعات الزرقاء الصغيرة الثلاثة
                words.append("ال" + self.THREE[gender])
        elif g.count == 3:
            words.insert(0, self.THREE[gender])
        return " ".join(words)

    def there_is(self, g: Group) -> str:
        # a verb before its subject agrees in gender only; plurals of things count as feminine
        masculine = self.SHAPES[g.shape][3] == "m"
        return "يوجد" if masculine and g.count < 3 else "توجد"

    def single(self, g, position, template):
        if template == 0:
            return f"{self.there_is(g)} {self.np(g)} {position}."
        return f"{position} {self.np(g)}."

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{position} {self.np(a)} {self.RELATIONS[relation]} {self.np(b, genitive=True)}."
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{self.there_is(b)} {self.np(b)} {inverse} {self.np(a, genitive=True)} {position}."

    def located(self, g, region):
        return f"{region} {self.np(g)}."

    def related(self, a, b, relation):
        return f"{self.np(a, definite=True)} {self.RELATIONS[relation]} {self.np(b, genitive=True, definite=True)}."

    def ask(self, b, relation):
        return f"ماذا يوجد {self.RELATIONS[relation]} {self.np(b, genitive=True)}؟"
