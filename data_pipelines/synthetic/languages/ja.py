"""Japanese: the counter つ, in modifier (2つの小さな青い正方形) and existential (…が2つあります) forms."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar


class Japanese(Grammar):
    code = "ja"
    joiner = ""
    SHAPES = {
        "circle": "円",
        "square": "正方形",
        "triangle": "三角形",
        "star": "星",
        "hexagon": "六角形",
        "diamond": "ひし形",
    }
    COLOURS = {  # attributive forms
        "red": "赤い",
        "green": "緑の",
        "blue": "青い",
        "yellow": "黄色い",
        "orange": "オレンジ色の",
        "purple": "紫の",
        "brown": "茶色の",
        "black": "黒い",
    }
    SIZES = {"small": "小さな", "large": "大きな"}
    RELATIONS = {"left_of": "左", "right_of": "右", "above": "上", "below": "下"}  # Bの<relation>に
    POSITIONS = {
        "top": "画像の上部",
        "bottom": "画像の下部",
        "left": "画像の左側",
        "right": "画像の右側",
        "centre": "画像の中央",
    }
    REGIONS = {
        "top_left": "画像の左上",
        "top": "画像の上部",
        "top_right": "画像の右上",
        "left": "画像の左側",
        "centre": "画像の中央",
        "right": "画像の右側",
        "bottom_left": "画像の左下",
        "bottom": "画像の下部",
        "bottom_right": "画像の右下",
    }
    BACKGROUNDS = {
        "light_grey": "薄い灰色",
        "cream": "クリーム色",
        "pale_blue": "淡い青色",
        "pale_green": "淡い緑色",
        "pale_pink": "淡いピンク色",
    }
    TOTALS = {n: f"{n}つの図形" for n in range(2, 7)}
    OVERVIEW = "この画像には、{background}の背景に{total}が描かれています。"
    TEXTURES = {
        "plain": "背景はほぼ単色で、細かい粒状のノイズがあります。",
        "gradient": "背景には柔らかなグラデーションがあります。",
        "stripes": "背景にはかすかな斜めの縞模様があります。",
        "speckles": "背景にはかすかな斑点が散らばっています。",
    }
    LAYOUTS = {
        "horizontal": "2つのグループは横に並んでおり、図形同士は重なっていません。",
        "vertical": "2つのグループは上下に並んでおり、図形同士は重なっていません。",
    }
    ORIENTATIONS = {
        "square": "画像は正方形です。",
        "landscape": "画像は縦より横が長いです。",
        "portrait": "画像は横より縦が長いです。",
    }
    CLOSING = "それ以外の部分は何もない背景です。"

    def bare(self, g: Group) -> str:
        return f"{self.SIZES[g.size]}{self.COLOURS[g.colour]}{self.SHAPES[g.shape]}"

    def counted(self, g: Group) -> str:
        """The phrase as a modifier: 2つの小さな青い正方形."""
        return f"{g.count}つの{self.bare(g)}"

    def single(self, g, position, template):
        if template == 0:
            return f"{self.counted(g)}が{position}にあります。"
        return f"{position}に{self.bare(g)}が{g.count}つあります。"

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"{position}では、{self.counted(a)}が{self.counted(b)}の{self.RELATIONS[relation]}にあります。"
        inverse = self.RELATIONS[INVERSE[relation]]
        return f"{position}には、{self.bare(a)}が{a.count}つあり、その{inverse}に{self.bare(b)}が{b.count}つあります。"

    def located(self, g, region):
        return f"{region}には{self.bare(g)}が{g.count}つあります。"

    def related(self, a, b, relation):
        return f"{self.bare(a)}は{self.bare(b)}の{self.RELATIONS[relation]}にあります。"

    def ask(self, b, relation):
        return f"{self.counted(b)}の{self.RELATIONS[relation]}には何がありますか？"
