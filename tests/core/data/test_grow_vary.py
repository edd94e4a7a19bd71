"""Value variants put the new value in every turn and every call, each place in its own form (issue 25)."""

from __future__ import annotations

import json
import random
import re

from studio.core.data.grow.build import grow
from studio.core.data.grow.recipe import Recipe
from studio.core.data.grow.slots import detect
from studio.core.data.grow.vary import apply, new_value


def test_one_new_value_is_written_consistently_in_every_turn_and_call():
    messages = [
        {"role": "system", "content": "Müşteri hattı 0532 123 45 67 için arıyor."},
        {"role": "user", "content": "Numaram +90 532 123 45 67. 12 Mart'ta 1.250,50 TL ödedim, "
                                    "İzmir'de oturuyorum; Ahmet'e sorun."},
        {"role": "assistant", "content": '<tool_code>get_bill({"phone": "05321234567", "date": "2025-03-12", '
                                         '"amount": 1250.5, "city": "Izmir", "name": "Ahmet"})</tool_code>'},
        {"role": "tool", "content": '{"phone": "05321234567", "due": "2025-03-12", "amount": 1250.5}'},
        {"role": "assistant", "content": "0532 123 45 67 hattının 1.250,50 TL faturası 12.03.2025 tarihli."},
    ]
    report = detect(messages)
    values = {"phone": "05449876543", "date": "2025-07-04", "amount": 3874.25, "city": "Muğla", "name": "Ayşe"}
    variant = apply(messages, report.slots, values).messages
    assert variant[0]["content"] == "Müşteri hattı 0544 987 65 43 için arıyor."
    assert variant[1]["content"].startswith("Numaram +90 544 987 65 43. 4 Temmuz'da 3.874,25 TL ödedim")
    assert "Muğla'da oturuyorum; Ayşe'ye sorun." in variant[1]["content"]
    call = json.loads(re.search(r"\((\{.*\})\)", variant[2]["content"]).group(1))
    # The call writes the city in its own (ASCII) form, the amount as a JSON number.
    assert call == {"phone": "05449876543", "date": "2025-07-04", "amount": 3874.25, "city": "Mugla", "name": "Ayşe"}
    assert json.loads(variant[3]["content"]) == {"phone": "05449876543", "due": "2025-07-04", "amount": 3874.25}
    assert variant[4]["content"] == "0544 987 65 43 hattının 3.874,25 TL faturası 04.07.2025 tarihli."
    assert "0532" not in json.dumps(variant) and "1250" not in json.dumps(variant)


def test_new_values_keep_the_shape():
    report = detect([{"role": "user", "content": "0532 123 45 67, SP91290620, 2025-03-12, 1250,50"},
                     {"role": "assistant", "content": '{"name": "f", "arguments": {"phone": "05321234567", '
                                                      '"order": "SP91290620", "day": "2025-03-12", "sum": 1250.5}}'}])
    rng = random.Random(0)
    by_key = {s.key: s for s in report.slots}
    for _ in range(50):
        phone = new_value(by_key["phone"], "05#########", rng, avoid=set(), pool=[])
        assert re.fullmatch(r"05\d{9}", phone) and phone != "05321234567"
        assert re.fullmatch(r"SP\d{8}", new_value(by_key["order"], "SP########", rng, avoid=set(), pool=[]))
        assert new_value(by_key["day"], "", rng, avoid=set(), pool=[]).startswith("2025-")
        amount = new_value(by_key["sum"], "", rng, avoid=set(), pool=[])
        assert 1000 <= amount < 10000 and round(amount, 2) == amount


def test_a_recipe_reproduces_the_same_rows_and_every_row_records_its_origin():
    rows = [{"messages": [{"role": "user", "content": f"{p} numaralı hattımı kapatın."},
                          {"role": "assistant", "content": f'<tool_code>close_line({{"phone": "{p.replace(" ", "")}"}})'
                                                           "</tool_code>"}]}
            for p in ("0532 111 22 33", "0533 444 55 66", "0541 777 88 99", "0552 000 11 22")]
    recipe = Recipe(source="x.jsonl", seed=7, variants=3, held_out_fraction=0.25)
    first, second = grow(recipe, rows), grow(recipe, rows)
    assert [r.messages for r in first.train] == [r.messages for r in second.train]
    generated = [r for r in first.train if r.generated]
    assert len(generated) == 9 and len(first.held_out) == 1
    for row in generated:
        old, new = row.replaced["phone"]
        assert old in json.dumps(next(r.messages for r in first.train if r.id == f"{row.original}:original"))
        assert new in row.messages[0]["content"].replace(" ", "") and new in row.messages[1]["content"]
    record = generated[0].record("x.grow.toml")
    assert record["grown"]["recipe"] == "x.grow.toml" and record["grown"]["variant"] == "v1"
    # Dropping a row is part of the recipe: a re-run leaves it out.
    recipe.drop = [generated[0].id]
    assert generated[0].id not in [r.id for r in grow(recipe, rows).train]
