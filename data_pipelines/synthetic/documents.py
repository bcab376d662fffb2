"""Document pages: invoices, reports and application forms whose key facts are in small print.

A page has a large heading, paragraphs, a table, and three facts (the document number, the date
and a reference code) printed at 7-8 px, so they are legible in the stored 768-1024 px page but
not once it is shrunk to 224 px: the case jina-clip-v2's higher resolutions are for. Page text is
English in PIL's scalable default font; the questions about it come in every caption language.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .randomness import pick

FIELDS = ("number", "date", "reference")
SMALL_PRINT = (7, 8)
PAGE_HEIGHTS = (896, 960, 1024)
MARGIN = 56
INK = (28, 28, 32)


@dataclass(frozen=True)
class DocType:
    title: str
    prefix: str  # of the document number
    number_label: str  # printed before the number
    number_name: str  # the number, in the English description
    name: str
    columns: tuple[str, ...]


DOC_TYPES = {
    "invoice": DocType(
        "INVOICE", "INV", "Invoice No.", "invoice number", "an invoice", ("Description", "Qty", "Unit price", "Amount")
    ),
    "report": DocType(
        "QUARTERLY REPORT", "RPT", "Report ID", "report ID", "a quarterly report", ("Indicator", "Q1", "Q2", "Q3", "Q4")
    ),
    "form": DocType(
        "APPLICATION FORM", "APP", "Application No.", "application number", "an application form", ("Field", "Entry")
    ),
}

QUESTIONS = {
    ("number", "invoice"): {
        "en": "What is the invoice number?",
        "de": "Wie lautet die Rechnungsnummer?",
        "fr": "Quel est le numéro de la facture ?",
        "es": "¿Cuál es el número de la factura?",
        "ru": "Какой номер у счёта?",
        "zh": "发票号码是多少？",
        "ja": "請求書番号は何ですか？",
        "hi": "इनवॉइस नंबर क्या है?",
        "ar": "ما رقم الفاتورة؟",
    },
    ("number", "report"): {
        "en": "What is the report ID?",
        "de": "Wie lautet die Nummer des Berichts?",
        "fr": "Quel est le numéro du rapport ?",
        "es": "¿Cuál es el número del informe?",
        "ru": "Какой номер у отчёта?",
        "zh": "报告编号是多少？",
        "ja": "報告書の番号は何ですか？",
        "hi": "रिपोर्ट की संख्या क्या है?",
        "ar": "ما رقم التقرير؟",
    },
    ("number", "form"): {
        "en": "What is the application number?",
        "de": "Wie lautet die Antragsnummer?",
        "fr": "Quel est le numéro de la demande ?",
        "es": "¿Cuál es el número de la solicitud?",
        "ru": "Какой номер у заявления?",
        "zh": "申请编号是多少？",
        "ja": "申請番号は何ですか？",
        "hi": "आवेदन संख्या क्या है?",
        "ar": "ما رقم الطلب؟",
    },
    "date": {
        "en": "What date is printed on the document?",
        "de": "Welches Datum steht auf dem Dokument?",
        "fr": "Quelle date figure sur le document ?",
        "es": "¿Qué fecha aparece en el documento?",
        "ru": "Какая дата указана в документе?",
        "zh": "文件上印的日期是什么？",
        "ja": "書類に記載されている日付はいつですか？",
        "hi": "दस्तावेज़ पर कौन-सी तारीख छपी है?",
        "ar": "ما التاريخ المطبوع على المستند؟",
    },
    "reference": {
        "en": "What is the reference code in the small print?",
        "de": "Wie lautet der Referenzcode im Kleingedruckten?",
        "fr": "Quel est le code de référence dans les petits caractères ?",
        "es": "¿Cuál es el código de referencia en la letra pequeña?",
        "ru": "Какой справочный код указан мелким шрифтом?",
        "zh": "小字中的参考代码是什么？",
        "ja": "小さな文字で書かれた参照コードは何ですか？",
        "hi": "छोटे अक्षरों में लिखा संदर्भ कोड क्या है?",
        "ar": "ما الرمز المرجعي المكتوب بخط صغير؟",
    },
}
# Retrieval queries for the held-out page set: only the small print tells the pages apart.
LOOKUPS = {
    "number": {
        "en": "Which page has the document number {value}?",
        "de": "Welche Seite trägt die Dokumentnummer {value}?",
        "fr": "Quelle page porte le numéro de document {value} ?",
        "es": "¿Qué página tiene el número de documento {value}?",
        "ru": "На какой странице стоит номер документа {value}?",
        "zh": "哪一页的文件编号是{value}？",
        "ja": "文書番号{value}が記載されているのはどのページですか？",
        "hi": "किस पृष्ठ पर दस्तावेज़ संख्या {value} है?",
        "ar": "ما الصفحة التي تحمل رقم المستند {value}؟",
    },
    "reference": {
        "en": "Which page shows the reference code {value}?",
        "de": "Auf welcher Seite steht der Referenzcode {value}?",
        "fr": "Quelle page indique le code de référence {value} ?",
        "es": "¿Qué página muestra el código de referencia {value}?",
        "ru": "На какой странице указан справочный код {value}?",
        "zh": "哪一页印有参考代码{value}？",
        "ja": "参照コード{value}が記載されているのはどのページですか？",
        "hi": "किस पृष्ठ पर संदर्भ कोड {value} छपा है?",
        "ar": "ما الصفحة التي تحمل الرمز المرجعي {value}؟",
    },
}

# Word lists for names, addresses and plausible business prose.
NAME_HEADS = ("Nor", "Bel", "Cas", "Dun", "El", "Fair", "Gran", "Hal", "Kings", "Lin", "Mar", "Oak", "Pen", "Ros", "Tor", "Wex")  # fmt: skip
NAME_TAILS = ("vale", "ton", "brook", "field", "mont", "ridge", "wick", "ford", "haven", "more", "stead", "gate")
TRADES = ("Trading", "Logistics", "Systems", "Foods", "Textiles", "Energy", "Consulting", "Instruments", "Print", "Health")  # fmt: skip
LEGAL = ("Ltd", "GmbH", "S.A.", "Inc.", "B.V.", "S.r.l.", "AB", "Oy")
STREETS = ("Market", "Station", "Harbour", "Mill", "Church", "Park", "Bridge", "Garden", "Castle", "River")
STREET_KINDS = ("Street", "Road", "Lane", "Avenue", "Way")
CITIES = ("Bergen", "Lyon", "Porto", "Graz", "Leeds", "Utrecht", "Turin", "Malmo", "Ghent", "Cork", "Brno", "Tampere")
FIRST_NAMES = ("Anna", "Lukas", "Marta", "Omar", "Priya", "Chen", "Sofia", "Ivan", "Lea", "Tomas", "Amira", "Kenji")
LAST_NAMES = (
    "Berg",
    "Moreau",
    "Silva",
    "Novak",
    "Haddad",
    "Kumar",
    "Wang",
    "Rossi",
    "Ivanova",
    "Smith",
    "Sato",
    "Lind",
)
ITEMS = (
    "Office chairs", "Printer toner", "Consulting hours", "Network cables", "Desk lamps", "Software licence",
    "Maintenance visit", "Paper A4, box", "Shipping", "Training session", "Monitor stand", "USB hubs",
)  # fmt: skip
INDICATORS = ("Revenue", "Operating costs", "New customers", "Orders shipped", "Support tickets", "Staff", "Returns")
FORM_FIELDS = ("Applicant", "Date of birth", "Street", "City", "Phone", "Email", "Purpose", "Start date")
SUBJECTS = ("The committee", "Our team", "The supplier", "The department", "This office", "The board", "Management")
VERBS = ("reviewed", "approved", "confirmed", "updated", "prepared", "delivered", "audited", "scheduled")
OBJECTS = (
    "the annual budget", "all pending orders", "the service agreement", "the new price list", "the safety plan",
    "the delivery schedule", "the customer records", "the quarterly figures",
)  # fmt: skip
TAILS = (
    "before the end of the quarter.", "as agreed in the contract.", "after a short consultation.",
    "in line with local regulations.", "with no open questions.", "for the coming financial year.",
)  # fmt: skip
TERMS = (
    "Payment is due within 30 days of the date shown.", "Please quote the reference on all correspondence.",
    "Goods remain our property until paid in full.", "Figures are unaudited and subject to revision.",
    "Incomplete applications cannot be processed.", "Keep this page for your records.",
)  # fmt: skip
CODE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I look-alikes


@dataclass
class Page:
    image: Image.Image
    doc_type: str
    company: str
    city: str
    fields: dict[str, str]  # number, date, reference
    boxes: dict[str, list[int]] = field(default_factory=dict)  # where each field's value is printed
    table: list[tuple[str, ...]] = field(default_factory=list)  # header first

    def describe(self) -> str:
        """A long English caption of the page."""
        kind = DOC_TYPES[self.doc_type]
        header, first = self.table[0], self.table[1]
        return (
            f'A scanned page: {kind.name} from {self.company} in {self.city}. The heading reads "{kind.title}", '
            "and the company's name and address stand in the top left corner. Below them are paragraphs of text, "
            f"a table with {len(self.table) - 1} rows under the columns {', '.join(header)}, and notes; the first "
            f"row of the table reads {', '.join(first)}. In small print, the page gives the {kind.number_name} "
            f"{self.fields['number']}, the date {self.fields['date']} and the reference code "
            f"{self.fields['reference']}. The page is {self.image.width} by {self.image.height} pixels, printed in "
            "dark ink on off-white paper."
        )


def question(field_name: str, doc_type: str, language: str) -> str:
    table = QUESTIONS[field_name, doc_type] if field_name == "number" else QUESTIONS[field_name]
    return table[language]


def lookup(field_name: str, value: str, language: str) -> str:
    return LOOKUPS[field_name][language].format(value=value)


def make_page(rng: np.random.Generator) -> Page:
    doc_type = pick(rng, tuple(DOC_TYPES))
    kind = DOC_TYPES[doc_type]
    height = pick(rng, PAGE_HEIGHTS)
    width = int(height * 0.75)
    company = f"{pick(rng, NAME_HEADS)}{pick(rng, NAME_TAILS)} {pick(rng, TRADES)} {pick(rng, LEGAL)}"
    city = pick(rng, CITIES)
    fields = {"number": f"{kind.prefix}-{rng.integers(100000, 999999)}-{_code(rng, 1)}", "date": _date(rng, 2015, 2026)}
    fields["reference"] = f"{_code(rng, 3)}-{_code(rng, 4)}"
    white = int(rng.integers(240, 252))
    paper = (white, white - int(rng.integers(0, 4)), white - int(rng.integers(2, 9)))  # slightly warm
    page = Page(Image.new("RGB", (width, height), paper), doc_type, company, city, fields)
    draw = ImageDraw.Draw(page.image)
    right, footer = width - MARGIN, height - MARGIN - 30

    # Header: company block on the left, the title on the right.
    draw.text((MARGIN, MARGIN), company, font=_font(22), fill=INK)
    street = f"{rng.integers(1, 200)} {pick(rng, STREETS)} {pick(rng, STREET_KINDS)}"
    for i, line in enumerate((street, f"{rng.integers(1000, 99999)} {city}")):
        draw.text((MARGIN, MARGIN + 32 + 17 * i), line, font=_font(13), fill=INK)
    draw.text((right, MARGIN), kind.title, font=_font(26), fill=INK, anchor="ra")
    draw.line((MARGIN, MARGIN + 90, right, MARGIN + 90), fill=INK, width=1)

    # The three facts go, shuffled, under the title and into the footer's two corners.
    small = _font(pick(rng, SMALL_PRINT))
    slots = [(right, MARGIN + 40, "ra"), (MARGIN, height - MARGIN, "ld"), (right, height - MARGIN, "rd")]
    labels = {"number": kind.number_label, "date": "Date:", "reference": "Ref."}
    for name, slot in zip(FIELDS, (slots[i] for i in rng.permutation(3))):
        page.boxes[name] = _label_and_value(draw, slot, labels[name], fields[name], small)

    # Body: paragraphs, a table, then notes down to the footer.
    y = _paragraphs(draw, rng, int(rng.integers(2, 4)), MARGIN + 114, right, footer)
    rows = min(int(rng.integers(4, 10)), (footer - 60 - y) // 24 - 1)  # leave room for the notes heading
    page.table = [kind.columns, *_rows(doc_type, rows, rng)]
    y = _table(draw, page.table, MARGIN, y + 8, right, row_height=24) + 28
    draw.text((MARGIN, y), "Notes", font=_font(15), fill=INK)
    _paragraphs(draw, rng, 4, y + 26, right, footer - 12)

    # Footer: a line of terms in small print above the facts.
    terms = " ".join(TERMS[i] for i in rng.permutation(len(TERMS))[:3])
    draw.line((MARGIN, footer, right, footer), fill=INK, width=1)
    draw.text((MARGIN, footer + 8), terms, font=small, fill=INK)

    grain = rng.standard_normal((height, width, 1), dtype=np.float32) * 3  # scanner noise is mostly luminance
    pixels = np.asarray(page.image, dtype=np.float32) + grain
    page.image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return page


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _label_and_value(draw, slot, label, value, font) -> list[int]:
    """Print ``label value`` anchored at ``slot``; return the value's bounding box."""
    x, y, anchor = slot
    text = f"{label} {value}"
    left = x - draw.textlength(text, font=font) if anchor[0] == "r" else x
    draw.text((left, y), text, font=font, fill=INK, anchor="l" + anchor[1])
    value_left = left + draw.textlength(label + " ", font=font)
    return [round(v) for v in draw.textbbox((value_left, y), value, font=font, anchor="l" + anchor[1])]


