"""Slot detection and shapes for growing a tool-call dataset (issue 25): Turkish phone numbers in their spoken and
international forms, ids, dates, amounts, names with dotted/dotless i and case suffixes."""

from __future__ import annotations

import json

import pytest

from studio.core.data.grow import turkish
from studio.core.data.grow.slots import default_shape, detect, kind_of


def chat(user: str, arguments: dict, *, tool: str = "get_bill") -> list[dict]:
    call = f"<tool_code>{tool}({json.dumps(arguments, ensure_ascii=False)})</tool_code>"
    return [{"role": "system", "content": "Araçlar: get_bill(phone)."}, {"role": "user", "content": user},
            {"role": "assistant", "content": f"Bakıyorum. {call}"}]


def places(report, key):
    slot = next(s for s in report.slots if s.key == key)
    return slot.kind, [(p.turn, p.text, p.form) for p in slot.places]


def test_a_turkish_mobile_is_tied_in_its_spoken_international_and_call_forms():
    messages = chat("Numaram 0532 123 45 67, yani +90 (532) 123-45-67; hat 532 123 45 67.", {"phone": "05321234567"})
    kind, found = places(detect(messages), "phone")
    assert kind == "digits"
    assert found == [(1, "0532 123 45 67", "same"), (1, "+90 (532) 123-45-67", "country"),
                     (1, "532 123 45 67", "national"), (2, "05321234567", "same")]
    assert default_shape("digits", "05321234567") == "05#########"  # a mobile stays 05XX, 11 digits


def test_ids_dates_and_amounts_in_their_turkish_forms():
    messages = chat("SP91290620 siparişim için 12 Mart'ta 1.250,50 TL ödedim (12.03.2025).",
                    {"order_id": "SP91290620", "date": "2025-03-12", "amount": 1250.5})
    report = detect(messages)
    assert places(report, "order_id") == ("code", [(1, "SP91290620", "same"), (2, "SP91290620", "same")])
    assert places(report, "date") == ("date", [(1, "12 Mart'ta", "day-month:DA"), (1, "12.03.2025", "numeric.0"),
                                               (2, "2025-03-12", "iso")])
    assert places(report, "amount") == ("amount", [(1, "1.250,50", ",.2"), (2, "1250.5", "json")])
    assert default_shape("code", "SP91290620") == "SP########"
    assert not report.untied


def test_names_match_across_dotted_and_dotless_i_and_keep_their_suffix():
    messages = chat("İZMİR'de ve Işıklar'da arıza var; Ahmet'e söyleyin.",
                    {"city": "Izmir", "district": "Işıklar", "name": "Ahmet"}, tool="check_outage")
    report = detect(messages)
    assert places(report, "city")[1] == [(1, "İZMİR'de", "suffix:DA"), (2, "Izmir", "")]
    assert places(report, "district")[1] == [(1, "Işıklar'da", "suffix:DA"), (2, "Işıklar", "")]
    assert places(report, "name")[1] == [(1, "Ahmet'e", "suffix:(y)A"), (2, "Ahmet", "")]
    # "ı" and "i" differ in Turkish but fold together for matching; case keeps the dot.
    assert turkish.fold("IŞIK") == turkish.fold("ışık") == "isik"
    assert turkish.lower("İZMİR") == "izmir" and turkish.upper("izmir") == "İZMİR"


def test_a_value_whose_forms_cannot_be_tied_is_reported_not_varied():
    # The generator's "Diyarbakır'de" breaks vowel harmony: no known suffix explains it.
    report = detect(chat("Diyarbakır'de internet yok.", {"city": "Diyarbakır"}, tool="check_outage"))
    assert not report.slots and "Diyarbakır'de" in report.untied[0]
    # A phone the user never said cannot be tied to their words.
    report = detect(chat("Faturamı öğrenmek istiyorum.", {"phone": "05321234567"}))
    assert not report.slots and "not found in the user's words" in report.untied[0]


@pytest.mark.parametrize("value, kind", [("05321234567", "digits"), ("SP91290620", "code"), ("34 ABC 123", "code"),
                                         ("2025-03-12", "date"), (1250.5, "amount"), ("İzmir", "name"),
                                         ("fiber_100", "name"), (3, None), (True, None)])
def test_kinds(value, kind):
    assert kind_of(value) == kind
