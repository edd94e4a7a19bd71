"""Text encodings of data files: which encodings the studio reads, a guess from the bytes (UTF-8, UTF-16,
Windows-1254 Turkish, Windows-1252 Western, Latin-1), and the `DataError` that names the line where the text is
not valid in the chosen encoding and, where the bytes look like a known one, the encoding to read it with.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from studio.core.data.issues import DataError, DataIssue

_WESTERN = set("àáâãäåæçèéêëìíîïñòóôõöøùúûüÿßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜŸœŒšŠžŽ")

_PUNCTUATION = set("€‚„…†‡‰‹›‘’“”•–—™¡¿«»°±²³´µ¶·¸¹º¼½¾×÷©®¢£¥§¨¬")

_TURKISH = set("ğĞıİşŞçÇöÖüÜâÂîÎûÛ")


ENCODING_NAMES = {
    "utf-8": "UTF-8",
    "cp1254": "Windows-1254 (Turkish)",
    "cp1252": "Windows-1252 (Western European)",
    "latin-1": "Latin-1 (ISO-8859-1)",
    "utf-16": "UTF-16",
}

ENCODING_CHOICES = tuple(ENCODING_NAMES)

_EXPECTED = {
    "cp1252": _WESTERN | _PUNCTUATION,
    "cp1254": _TURKISH | _PUNCTUATION | set("äÄéÉèÈàÀ"),
    "latin-1": _WESTERN | _PUNCTUATION,
}

def _located_error(issue: DataIssue, *, encoding_guess: EncodingGuess | None = None) -> DataError:
    """A DataError that is one located problem: its message is the issue and `issues` holds it, so a
    problems list shows its line rather than the whole file."""
    error = DataError(str(issue), encoding_guess=encoding_guess)
    # Set after construction: passed to DataError, the issue would be appended to its own message.
    error.issues, error.total = [issue], 1
    return error


_ASCII_COMPATIBLE = {"utf-8", "utf-8-sig", "cp1252", "cp1254", "latin-1", "iso8859-1", "iso8859-9", "ascii",
                     "cp1250", "cp1251", "cp1253", "cp1257", "iso8859-15"}


# ----------------------------------------------------------------------------------------------------
# Encodings


@dataclass(frozen=True)
class EncodingGuess:
    """A legacy encoding that reads a file's bytes as plausible text, with an example to check it by."""

    encoding: str
    name: str
    score: float
    line: int = 0
    sample: str = ""

    def describe(self) -> str:
        where = f" (line {self.line} then reads “{self.sample}”)" if self.sample else ""
        return f"it looks like {self.name}{where}"


def normalise_encoding(name: str) -> str:
    """The codec name for a user's encoding choice ('auto' and '' mean UTF-8); ValueError if unknown."""
    name = (name or "utf-8").strip().lower()
    if name == "auto":
        name = "utf-8"
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown text encoding '{name}' (e.g. {', '.join(ENCODING_CHOICES)})") from None
    return {"iso8859-1": "latin-1", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(canonical, canonical)


def _is_utf8_text(data: bytes) -> bool:
    """Non-ASCII bytes that all form valid UTF-8 sequences (a sample cut mid-character still counts): by chance
    a legacy-encoded text almost never does."""
    if all(b < 128 for b in data[:65536]):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(data) - 3 and error.reason == "unexpected end of data"
    return True


def guess_encoding(data: bytes) -> EncodingGuess | None:
    """The most plausible encoding of `data` when the one it was read with failed, or None when nothing reads
    it as text. UTF-8 comes first: a UTF-8 file read as Windows-1254 must not be "recognised" as Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return EncodingGuess("utf-16", ENCODING_NAMES["utf-16"], 1.0)
    if _is_utf8_text(data):
        return EncodingGuess("utf-8", ENCODING_NAMES["utf-8"], 1.0)
    if len(data) >= 4:
        zeros_odd = data[1:4000:2].count(0)
        zeros_even = data[0:4000:2].count(0)
        half = min(len(data), 4000) // 2
        if half and max(zeros_odd, zeros_even) > 0.4 * half:
            return EncodingGuess("utf-16-le" if zeros_odd > zeros_even else "utf-16-be", "UTF-16 (no byte-order mark)",
                                 0.9)
    best: EncodingGuess | None = None
    for encoding, expected in _EXPECTED.items():
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        extended = [ch for ch in text if ord(ch) > 127]
        if not extended:
            continue
        plausible = sum(1 for ch in extended if ch in expected)
        controls = sum(1 for ch in extended if 0x80 <= ord(ch) <= 0x9F)  # C1 controls: latin-1 misreading cp125x
        score = (plausible - 2 * controls) / len(extended)
        if best is None or score > best.score + 1e-9:
            best = EncodingGuess(encoding, ENCODING_NAMES[encoding], score)
    if best is None or best.score <= 0.3:
        return None
    return best


def _example_line(data: bytes, guess: EncodingGuess) -> EncodingGuess:
    """The guess with the first line holding non-ASCII bytes, decoded with it, as evidence."""
    if guess.encoding.startswith("utf-16"):
        return guess
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if any(b > 127 for b in raw):
            text = raw.decode(guess.encoding, errors="replace").strip()
            position = next((i for i, ch in enumerate(text) if ord(ch) > 127), 0)
            start = max(0, position - 30)
            snippet = ("…" if start else "") + text[start:start + 70] + ("…" if len(text) > start + 70 else "")
            return EncodingGuess(guess.encoding, guess.name, guess.score, number, snippet)
    return guess


def _not_in_encoding_error(path: Path, raw: bytes, line: int, position: int, encoding: str) -> DataError:
    """The DataError for a line that cannot be decoded, with a guessed encoding when one fits."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4 << 20)
    except OSError:
        head = b""
    guess = guess_encoding(head + b"\n" + raw)
    if guess is not None:
        guess = _example_line(head + b"\n" + raw, guess) if raw in head else guess
    name = "UTF-8" if encoding.startswith("utf-8") else ENCODING_NAMES.get(encoding, encoding)
    reason = f"not {name} text (byte {raw[position]:#04x})"
    if guess is not None and guess.encoding != encoding:
        reason += (f"; {guess.describe()}. Read it as {guess.name} (data.encoding = \"{guess.encoding}\") "
                   "or save it as UTF-8")
    else:
        reason += "; save the file as UTF-8"
    return _located_error(DataIssue(path, line, reason), encoding_guess=guess)