def _paragraphs(draw, rng, count: int, y: int, right: int, bottom: int, line_height: int = 18) -> int:
    """Up to ``count`` paragraphs of business prose from ``y``, stopping above ``bottom``; the next free y."""
    font = _font(13)
    for _ in range(count):
        lines = _wrap(" ".join(_sentence(rng) for _ in range(rng.integers(2, 5))), font, right - MARGIN)
        if y + len(lines) * line_height > bottom:
            break
        for line in lines:
            draw.text((MARGIN, y), line, font=font, fill=INK)
            y += line_height
        y += 12
    return y


def _table(draw, rows, left, top, right, row_height) -> int:
    """Draw a ruled table; the y of its bottom edge."""
    widths = [2.2] + [1.0] * (len(rows[0]) - 1)
    xs = np.cumsum([0] + [w / sum(widths) * (right - left) for w in widths]) + left
    for r, row in enumerate(rows):
        y = top + r * row_height
        draw.line((left, y, right, y), fill=INK, width=2 if r < 2 else 1)
        for c, cell in enumerate(row):
            draw.text((xs[c] + 6, y + row_height / 2), cell, font=_font(13 if r == 0 else 12), fill=INK, anchor="lm")
    bottom = top + len(rows) * row_height
    draw.line((left, bottom, right, bottom), fill=INK, width=1)
    for x in xs:
        draw.line((x, top, x, bottom), fill=INK, width=1)
    return bottom


