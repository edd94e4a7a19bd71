"""Text metrics: exact, normalised, contains, regex and a chrF similarity.

Normalisation is Unicode-aware: NFKC, case folding, punctuation removed, whitespace collapsed. The
Turkish i needs care because Python's case folding is not Turkish: "İ".casefold() is "i" plus a combining
dot, and "I" folds to "i" where Turkish writes "ı". By default the four letters İ, I, i, ı count as one
(a model that writes "Izmir" or "IZMIR" for "İzmir" is right, and so is "ISPARTA" for "ısparta");
`turkish=True` keeps Turkish casing instead: İ↔i and I↔ı, dotted and dotless i then differ.

The user's regular expressions (the regex metric, GRPO's regex reward) run under the `regex` library, not `re`:
a pattern such as `(a|aa)+$` backtracks exponentially, and `re` has no way to stop a match (`(a+)+$` took 17 s
on a 29-character reply), while `regex` takes a `timeout`. VERSION0 is `re`'s syntax and behaviour, so a pattern
compiles and matches as the user tested it with `re`.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import regex

from studio.core.metrics.result import MetricResult, verdict

PATTERN_TIMEOUT_S = 1.0
"""How long one match of a user's pattern may take on one reply before it counts as a failure."""

DEFAULT_CHRF_PASS = 0.7
"""chrF (0..1) from which a reply counts as passed: near-paraphrase, not merely on topic."""


def normalise_text(text: str, *, turkish: bool = False) -> str:
    """The text as the normalised match compares it: case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", text)
    if turkish:
        text = text.replace("İ", "i").replace("I", "ı")
    else:
        text = text.replace("İ", "i").replace("ı", "i")
    text = text.casefold()
    text = unicodedata.normalize("NFC", text)
    # Punctuation (Unicode category P*) becomes a space, so "a,b" and "a b" agree but words never merge.
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def exact_match(reply: str, expected: str) -> MetricResult:
    """Byte-for-byte equal, except surrounding whitespace (a template's trailing newline is no error)."""
    passed = reply.strip() == expected.strip()
    return verdict(passed, {} if passed else {"reason": "differs from the expected reply"})


def normalised_match(reply: str, expected: str, *, turkish: bool = False) -> MetricResult:
    got, want = normalise_text(reply, turkish=turkish), normalise_text(expected, turkish=turkish)
    passed = got == want
    return verdict(passed, {} if passed else {"reason": "differs after normalising", "reply": got,
                                              "expected": want})


def contains(reply: str, expected: str) -> MetricResult:
    """The expected text appears in the reply as it is (case and spacing count)."""
    passed = expected.strip() in reply
    return verdict(passed, {} if passed else {"reason": "the expected text is not in the reply"})


class PatternError(ValueError):
    """A user's regular expression that does not compile; the message names it."""


@lru_cache(maxsize=64)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """The user's pattern as every caller matches it; also the one check that it compiles (the metric's and the
    reward's validation), so what is accepted is what runs."""
    try:
        return regex.compile(pattern, regex.VERSION0)
    except regex.error as error:
        where = f" at position {error.pos}" if error.pos is not None else ""
        raise PatternError(f"regex {pattern!r} does not compile: {error.msg}{where}") from None


def regex_match(reply: str, expected: str, *, pattern: str) -> MetricResult:
    """The user's pattern is found in the reply (a search); `expected` is not used. A match that runs past
    PATTERN_TIMEOUT_S is a failure saying so, so one pathological pattern cannot stall an eval or a GRPO step."""
    try:
        found = compile_pattern(pattern).search(reply, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        return verdict(False, {"reason": f"the pattern took over {PATTERN_TIMEOUT_S:g} s on this reply "
                                         "(catastrophic backtracking?)"})
    if found is None:
        return verdict(False, {"reason": f"no match for {pattern!r}"})
    return verdict(True, {"match": found.group(0), "span": [found.start(), found.end()]})


def chrf(reply: str, expected: str, *, threshold: float = DEFAULT_CHRF_PASS) -> MetricResult:
    """sacrebleu's sentence chrF (character n-gram F-score, the WMT standard), scaled to 0..1."""
    score = _chrf_scorer().sentence_score(reply, [expected]).score / 100.0 if expected or reply else 1.0
    passed = score >= threshold
    detail = {} if passed else {"reason": f"chrF {score:.2f} below {threshold:.2f}"}
    return MetricResult(passed, score, detail)


@lru_cache(maxsize=1)
def _chrf_scorer():
    from sacrebleu.metrics import CHRF

    return CHRF()
