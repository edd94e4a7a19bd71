"""The values a conversation carries from the user's words into a tool call's arguments, their shapes, and every
place each value is written, in its own form.

A slot is an argument of a call (found as a JSON object in an assistant turn: `<tool_code>f({...})</tool_code>`,
`<tool_call>{"name", "arguments"}</tool_call>`, an OpenAI call kept as JSON text) whose value the user said. Its
kind decides how its forms are tied together and how a new value is made:

- ``digits`` (a phone, a customer number): the same digits spaced or grouped ("0532 123 45 67"), with the
  country code ("+90 532 …") or without the trunk 0; the shape is a mask ("05#########": kept characters and
  `#` for a new digit), so a Turkish mobile stays 05XX with 11 digits;
- ``code`` (an order id "SP91290620"): written as is; the mask keeps its letters;
- ``date`` (ISO in the call): "12 Mart", "12 Mart 2025", "12.03.2025", "12/03/2025";
- ``amount`` (1250.5): "1.250,50 TL", "1250,50", "1250.50";
- ``name`` (a city, a person, a tariff): matched regardless of case and of Turkish letters ("İzmir", "Izmir",
  "IZMIR"), with a case suffix after an apostrophe ("Ahmet'e") re-inflected for the new name; new names come from
  a pool (the user's, or the other values of that argument in the data).

A value said in no user turn is not carried (a constant, a tariff the assistant picked) and is not a slot; an
identifier-like value whose forms cannot be tied is reported, never varied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterator

from studio.core.data.grow import turkish

KINDS = ("digits", "code", "date", "amount", "name")
MONTHS = ("Ocak", "Şubat", "Mart", "Nisan", "Mayıs", "Haziran", "Temmuz", "Ağustos", "Eylül", "Ekim", "Kasım",
          "Aralık")
_ISO = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})\Z")
_CODE = re.compile(r"\A(?=(?:\D*\d){4})[A-Za-z0-9][A-Za-z0-9\-_/ ]{3,}\Z")  # an id, a plate: four digits or more
_DIGIT_RUN = re.compile(r"(?<![\w.,])\+?\(?\d+(?:(?:[ \-.]|\) ?| \()\d+)*(?![\w]|[.,]\d)")
_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:\.\d{3})+(?:,\d+)?(?![\w]|[.,]\d)|(?<![\w.,])\d+(?:[.,]\d+)?(?![\w]|[.,]\d)")
_DAY_MONTH = re.compile(r"(?<!\w)(\d{1,2}) (" + "|".join(MONTHS) + r")(?: (\d{4}))?(?![^\W\d_])", re.IGNORECASE)
_NUMERIC_DATE = re.compile(r"(?<![\w.])(\d{1,2})([./])(\d{1,2})\2(\d{4})(?!\w)")
_ISO_IN_TEXT = re.compile(r"(?<![\w-])(\d{4})-(\d{2})-(\d{2})(?![\w-])")


@dataclass(frozen=True)
class Place:
    """Where one form of a value is written: message `turn`, characters [start, end), and how to rewrite it."""

    turn: int
    start: int
    end: int
    text: str
    form: str
    """digits: "same", "country" (+90…) or "national" (no trunk 0); date: "day-month", "day-month-year",
    "numeric" (with the separator), "iso"; amount: "decimal,thousands,places"; name: "" or "suffix:<template>";
    code: "same"."""


@dataclass(frozen=True)
class Slot:
    """One argument's value in one conversation and every place it is written."""

    key: str
    kind: str
    value: Any
    places: tuple[Place, ...]


@dataclass
class SlotReport:
    """What detection found in one conversation: its slots, and the values it could not tie (not varied)."""

    slots: list[Slot] = field(default_factory=list)
    untied: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- the calls


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every top-level JSON object written in `text` (a call's arguments, a Hermes/Qwen call, an OpenAI call)."""
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            yield value
        index = text.find("{", end)


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            if name in ("name", "type", "id") and not key and isinstance(item, str) and "arguments" in value:
                continue  # a call's own name, not an argument
            if name == "arguments" and isinstance(item, str):
                try:
                    item = json.loads(item)
                except ValueError:
                    pass
            yield from _leaves(item, name if name not in ("arguments", "parameters", "function") else key)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, key)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and key:
        yield key, value