def _rows(doc_type: str, n: int, rng) -> list[tuple[str, ...]]:
    if doc_type == "invoice":
        rows = []
        for i in rng.permutation(len(ITEMS))[:n]:
            qty, price = int(rng.integers(1, 40)), int(rng.integers(100, 50000)) / 100
            rows.append((ITEMS[i], str(qty), f"{price:,.2f}", f"{qty * price:,.2f}"))
        return rows
    if doc_type == "report":
        return [
            (INDICATORS[i], *(f"{rng.integers(10, 9999):,}" for _ in range(4)))
            for i in rng.permutation(len(INDICATORS))[:n]
        ]
    first, last = pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)
    entries = {
        "Applicant": f"{first} {last}",
        "Date of birth": _date(rng, 1950, 2005),
        "Street": f"{rng.integers(1, 200)} {pick(rng, STREETS)} {pick(rng, STREET_KINDS)}",
        "City": pick(rng, CITIES),
        "Phone": f"+{rng.integers(30, 50)} {rng.integers(100, 999)} {rng.integers(100000, 999999)}",
        "Email": f"{first.lower()}.{last.lower()}@example.org",
        "Purpose": pick(rng, ("Parking permit", "Grant", "Membership", "Building permit", "Course enrolment")),
        "Start date": _date(rng, 2024, 2027),
    }
    return list(entries.items())[:n]


def _sentence(rng) -> str:
    return f"{pick(rng, SUBJECTS)} {pick(rng, VERBS)} {pick(rng, OBJECTS)} {pick(rng, TAILS)}"


def _wrap(text: str, font, width: float) -> list[str]:
    # Word widths add up to the line's (kerning aside): linear, unlike measuring every prefix.
    space = _word_length(" ", font)
    lines, line, used = [], [], 0.0
    for word in text.split():
        length = _word_length(word, font)
        if line and used + space + length > width:
            lines.append(" ".join(line))
            line, used = [], 0.0
        used += (space if line else 0.0) + length
        line.append(word)
    return lines + [" ".join(line)]


@functools.lru_cache(maxsize=4096)
def _word_length(word: str, font) -> float:
    return font.getlength(word)


def _date(rng, first_year: int, last_year: int) -> str:
    return f"{rng.integers(first_year, last_year)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"


def _code(rng, n: int) -> str:
    return "".join(CODE_CHARS[i] for i in rng.integers(len(CODE_CHARS), size=n))
