"""Variants of a conversation: each slot gets a new value of its shape, written in every place in that place's
own form ("0532 123 45 67" in the user's words, "05321234567" in the call), the same value throughout.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from studio.core.data.grow import turkish
from studio.core.data.grow.slots import MONTHS, Place, Slot

ATTEMPTS = 200
"""New values drawn before a slot is given up (a mask with few free digits, a pool of one name)."""


class NoNewValue(ValueError):
    """A slot has no value left to give (its pool holds only values it may not use)."""


@dataclass(frozen=True)
class Variant:
    messages: list[dict[str, Any]]
    replaced: dict[str, list[Any]]
    """argument name → [old value, new value]."""


def _masked(mask: str, rng: random.Random) -> str:
    return "".join(str(rng.randrange(10)) if c == "#" else c for c in mask)


def _places_of(value: Any) -> int:
    if isinstance(value, int):
        return 0
    return 2 if float(value) != int(float(value)) else 0


def new_value(slot: Slot, shape: str, rng: random.Random, *, avoid: set[str], pool: list[str]) -> Any:
    """A value of the slot's shape other than its own and than any in `avoid` (the held-out conversations'
    identifiers, and the values other variants of this conversation took)."""
    taken = avoid | {str(slot.value)}
    for _ in range(ATTEMPTS):
        if slot.kind in ("digits", "code"):
            value: Any = _masked(shape, rng)
        elif slot.kind == "date":
            old = date.fromisoformat(str(slot.value))
            value = (date(old.year, 1, 1) + timedelta(days=rng.randrange(365))).isoformat()
        elif slot.kind == "amount":
            old = float(slot.value)
            digits = len(str(int(old)))
            whole = rng.randrange(10 ** (digits - 1) if digits > 1 else 1, 10 ** digits)
            places = _places_of(slot.value)
            value = round(whole + rng.randrange(100) / 100, 2) if places else whole
            if isinstance(slot.value, str):
                value = f"{value:.{places}f}" if places else str(value)
        else:
            choices = [name for name in pool if name not in taken]
            if not choices:
                raise NoNewValue(f"{slot.key}: no name in its pool other than {slot.value!r} and the held-out ones")
            value = rng.choice(choices)
        if str(value) not in taken:
            return value
    raise NoNewValue(f"{slot.key}: no new value of shape {shape!r} after {ATTEMPTS} draws")


def _amount_text(value: float, style: str) -> str:
    if style == "json":
        return json.dumps(value)
    decimal, thousands, places = style[0], style[1], int(style[2:])
    text = f"{float(value):,.{places}f}"  # 1,250.50
    return text.replace(",", "\0").replace(".", decimal).replace("\0", "" if thousands == "_" else thousands)


def _digits_into(text: str, digits: str) -> str:
    out, feed = [], iter(digits)
    for c in text:
        out.append(next(feed) if c.isdigit() else c)
    return "".join(out)


def render_value(place: Place, slot: Slot, value: Any) -> str:
    """`value` written the way `place` writes the slot's old value."""
    if slot.kind == "digits":
        target = {"same": str(value), "country": "90" + str(value)[1:], "national": str(value)[1:]}[place.form]
        return _digits_into(place.text, target)
    if slot.kind == "code":
        return str(value)
    if slot.kind == "amount":
        return _amount_text(value if place.form == "json" else float(value), place.form)
    if slot.kind == "date":
        new = date.fromisoformat(str(value))
        if place.form == "iso":
            return new.isoformat()
        if place.form.startswith("numeric"):
            pad = place.form.endswith("0")
            day, month = (f"{new.day:02d}", f"{new.month:02d}") if pad else (str(new.day), str(new.month))
            sep = place.form[len("numeric")]
            return f"{day}{sep}{month}{sep}{new.year}"
        month = MONTHS[new.month - 1]
        if place.form == "day-month-year":
            return f"{new.day} {month} {new.year}"
        if place.form.startswith("day-month:"):
            apostrophe = next(c for c in place.text if c in turkish.APOSTROPHES)
            return f"{new.day} {month}{apostrophe}{turkish.inflect(month, place.form.split(':', 1)[1])}"
        return f"{new.day} {month}"
    # a name: in the place's style, with its suffix re-inflected
    folded = turkish.is_ascii_folded(place.text) and not all(turkish.is_ascii_folded(p.text) for p in slot.places)
    if place.form.startswith("suffix:"):
        cut = next(i for i, c in enumerate(place.text) if c in turkish.APOSTROPHES)
        name = turkish.same_style(str(value), place.text[:cut], ascii_only=folded)
        return f"{name}{place.text[cut]}{turkish.inflect(name, place.form.split(':', 1)[1])}"
    return turkish.same_style(str(value), place.text, ascii_only=folded)


def apply(messages: list[dict[str, Any]], slots: list[Slot], values: dict[str, Any]) -> Variant:
    """The conversation with each slot in `values` replaced in every place (slots not in `values` stay)."""
    edits: dict[int, list[tuple[int, int, str]]] = {}
    replaced = {}
    for slot in slots:
        if slot.key not in values:
            continue
        replaced[slot.key] = [slot.value, values[slot.key]]
        for place in slot.places:
            edits.setdefault(place.turn, []).append((place.start, place.end, render_value(place, slot, values[slot.key])))
    out = copy.deepcopy(messages)
    for turn, changes in edits.items():
        text = str(out[turn].get("content") or "")
        for start, end, new in sorted(changes, reverse=True):
            text = text[:start] + new + text[end:]
        out[turn]["content"] = text
    return Variant(out, replaced)


__all__ = ["Variant", "NoNewValue", "new_value", "render_value", "apply"]
