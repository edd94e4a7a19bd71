"""Turkish words for value variation: case without losing the dot of İ/ı, ASCII folding, and re-inflecting a
proper noun's case suffix ("Ahmet'e" → "Ayşe'ye") by vowel harmony.

Folding and case change map one character to one character, so a position found in the folded text is the
same position in the original.
"""

from __future__ import annotations

_LOWER = {"I": "ı", "İ": "i"}
_UPPER = {"i": "İ", "ı": "I"}
_ASCII = str.maketrans("çğıöşüÇĞİÖŞÜâîûÂÎÛ", "cgiosuCGIOSUaiuAIU")
VOWELS = "aeıioöuüâîû"
FRONT = set("eiöüî")
ROUNDED = set("oöuüû")
VOICELESS = set("çfhkpsşt")
APOSTROPHES = "'’"


def lower(text: str) -> str:
    """Turkish lower case, one character for one: "İZMİR" → "izmir", "IŞIK" → "ışık"."""
    return "".join(_LOWER.get(c) or (c.lower() if len(c.lower()) == 1 else c) for c in text)


def upper(text: str) -> str:
    return "".join(_UPPER.get(c) or (c.upper() if len(c.upper()) == 1 else c) for c in text)


def fold(text: str) -> str:
    """Lower case without Turkish letters: what "İzmir", "IZMIR" and "izmir" have in common."""
    return lower(text).translate(_ASCII)


def is_ascii_folded(text: str) -> bool:
    return text == text.translate(_ASCII)


def same_style(new: str, like: str, *, ascii_only: bool = False) -> str:
    """`new` written the way `like` is: upper or lower case, and without Turkish letters when `ascii_only` (the
    same value is written with them elsewhere, "İzmir" in the user's words and "Izmir" in the call)."""
    if like.isupper() and len(like) > 1:
        new = upper(new)
    elif like.islower():
        new = lower(new)
    return new.translate(_ASCII) if ascii_only else new


# A suffix after the apostrophe, as a template: A = e/a, I = i/ı/u/ü (harmony), D = d/t (hardening after a
# voiceless consonant), (y)/(n) = a buffer consonant after a vowel.
_TEMPLATES = ("(y)A", "DA", "DAn", "(n)In", "(y)I", "(y)lA", "DAki", "(n)In", "lA")


def _last_vowel(word: str) -> str:
    return next((c for c in reversed(lower(word)) if c in VOWELS), "e")


def _fill_suffix(template: str, word: str) -> str:
    vowel = _last_vowel(word)
    a = "e" if vowel in FRONT else "a"
    i = ("ü" if vowel in ROUNDED else "i") if vowel in FRONT else ("u" if vowel in ROUNDED else "ı")
    last = lower(word)[-1:] or "a"
    out = []
    index = 0
    while index < len(template):
        part = template[index]
        if part == "(":
            buffer = template[index + 1]
            if last in VOWELS:
                out.append(buffer)
            index += 3
            continue
        out.append({"A": a, "I": i, "D": "t" if last in VOICELESS else "d"}.get(part, part))
        index += 1
    return "".join(out)


def suffix_template(word: str, suffix: str) -> str | None:
    """The template `suffix` instantiates on `word` ("Ahmet", "e" → "(y)A"), or None when it is none of the known
    case suffixes (then the value is left alone and reported)."""
    wanted = lower(suffix)
    return next((template for template in _TEMPLATES if _fill_suffix(template, word) == wanted), None)


def inflect(word: str, template: str) -> str:
    """The suffix `template` takes after `word`: inflect("Ayşe", "(y)A") == "ye"."""
    return _fill_suffix(template, word)
