"""Reading training files: every supported record shape, and bad rows reported as file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.data.issues import DataError
from studio.core.data.loading import load_data, load_training_data


def _jsonl(path: Path, *lines: object) -> Path:
    """Write one line per item: dicts as JSON, strings verbatim (for malformed lines)."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _only_example(path: Path) -> tuple[str, dict]:
    data = load_training_data(path)
    assert data.issues == []
    assert len(data.examples) == 1
    return data.format, data.examples[0]


# ------------------------------------------------------------------ record shapes


def test_openai_messages_multi_turn_with_system(tmp_path):
    messages = [
        {"role": "system", "content": "You are Nimbus support."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Is İzmir down?"},
        {"role": "assistant", "content": "No outage in İzmir."},
    ]
    fmt, example = _only_example(_jsonl(tmp_path / "chat.jsonl", {"messages": messages}))
    assert fmt == "messages"
    assert example == {"messages": messages}


def test_sharegpt_conversations_are_mapped_to_roles(tmp_path):
    record = {"conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Capital of France?"},
        {"from": "gpt", "value": "Paris."},
    ]}
    fmt, example = _only_example(_jsonl(tmp_path / "sharegpt.jsonl", record))
    assert fmt == "conversations"
    assert example == {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]}


def test_alpaca_without_input(tmp_path):
    fmt, example = _only_example(_jsonl(tmp_path / "a.jsonl", {"instruction": "Say hi", "input": "", "output": "Hi!"}))
    assert fmt == "alpaca"
    assert example == {"messages": [{"role": "user", "content": "Say hi"},
                                    {"role": "assistant", "content": "Hi!"}]}


def test_alpaca_with_input(tmp_path):
    record = {"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"}
    fmt, example = _only_example(_jsonl(tmp_path / "a.jsonl", record))
    assert fmt == "alpaca"
    user = example["messages"][0]
    assert user["role"] == "user"
    assert user["content"].startswith("Translate to French") and user["content"].endswith("Good morning")
    assert example["messages"][1] == {"role": "assistant", "content": "Bonjour"}


def test_prompt_completion(tmp_path):
    fmt, example = _only_example(_jsonl(tmp_path / "pc.jsonl", {"prompt": "2+2=", "completion": "4"}))
    assert fmt == "prompt_completion"
    assert example == {"messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]}


def test_plain_text(tmp_path):
    fmt, example = _only_example(_jsonl(tmp_path / "t.jsonl", {"text": "Once upon a time."}))
    assert fmt == "text"
    assert example == {"text": "Once upon a time."}


def test_the_detected_format_comes_with_its_evidence(tmp_path):
    data = load_data(_jsonl(tmp_path / "pc.jsonl", {"prompt": "a", "completion": "b"}))
    assert "prompt" in data.evidence and "completion" in data.evidence


def test_blank_lines_are_ignored_and_lines_are_kept(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"text": "one"}\n\n   \n{"text": "two"}\n', encoding="utf-8")
    data = load_training_data(path)
    assert [e["text"] for e in data.examples] == ["one", "two"]
    assert data.lines == [1, 4]


def test_a_json_array_file_locates_records_by_their_first_line(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(
        "[\n"
        '  {"prompt": "first", "completion": "1"},\n'          # line 2
        "  {\n"                                                # line 3
        '    "prompt": "second, with [brackets] and {braces}",\n'
        '    "completion": "2"\n'
        "  },\n"
        '  {"prompt": "third \\" quote", "completion": 3}\n'   # line 7: completion is not a string
        "]\n",
        encoding="utf-8",
    )
    data = load_data(path)
    assert data.format == "prompt_completion"
    assert data.lines == [2, 3]
    assert [str(i) for i in data.issues] == [f"{path}:7: 'completion' must be a string, got int"]


def test_a_json_object_holding_one_list_is_read(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [{"text": "a"}, {"text": "b"}]}), encoding="utf-8")
    assert [e["text"] for e in load_training_data(path).examples] == ["a", "b"]


# ------------------------------------------------------------------ bad rows, located


