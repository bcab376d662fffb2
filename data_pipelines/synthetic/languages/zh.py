"""Chinese: the measure word 个, 的 between colour and size-and-shape, 那 for groups already named."""

from __future__ import annotations

from ..scenes import INVERSE, Group
from .base import Grammar


class Chinese(Grammar):
    code = "zh"
    joiner = ""
    SHAPES = {
        "circle": "圆形",
        "square": "正方形",
        "triangle": "三角形",
        "star": "星形",
        "hexagon": "六边形",
        "diamond": "菱形",
    }
    COLOURS = {
        "red": "红色",
        "green": "绿色",
        "blue": "蓝色",
        "yellow": "黄色",
        "orange": "橙色",
        "purple": "紫色",
        "brown": "棕色",
        "black": "黑色",
    }
    SIZES = {"small": "小", "large": "大"}
    NUMBERS = {1: "一", 2: "两", 3: "三"}
    RELATIONS = {"left_of": "左边", "right_of": "右边", "above": "上方", "below": "下方"}  # B的<relation>
    POSITIONS = {"top": "图片上方", "bottom": "图片下方", "left": "图片左侧", "right": "图片右侧", "centre": "图片中央"}
    REGIONS = {
        "top_left": "图片左上角",
        "top": "图片上方",
        "top_right": "图片右上角",
        "left": "图片左侧",
        "centre": "图片中央",
        "right": "图片右侧",
        "bottom_left": "图片左下角",
        "bottom": "图片下方",
        "bottom_right": "图片右下角",
    }
    BACKGROUNDS = {
        "light_grey": "浅灰色",
        "cream": "米色",
        "pale_blue": "淡蓝色",
        "pale_green": "淡绿色",
        "pale_pink": "淡粉色",
    }
    TOTALS = {2: "两个图形", 3: "三个图形", 4: "四个图形", 5: "五个图形", 6: "六个图形"}
    OVERVIEW = "图片的{background}背景上共有{total}。"
    TEXTURES = {
        "plain": "背景几乎是纯色的，带有细微的颗粒。",
        "gradient": "背景带有柔和的渐变。",
        "stripes": "背景上有淡淡的斜条纹。",
        "speckles": "背景上布满淡淡的斑点。",
    }
    LAYOUTS = {"horizontal": "两组图形左右并排成一行，彼此没有重叠。", "vertical": "两组图形上下排列，彼此没有重叠。"}
    ORIENTATIONS = {
        "square": "这张图片是正方形的。",
        "landscape": "这张图片的宽度大于高度。",
        "portrait": "这张图片的高度大于宽度。",
    }
    CLOSING = "图片的其余部分是空白背景。"

    def np(self, g: Group, definite: bool = False) -> str:
        # 那个 / 那两个 mark a group already mentioned
        number = ("那" + ("" if g.count == 1 else self.NUMBERS[g.count])) if definite else self.NUMBERS[g.count]
        return f"{number}个{self.COLOURS[g.colour]}的{self.SIZES[g.size]}{self.SHAPES[g.shape]}"

    def single(self, g, position, template):
        return f"{self.np(g)}位于{position}。" if template == 0 else f"{position}有{self.np(g)}。"

    def pair(self, a, b, relation, position, template):
        if template == 0:
            return f"在{position}，{self.np(a)}位于{self.np(b)}的{self.RELATIONS[relation]}。"
        return f"{self.np(b)}在{self.np(a)}的{self.RELATIONS[INVERSE[relation]]}，都位于{position}。"

    def located(self, g, region):
        return f"{region}有{self.np(g)}。"

    def related(self, a, b, relation):
        return f"{self.np(a, True)}在{self.np(b, True)}的{self.RELATIONS[relation]}。"

    def ask(self, b, relation):
        return f"{self.np(b)}的{self.RELATIONS[relation]}是什么？"
