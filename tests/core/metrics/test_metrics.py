"""The eval metrics (studio.core.metrics): each a pure function on text, scored as a user would judge it."""

from __future__ import annotations

import json

import pytest

from studio.core.metrics.registry import METRICS, MetricError, build_metric, build_metrics
from studio.core.metrics.text import chrf, contains, exact_match, normalise_text, normalised_match, regex_match
from studio.core.metrics.tool_calls import extract_tool_calls, expected_tool_calls, json_equal, tool_call_match

BILL = '<tool_code>get_bill({"phone": "05321234567"})</tool_code>'


# ------------------------------------------------------------------ text metrics


def test_exact_match_ignores_only_surrounding_whitespace():
    assert exact_match("Merhaba.\n", "Merhaba.").passed
    assert not exact_match("merhaba.", "Merhaba.").passed
    assert exact_match("a", "b").score == 0.0 and exact_match("a", "a").score == 1.0


def test_normalised_match_ignores_case_punctuation_and_spacing():
    assert normalised_match("  hello,   WORLD!! ", "Hello world").passed
    assert normalised_match("“Fiber 500” — today.", "fiber 500 today").passed
    assert not normalised_match("hello world", "hello, word").passed


def test_normalised_match_folds_the_turkish_dotted_and_dotless_i():
    assert normalised_match("İZMİR'de arıza var", "izmir de arıza var").passed  # İ ↔ i
    assert normalised_match("ISPARTA", "ısparta").passed  # I ↔ ı
    assert normalised_match("Izmir", "İzmir").passed, "a model writing Izmir for İzmir is right by default"
    assert normalise_text("İstanbul") == "istanbul", "no combining dot left over from Python's casefold"
    assert normalise_text("Muğla ŞUBESİ") == "muğla şubesi"


def test_turkish_casing_keeps_dotted_and_dotless_i_apart():
    assert normalised_match("ISPARTA", "ısparta", turkish=True).passed
    assert normalised_match("İZMİR", "izmir", turkish=True).passed
    assert not normalised_match("ISPARTA", "isparta", turkish=True).passed
    assert not normalised_match("kırmızı", "kirmizi", turkish=True).passed
    assert build_metric("normalised_tr")("ILIK", "ılık").passed


def test_contains_is_case_sensitive_substring():
    assert contains("Fiber 500 costs 450 TL a month", "450 TL").passed
    assert not contains("Fiber 500 costs 450 tl a month", "450 TL").passed


def test_regex_searches_the_reply_with_the_users_pattern():
    result = regex_match("Your order 12345 ships today", "", pattern=r"order \d{5}")
    assert result.passed and result.detail["match"] == "order 12345"
    assert not regex_match("no number here", "", pattern=r"\d+").passed


def test_users_patterns_compile_and_match_as_they_do_with_re():
    import re

    for pattern, reply in [(r"order \d{5}", "Your order 12345"), (r"(?P<n>a)(?P=n)", "xaa"), (r"^\w+\(", "f(x)"),
                           (r"(?i)fiber\s+500", "FIBER  500"), (r"<tool_code>\w+\(", '<tool_code>get_bill({})'),
                           (r"[^\W\d_]+", "123 İzmir"), (r"\bTL\b", "450 TL.")]:
        ours = regex_match(reply, "", pattern=pattern)
        theirs = re.search(pattern, reply)
        assert ours.passed and ours.detail["match"] == theirs.group(0), pattern
    for broken in ["(unclosed", "a{2,1}", "*x", "[0-9"]:
        with pytest.raises(re.error):
            re.compile(broken)
        with pytest.raises(MetricError, match="does not compile"):
            build_metric("regex", pattern=broken)


def test_a_regex_that_does_not_compile_is_an_error_naming_it():
    with pytest.raises(MetricError, match=r"regex '\(unclosed' does not compile: missing \)"):
        build_metrics(["regex"], pattern="(unclosed")
    with pytest.raises(MetricError, match="needs a pattern"):
        build_metrics(["regex"])


def test_chrf_scores_similarity_from_zero_to_one():
    assert chrf("Nimbus support is open every day", "Nimbus support is open every day").score == pytest.approx(1.0)
    close = chrf("Nimbus support is open every day from 8 to 22", "Nimbus support is open every day from 08:00 to 22:00")
    far = chrf("I like turtles", "Nimbus support is open every day from 08:00 to 22:00")
    assert 0.5 < close.score < 1.0 and far.score < 0.2
    assert close.passed and not far.passed and "below" in far.reason


