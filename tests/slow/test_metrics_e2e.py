"""The eval metrics (studio.core.metrics): each a pure function on text, scored as a user would judge it."""

from __future__ import annotations


import pytest

from studio.core.metrics.registry import build_metric
from studio.core.metrics.text import regex_match


@pytest.mark.timeout(60)
def test_a_catastrophically_backtracking_regex_is_a_failure_with_its_reason_not_a_stall():
    import time

    # `(a+)+$` took 17 s with `re` on a 29-character reply; `regex` sees through it and answers at once.
    started = time.monotonic()
    assert not regex_match("a" * 28 + "!", "", pattern=r"(a+)+$").passed
    # `(a|aa)+$` defeats `regex` too (about 2**n steps): it is stopped after a second and counted as a failure.
    stalled = build_metric("regex", pattern=r"(a|aa)+$")("a" * 80 + "!", "")
    assert not stalled.passed and stalled.score == 0.0
    assert stalled.reason == "the pattern took over 1 s on this reply (catastrophic backtracking?)"
    assert time.monotonic() - started < 20  # generous: the bound is 1 s per match on a shared machine
    # The same pattern still matches where it can, quickly.
    assert build_metric("regex", pattern=r"(a|aa)+$")("baaaa", "").passed