def call_arguments(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(argument name, value) of every call the assistant turns write, in order, without repeats."""
    seen: list[tuple[str, Any]] = []
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for obj in json_objects(str(message.get("content") or "")):
            for pair in _leaves(obj):
                if pair not in seen:
                    seen.append(pair)
    return seen


def kind_of(value: Any) -> str | None:
    """The kind a call's value is varied as, or None (a bool, a short count, free text)."""
    if isinstance(value, float) or (isinstance(value, int) and value >= 100):
        return "amount"
    if isinstance(value, int):
        return None
    text = str(value).strip()
    if _ISO.match(text):
        return "date"
    if text.isdigit() and len(text) >= 4:
        return "digits"
    if re.fullmatch(r"\d+[.,]\d+", text):
        return "amount"
    if _CODE.match(text):
        return "code"
    if re.fullmatch(r"[^\W\d][\w\-' ]{1,40}", text) and len(text.split()) <= 3:
        return "name"
    return None


def default_shape(kind: str, value: Any) -> str:
    """A digit string or code keeps its letters and length; a digit string starting with the trunk 0 also keeps
    the digit after it (a Turkish mobile: "05#########"), any other its first digit (its magnitude)."""
    if kind == "digits":
        text = str(value)
        keep = 2 if text.startswith("0") else 1
        return text[:keep] + "#" * (len(text) - keep)
    if kind == "code":
        return "".join("#" if c.isdigit() else c for c in str(value))
    return {"date": "same year", "amount": "same digits", "name": "pool"}[kind]


# ----------------------------------------------------------------------------------------- the forms


def _digit_places(turn: int, text: str, value: str) -> list[Place]:
    places = []
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        form = ("same" if digits == value else
                "country" if value.startswith("0") and digits == "90" + value[1:] else
                "national" if value.startswith("0") and len(value) > 7 and digits == value[1:] else None)
        if form:
            places.append(Place(turn, match.start(), match.end(), match.group(0), form))
    return places


def _amount_styles(text: str) -> list[tuple[float, str]]:
    """Each reading of a written number with its style "decimal,thousands,places"."""
    readings = []
    if "," in text and "." in text:  # Turkish: 1.250,50
        whole, _, fraction = text.partition(",")
        readings.append((float(whole.replace(".", "") + "." + fraction), f",.{len(fraction)}"))
    elif "," in text:
        whole, _, fraction = text.partition(",")
        readings.append((float(whole + "." + fraction), f",_{len(fraction)}"))
    elif "." in text:
        whole, _, fraction = text.partition(".")
        readings.append((float(text), f"._{len(fraction)}"))
        if len(fraction) == 3 and re.fullmatch(r"\d{1,3}(\.\d{3})+", text):
            readings.append((float(text.replace(".", "")), ",.0"))
    else:
        readings.append((float(text), ",_0"))
    return readings


def _amount_places(turn: int, text: str, value: float) -> list[Place]:
    places = []
    for match in _NUMBER.finditer(text):
        if match.group(0) == json.dumps(value):  # the call's own JSON number
            places.append(Place(turn, match.start(), match.end(), match.group(0), "json"))
            continue
        for reading, style in _amount_styles(match.group(0)):
            if abs(reading - value) < 1e-9:
                places.append(Place(turn, match.start(), match.end(), match.group(0), style))
                break
    return places


def _date_places(turn: int, text: str, value: date) -> list[Place]:
    places = []
    for match in _ISO_IN_TEXT.finditer(text):
        if date(*map(int, match.groups())) == value:
            places.append(Place(turn, match.start(), match.end(), match.group(0), "iso"))
    for match in _NUMERIC_DATE.finditer(text):
        day, sep, month, year = match.groups()
        if (int(year), int(month), int(day)) == (value.year, value.month, value.day):
            places.append(Place(turn, match.start(), match.end(), match.group(0), f"numeric{sep}"
                                + ("0" if len(day) == 2 else "")))
    for match in _DAY_MONTH.finditer(text):
        day, month, year = match.groups()
        months = [turkish.fold(m) for m in MONTHS]
        if int(day) == value.day and months.index(turkish.fold(month)) + 1 == value.month and \
                (year is None or int(year) == value.year):
            end, form = match.end(), "day-month" if year is None else "day-month-year"
            suffix = re.match(r"[" + turkish.APOSTROPHES + r"]([^\W\d_]+)", text[end:])
            if suffix and year is None:  # "12 Mart'ta": the suffix follows the month's vowels
                template = turkish.suffix_template(month, suffix.group(1))
                if template is None:
                    continue
                end, form = end + suffix.end(), f"day-month:{template}"
            places.append(Place(turn, match.start(), end, text[match.start():end], form))
    return places


def _name_places(turn: int, text: str, value: str) -> tuple[list[Place], list[str]]:
    """Forms of a name in `text`, and the suffixes found that no known case suffix explains."""
    folded, target = turkish.fold(text), turkish.fold(value)
    places, unknown = [], []
    for match in re.finditer(r"(?<!\w)" + re.escape(target) + r"(?!\w)", folded):
        start, end = match.span()
        form = ""
        if end < len(text) and text[end] in turkish.APOSTROPHES:
            suffix = re.match(r"[^\W\d_]*", text[end + 1:]).group(0)
            template = turkish.suffix_template(text[start:end], suffix)
            if template is None:
                unknown.append(text[start:end + 1 + len(suffix)])
                continue
            form = f"suffix:{template}"
            end += 1 + len(suffix)
        places.append(Place(turn, start, end, text[start:end], form))
    return places, unknown


def find_places(messages: list[dict[str, Any]], key: str, kind: str, value: Any) -> tuple[list[Place], list[str]]:
    """Every place `value` is written in the conversation, and any forms that could not be tied."""
    places: list[Place] = []
    untied: list[str] = []
    for turn, message in enumerate(messages):
        text = str(message.get("content") or "")
        if kind == "digits":
            places += _digit_places(turn, text, str(value))
        elif kind == "code":
            places += [Place(turn, m.start(), m.end(), m.group(0), "same")
                       for m in re.finditer(r"(?<![\w])" + re.escape(str(value)) + r"(?!\w)", text)]
        elif kind == "amount":
            places += _amount_places(turn, text, value if isinstance(value, (int, float)) else float(value))
        elif kind == "date":
            places += _date_places(turn, text, date.fromisoformat(str(value)))
        elif kind == "name":
            found, unknown = _name_places(turn, text, str(value))
            places += found
            untied += unknown
    return places, untied


def _overlaps(place: Place, taken: list[Place]) -> bool:
    return any(p.turn == place.turn and p.start < place.end and place.start < p.end for p in taken)


def detect(messages: list[dict[str, Any]], kinds: dict[str, str] | None = None) -> SlotReport:
    """The slots of one conversation. `kinds` overrides the kind per argument name ("" drops the argument)."""
    report = SlotReport()
    taken: list[Place] = []
    for key, value in call_arguments(messages):
        kind = (kinds or {}).get(key, kind_of(value))
        if not kind:
            continue
        try:
            places, untied = find_places(messages, key, kind, value)
        except ValueError:
            report.untied.append(f"{key}={value!r}: not a {kind}")
            continue
        places = sorted((p for p in places if not _overlaps(p, taken)), key=lambda p: (p.turn, p.start))
        said = any(messages[p.turn].get("role") == "user" for p in places)
        if untied:
            report.untied.append(f"{key}={value!r}: {', '.join(untied)} (suffix not known)")
            continue
        if not said:
            if kind != "name":  # an id the user never said cannot be tied to their words
                report.untied.append(f"{key}={value!r}: not found in the user's words")
            continue
        taken += places
        report.slots.append(Slot(key, kind, value, tuple(places)))
    return report