def test_the_registry_names_every_metric_and_refuses_an_unknown_one():
    assert {"exact", "normalised", "contains", "regex", "tool_call", "chrf"} <= set(METRICS)
    assert [m.name for m in build_metrics(["exact,tool_call", "exact"])] == ["exact", "tool_call"]
    assert [m.name for m in build_metrics(["normalized", "tool-calls"])] == ["normalised", "tool_call"]
    assert [m.name for m in build_metrics(["exact"], pattern="x")] == ["exact", "regex"]
    with pytest.raises(MetricError, match=r"unknown metric 'bleu' \(known: exact, .*tool_call"):
        build_metrics(["exact,bleu"])


# ------------------------------------------------------------------ extracting tool calls


def test_tool_code_with_a_json_object():
    [call] = extract_tool_calls(f"Faturanıza bakıyorum. {BILL}")
    assert (call.name, call.arguments, call.form, call.valid) == ("get_bill", {"phone": "05321234567"}, "tool_code",
                                                                  True)


def test_tool_code_with_keyword_arguments_and_gemmas_print_wrapper():
    [call] = extract_tool_calls('<tool_code>track_order(order_id="A-77", express=True)</tool_code>')
    assert call.arguments == {"order_id": "A-77", "express": True}
    [call] = extract_tool_calls('```tool_code\nprint(default_api.get_bill(phone="0532"))\n```')
    assert (call.name, call.arguments) == ("get_bill", {"phone": "0532"})


def test_qwen_hermes_tool_call_tags():
    reply = '<tool_call>\n{"name": "get_bill", "arguments": {"phone": "05321234567"}}\n</tool_call>'
    [call] = extract_tool_calls(reply)
    assert (call.name, call.arguments, call.form) == ("get_bill", {"phone": "05321234567"}, "tool_call")
    [call] = extract_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>')
    assert call.arguments == {"x": 1}, "arguments given as JSON text"


def test_openai_tool_calls_in_a_messages_record_and_as_the_data_reader_keeps_them():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_bill", "arguments": '{"phone": "0532"}'}}]}
    [call] = expected_tool_calls(message)
    assert (call.name, call.arguments, call.form) == ("get_bill", {"phone": "0532"}, "openai")
    # studio.core.data.normalise keeps the field as JSON text in the content, which reads the same
    from studio.core.data.normalise import normalise

    record = normalise({"messages": [{"role": "user", "content": "fatura"}, message]}, "messages")
    [call] = expected_tool_calls(record["messages"][-1]["content"])
    assert (call.name, call.arguments) == ("get_bill", {"phone": "0532"})


def test_a_bare_json_object_with_name_and_arguments():
    [call] = extract_tool_calls('Sure: {"name": "check_outage", "parameters": {"city": "İzmir"}} done')
    assert (call.name, call.arguments, call.form) == ("check_outage", {"city": "İzmir"}, "json")
    assert extract_tool_calls('The totals are {"a": 1} and [1, 2].') == []


def test_two_calls_in_one_reply_keep_their_order():
    reply = ('<tool_code>get_bill({"phone": "0532"})</tool_code> then '
             '<tool_call>{"name": "send_sms", "arguments": {"phone": "0532", "text": "ödendi"}}</tool_call>')
    assert [c.name for c in extract_tool_calls(reply)] == ["get_bill", "send_sms"]


def test_malformed_json_is_a_call_that_does_not_parse_not_an_exception():
    [call] = extract_tool_calls('<tool_code>get_bill({"phone": "0532)</tool_code>')
    assert call.name == "get_bill" and not call.valid and "not valid JSON" in call.error
    [call] = extract_tool_calls('<tool_call>{"name": "get_bill", "arguments": {"phone": </tool_call>')
    assert call.name == "get_bill" and not call.valid
    [call] = extract_tool_calls('{"name": "get_bill", "arguments": {"phone": "05')
    assert call.name == "get_bill" and not call.valid
    [call] = extract_tool_calls('<tool_code>get_bill({"phone": "0532"}')  # cut at max new tokens
    assert call.name == "get_bill" and not call.valid and "not closed" in call.error


def test_json_equal_ignores_key_order_but_not_types():
    assert json_equal({"a": 1, "b": [1, {"c": "x"}]}, {"b": [1, {"c": "x"}], "a": 1.0})
    assert not json_equal({"n": 1}, {"n": True})
    assert not json_equal({"phone": "05321234567"}, {"phone": 5321234567})
    assert not json_equal([1, 2], [2, 1])


# ------------------------------------------------------------------ scoring tool calls


