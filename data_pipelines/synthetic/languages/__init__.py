"""Caption grammars: one small, hand-checked grammar per language (one module each), all over
the same scene model (``scenes.py``).

Each grammar builds noun phrases with the agreement its language needs (German case and gender,
French and Spanish gender and number, Russian case after numerals, Hindi oblique forms, Arabic
gender, dual and the polarity of "three") and says a scene in two templates that mean the same:

* ``caption(scene, 0)`` / ``caption(scene, 1)``: one sentence; template 1 reorders the sentence
  and, for a pair, states the relation from the other group's side ("B right of A").
* ``long_caption(scene)``: several sentences on the background, every group and its place, the
  relation, the layout and the picture's shape (pairs only).
* ``question(scene)``: "what is <relation> <second group>?", answered by the first group.

Coverage is deliberately small (8 colours, 6 shapes, 2 sizes, 1-3 objects per group): every
combination is grammatical, which matters more than variety.
"""

from .ar import Arabic
from .base import Grammar
from .de import German
from .en import English
from .es import Spanish
from .fr import French
from .hi import Hindi
from .ja import Japanese
from .ru import Russian
from .zh import Chinese

GRAMMARS: dict[str, Grammar] = {
    g.code: g for g in (English(), German(), French(), Spanish(), Russian(), Chinese(), Japanese(), Hindi(), Arabic())
}
LANGUAGES = tuple(GRAMMARS)