def test_malformed_json_is_reported_with_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", {"text": "fine"}, {"text": "fine"}, '{"text": "oops",}', {"text": "ok"})
    data = load_data(path)
    assert len(data.examples) == 3
    assert len(data.issues) == 1
    assert str(data.issues[0]).startswith(f"{path}:3: malformed JSON")


def test_a_malformed_json_array_file_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b"\n]\n', encoding="utf-8")
    data = load_data(path)
    assert data.examples == []
    assert [i.line for i in data.issues] == [4]
    assert str(data.issues[0]).startswith(f"{path}:4: malformed JSON")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "x"}]},
         "unknown role 'robot'"),
        ({"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
         "unknown role 'alien'"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "x"}]},
         "messages[0].content must be a string, got int"),
        ({"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "x"}]},
         "empty user message"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "only a question"}]},
         "no assistant turn"),
        ({"instruction": ["not", "text"], "output": "x"}, "'instruction' must be a string"),
        ({"text": ""}, "'text' is empty"),
    ],
)
def test_bad_records_are_reported_with_file_line_and_reason(tmp_path, record, reason):
    # The first line decides the format; the bad record is on line 2.
    first = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    if "conversations" in record:
        first = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    elif "instruction" in record:
        first = {"instruction": "q", "output": "a"}
    elif "text" in record:
        first = {"text": "fine"}
    path = _jsonl(tmp_path / "bad.jsonl", first, record)
    data = load_data(path)
    assert len(data.examples) == 1
    assert len(data.issues) == 1
    assert str(data.issues[0]).startswith(f"{path}:2: ")
    assert reason in str(data.issues[0])


def test_a_row_that_is_not_an_object_is_reported(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", {"text": "fine"}, "[1, 2, 3]")
    issues = load_data(path).issues
    assert [str(i) for i in issues] == [f"{path}:2: expected a JSON object, got list"]


def test_an_unrecognised_first_record_is_reported(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", {"question": "q", "answer": "a"})
    issues = load_data(path).issues
    assert len(issues) == 1
    assert str(issues[0]).startswith(f"{path}:1: unrecognised record shape")
    assert "answer, question" in str(issues[0])


def test_a_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "turkish.jsonl"
    lines = [
        json.dumps({"prompt": "Hello", "completion": "Hi"}),
        json.dumps({"prompt": "Merhaba", "completion": "Selam"}),
        json.dumps({"prompt": "İzmir'de hava nasıl?", "completion": "Güneşli."}, ensure_ascii=False),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("cp1254"))  # what an old Turkish Windows editor saves
    with pytest.raises(DataError) as info:
        load_data(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not UTF-8")
    assert "UTF-8" in message


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + json.dumps({"text": "İzmir"}, ensure_ascii=False).encode() + b"\n")
    assert load_training_data(path).examples == [{"text": "İzmir"}]


def test_an_unsupported_file_type_is_refused(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04 a spreadsheet")
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(path) in str(info.value) and ".xlsx" in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "missing.jsonl"
    with pytest.raises(DataError) as info:
        load_training_data(path)
    assert str(path) in str(info.value)


def test_training_refuses_a_file_with_bad_rows_and_lists_every_one(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = _jsonl(
        tmp_path / "mixed.jsonl",
        good,
        "{not json",                                                   # 2
        good,
        {"messages": [{"role": "user", "content": "no answer"}]},     # 4
        {"messages": [{"role": "wizard", "content": "x"}]},           # 5
        good,
    )
    with pytest.raises(DataError) as info:
        load_training_data(path)
    error = info.value
    assert [i.line for i in error.issues] == [2, 4, 5]
    message = str(error)
    assert "3 bad row(s)" in message
    for line in (2, 4, 5):
        assert f"{path}:{line}: " in message


def test_training_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_training_data(path)
    assert "no examples" in str(info.value)


def test_a_long_list_of_bad_rows_is_shortened_in_the_message(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", *(["{broken"] * 25))
    with pytest.raises(DataError) as info:
        load_training_data(path)
    assert len(info.value.issues) == 25
    assert "… and 15 more" in str(info.value)