def test_the_same_call_passes_in_any_form_with_arguments_in_any_order():
    expected = '<tool_code>open_ticket({"topic": "cancellation", "city": "Muğla"})</tool_code>'
    for reply in ('<tool_code>open_ticket({"city": "Muğla", "topic": "cancellation"})</tool_code>',
                  '<tool_call>{"name": "open_ticket", "arguments": {"city": "Muğla", "topic": "cancellation"}}'
                  '</tool_call>',
                  'Tamam. {"name": "open_ticket", "arguments": {"city": "Muğla", "topic": "cancellation"}}'):
        result = tool_call_match(reply, expected)
        assert result.passed and result.score == 1.0, reply
        assert result.detail["parts"] == {"call_present": True, "right_function": True, "arguments_right": True,
                                          "valid_json": True}


def test_a_wrong_argument_is_named_with_both_values():
    result = tool_call_match('<tool_code>get_bill({"phone": "05321234568"})</tool_code>', BILL)
    assert not result.passed
    assert result.detail["parts"] == {"call_present": True, "right_function": True, "arguments_right": False,
                                      "valid_json": True}
    [row] = result.detail["calls"][0]["arguments"]
    assert row == {"name": "phone", "status": "wrong", "expected": "05321234567", "got": "05321234568"}
    assert result.reason == 'get_bill: argument phone is "05321234568", expected "05321234567"'
    assert result.score == pytest.approx(0.5)  # right function and valid JSON, no argument right


def test_missing_and_extra_arguments_are_kept_per_argument():
    expected = '<tool_code>track_order({"order_id": "A-77", "phone": "0532"})</tool_code>'
    result = tool_call_match('<tool_code>track_order({"order_id": "A-77", "email": "x@y"})</tool_code>', expected)
    statuses = {row["name"]: row["status"] for row in result.detail["calls"][0]["arguments"]}
    assert statuses == {"order_id": "ok", "phone": "missing", "email": "extra"}
    assert not result.passed and 0.25 < result.score < 1.0
    assert result.reason == "track_order: missing argument phone"


def test_the_wrong_function_no_call_and_invalid_json_each_fail_with_their_reason():
    wrong = tool_call_match('<tool_code>get_balance({"phone": "05321234567"})</tool_code>', BILL)
    assert not wrong.passed and wrong.reason == "called get_balance, expected get_bill"
    assert wrong.detail["parts"]["right_function"] is False and wrong.detail["parts"]["call_present"] is True
    none = tool_call_match("Faturanız 250 TL.", BILL)
    assert not none.passed and none.score == 0.0 and none.reason == "no tool call in the reply"
    assert none.detail["parts"]["call_present"] is False
    broken = tool_call_match('<tool_code>get_bill({"phone": 05321234567})</tool_code>', BILL)
    assert not broken.passed and broken.detail["parts"]["valid_json"] is False
    assert "not valid JSON" in broken.reason and broken.score == pytest.approx(0.25)
    json.dumps(broken.to_dict())  # every detail is JSON, ready for results.jsonl


def test_two_expected_calls_pair_by_name_and_an_extra_call_fails():
    expected = ('<tool_code>get_bill({"phone": "0532"})</tool_code>'
                '<tool_code>send_sms({"phone": "0532", "text": "ok"})</tool_code>')
    swapped = ('<tool_code>send_sms({"text": "ok", "phone": "0532"})</tool_code>'
               '<tool_code>get_bill({"phone": "0532"})</tool_code>')
    assert tool_call_match(swapped, expected).passed
    one = tool_call_match('<tool_code>get_bill({"phone": "0532"})</tool_code>', expected)
    assert not one.passed and one.score == pytest.approx(0.5) and one.reason == "no call to send_sms"
    extra = tool_call_match(expected + '<tool_code>hang_up({})</tool_code>', expected)
    assert not extra.passed and extra.reason == "extra call: hang_up" and extra.score == pytest.approx(2 / 3)


def test_a_reply_expected_to_make_no_call():
    assert tool_call_match("Destek 08:00-22:00 arası açık.", "Destek 08:00-22:00 arası açık.").passed
    result = tool_call_match(BILL, "Destek 08:00-22:00 arası açık.")
    assert not result.passed and result.reason == "expected no tool call, the reply makes 1"


def test_turkish_argument_values_compare_exactly():
    expected = '<tool_code>check_outage({"city": "İzmir"})</tool_code>'
    assert tool_call_match('<tool_code>check_outage({"city": "İzmir"})</tool_code>', expected).passed
    result = tool_call_match('<tool_code>check_outage({"city": "Izmir"})</tool_code>', expected)
    assert not result.passed and result.reason == 'check_outage: argument city is "Izmir", expected "İzmir"'


def test_the_metrics_package_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys, studio.core.metrics.registry as r; r.build_metric('tool_call')('a', 'b'); "
            "r.build_metric('chrf')('a', 'b'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
