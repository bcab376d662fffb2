"""Hindi: direct and oblique forms of nouns and adjectives (oblique before postpositions such as
के ऊपर), है / हैं by number, दोनों / तीनों for groups already named."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar


class Hindi(Grammar):
    code = "hi"
    # direct sg, direct pl, oblique sg, oblique pl; all six nouns are masculine
    SHAPES = {
        "circle": ("वृत्त", "वृत्त", "वृत्त", "वृत्तों"),
        "square": ("वर्ग", "वर्ग", "वर्ग", "वर्गों"),
        "triangle": ("त्रिभुज", "त्रिभुज", "त्रिभुज", "त्रिभुजों"),
        "star": ("तारा", "तारे", "तारे", "तारों"),
        "hexagon": ("षट्भुज", "षट्भुज", "षट्भुज", "षट्भुजों"),
        "diamond": ("समचतुर्भुज", "समचतुर्भुज", "समचतुर्भुज", "समचतुर्भुजों"),
    }
    # masculine adjectives: (direct sg, every other form); लाल, नारंगी and बैंगनी do not inflect
    ADJECTIVES = {
        "small": ("छोटा", "छोटे"),
        "large": ("बड़ा", "बड़े"),
        "red": ("लाल", "लाल"),
        "green": ("हरा", "हरे"),
        "blue": ("नीला", "नीले"),
        "yellow": ("पीला", "पीले"),
        "orange": ("नारंगी", "नारंगी"),
        "purple": ("बैंगनी", "बैंगनी"),
        "brown": ("भूरा", "भूरे"),
        "black": ("काला", "काले"),
    }
    NUMBERS = {1: "एक", 2: "दो", 3: "तीन"}
    DEFINITE_NUMBERS = {1: "", 2: "दोनों", 3: "तीनों"}  # "the (both / all three)"
    RELATIONS = {"left_of": "के बाईं ओर", "right_of": "के दाईं ओर", "above": "के ऊपर", "below": "के नीचे"}  # after oblique
    POSITIONS = {
        "top": "चित्र के ऊपरी भाग में",
        "bottom": "चित्र के निचले भाग में",
        "left": "चित्र के बाएँ भाग में",
        "right": "चित्र के दाएँ भाग में",
        "centre": "चित्र के बीच में",
    }
    REGIONS = {
        "top_left": "चित्र के ऊपरी बाएँ कोने में",
        "top": "चित्र के ऊपरी भाग में",
        "top_right": "चित्र के ऊपरी दाएँ कोने में",
        "left": "चित्र के बाएँ भाग में",
        "centre": "चित्र के बीच में",
        "right": "चित्र के दाएँ भाग में",
        "bottom_left": "चित्र के निचले बाएँ कोने में",
        "bottom": "चित्र के निचले भाग में",
        "bottom_right": "चित्र के निचले दाएँ कोने में",
    }
    BACKGROUNDS = {  # agree with the feminine पृष्ठभूमि
        "light_grey": "हल्की स्लेटी",
        "cream": "क्रीम रंग की",
        "pale_blue": "हल्की नीली",
        "pale_green": "हल्की हरी",
        "pale_pink": "हल्की गुलाबी",
    }
    TOTALS = {2: "दो आकृतियाँ", 3: "तीन आकृतियाँ", 4: "चार आकृतियाँ", 5: "पाँच आकृतियाँ", 6: "छह आकृतियाँ"}
    OVERVIEW = "इस चित्र में {background} पृष्ठभूमि पर {total} हैं।"
    TEXTURES = {
        "plain": "पृष्ठभूमि लगभग एक रंग की है और उसमें हल्के दाने हैं।",
        "gradient": "पृष्ठभूमि में हल्का ग्रेडिएंट है।",
        "stripes": "पृष्ठभूमि पर हल्की तिरछी धारियाँ हैं।",
        "speckles": "पृष्ठभूमि पर हल्के धब्बे बिखरे हुए हैं।",
    }
    LAYOUTS = {
        "horizontal": "दोनों समूह एक पंक्ति में अगल-बगल हैं, और कोई भी आकृति किसी दूसरी आकृति को नहीं ढकती।",
        "vertical": "दोनों समूह एक के ऊपर एक हैं, और कोई भी आकृति किसी दूसरी आकृति को नहीं ढकती।",
    }
    ORIENTATIONS = {
        "square": "चित्र वर्गाकार है।",
        "landscape": "चित्र की चौड़ाई उसकी ऊँचाई से अधिक है।",
        "portrait": "चित्र की ऊँचाई उसकी चौड़ाई से अधिक है।",
    }
    CLOSING = "चित्र का बाकी हिस्सा खाली पृष्ठभूमि है।"

    def np(self, g: Group, oblique: bool = False, definite: bool = False) -> str:
        plural = g.count > 1
        noun = self.SHAPES[g.shape][2 * oblique + plural]
        form = 1 if (oblique or plural) else 0
        number = (self.DEFINITE_NUMBERS if definite else self.NUMBERS)[g.count]
        return f"{number} {self.ADJECTIVES[g.size][form]} {self.ADJECTIVES[g.colour][form]} {noun}".strip()

    @staticmethod
    def be(g: Group) -> str:
        return "है" if g.count == 1 else "हैं"

    def single(self, g, position, template):
        if template == 0:
            return f"{self.np(g)} {position} {self.be(g)}।"
        return f"{position} {self.np(g)} {self.be(g)}।"

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{position} {self.np(a)} {self.np(b, oblique=True)} {self.RELATIONS[relation]} {self.be(a)}।"
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{self.np(b)} {position} {self.np(a, oblique=True)} {inverse} {self.be(b)}।"

    def located(self, g, region):
        return f"{region} {self.np(g)} {self.be(g)}।"

    def related(self, a, b, relation):
        b_phrase = self.np(b, oblique=True, definite=True)
        return f"{self.np(a, definite=True)} {b_phrase} {self.RELATIONS[relation]} {self.be(a)}।"

    def ask(self, b, relation):
        return f"{self.np(b, oblique=True)} {self.RELATIONS[relation]} क्या है?"
