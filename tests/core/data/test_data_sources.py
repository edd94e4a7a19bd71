"""Every source type and record shape the Dataset tab and training read, with located errors and encodings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from studio.core.data.loading import training_data
from studio.core.data.encoding import guess_encoding
from studio.core.data.issues import DataError
from studio.core.data.table import ExampleRows
from studio.core.data.loading import ScanCancelled, load_data, load_with_settings
from studio.core.data.shape import detect_shape, parse_column_mapping

CHAT = [{"role": "system", "content": "You are Nimbus support."},
        {"role": "user", "content": "Is there an outage in İzmir?"},
        {"role": "assistant", "content": "No outage in İzmir right now."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome."}]
PAIRS = [("What are your support hours?", "Every day from 08:00 to 22:00."),
         ("How do I restart my modem?", "Unplug it for thirty seconds.")]
PAIR_EXAMPLES = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in PAIRS]


def _jsonl(path: Path, *lines: object) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _clean(data) -> list:
    assert data.issues == [], [str(i) for i in data.issues]
    return list(data.examples)


# ------------------------------------------------------------------ sources


def test_jsonl_multi_turn_with_system_prompt(tmp_path):
    data = load_data(_jsonl(tmp_path / "chat.jsonl", {"messages": CHAT}, {"messages": CHAT[1:3]}))
    assert data.source_kind == "jsonl" and data.format == "messages"
    assert _clean(data) == [{"messages": CHAT}, {"messages": CHAT[1:3]}]
    assert data.lines == [1, 2]


def test_json_array_and_object_of_records(tmp_path):
    records = [{"prompt": q, "completion": a} for q, a in PAIRS]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records, indent=2), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 2, "data": records, "note": "x"}), encoding="utf-8")
    for path in (array, wrapped):
        data = load_data(path)
        assert data.source_kind == "json" and data.format == "prompt_completion"
        assert _clean(data) == PAIR_EXAMPLES
    assert load_data(array).lines == [2, 6]  # where each record's "{" is


def test_json_lines_saved_under_a_json_name(tmp_path):
    path = _jsonl(tmp_path / "lines.json", {"text": "one"}, {"text": "two"}, '{"text": ')
    data = load_data(path)
    assert list(data.examples) == [{"text": "one"}, {"text": "two"}]
    assert [str(i) for i in data.issues] == [f"{path}:3: malformed JSON: Expecting value (column 10)"]


def test_csv_with_a_quoted_multi_line_cell_keeps_line_numbers(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,completion\n'
                    '"first line\nsecond line",answer one\n'     # lines 2-3
                    'q2,"a, with a comma"\n'                      # line 4
                    'q3,a3,unexpected\n'                          # line 5: one field too many
                    'q4,a4\n', encoding="utf-8")                  # line 6
    data = load_data(path)
    assert data.source_kind == "csv" and data.format == "prompt_completion"
    assert data.columns == ["prompt", "completion"]
    assert data.examples[0]["messages"][0]["content"] == "first line\nsecond line"
    assert data.examples[1]["messages"][1]["content"] == "a, with a comma"
    assert data.lines == [2, 4, 6]
    assert [str(i) for i in data.issues] == [f"{path}:5: expected 2 fields (as in the header), got 3"]


def test_semicolon_csv_and_tsv(tmp_path):
    semicolon = tmp_path / "excel.csv"
    semicolon.write_text("instruction;input;output\nSay hi;;Hi!\nTranslate;Good morning;Bonjour\n", encoding="utf-8")
    data = load_data(semicolon)
    assert data.format == "alpaca"
    assert _clean(data)[0] == {"messages": [{"role": "user", "content": "Say hi"},
                                            {"role": "assistant", "content": "Hi!"}]}
    assert data.examples[1]["messages"][0]["content"] == "Translate\n\nGood morning"
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("prompt\tcompletion\n" + "".join(f"{q}\t{a}\n" for q, a in PAIRS), encoding="utf-8")
    assert _clean(load_data(tsv)) == PAIR_EXAMPLES


def test_csv_cell_holding_openai_messages_as_json(tmp_path):
    import csv

    path = tmp_path / "chat.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "messages"])
        writer.writerow([1, json.dumps(CHAT, ensure_ascii=False)])
        writer.writerow([2, "[not json"])
    data = load_data(path)
    assert data.format == "messages"
    assert list(data.examples) == [{"messages": CHAT}]
    assert str(data.issues[0]).startswith(f"{path}:3: 'messages' is text that is not a JSON list of turns")


def test_parquet_rows_are_located_by_row_number(tmp_path):
    path = _write_parquet(tmp_path / "train.parquet", [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "human", "value": "Bye"}, {"from": "robot", "value": "beep"}]},
    ])
    data = load_data(path)
    assert data.source_kind == "parquet" and data.format == "conversations" and data.unit == "row"
    assert list(data.examples) == [{"messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello!"}]}]
    assert [str(i) for i in data.issues] == [
        f"{path}: row 2: conversations[1]: unknown role 'robot' (expected one of human, user, gpt, assistant, "
        "system, tool, function_call, observation)"]


def test_a_folder_saved_with_save_to_disk(tmp_path):
    import datasets

    rows = {"prompt": [q for q, _ in PAIRS], "completion": [a for _, a in PAIRS]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    data = load_data(tmp_path / "saved")
    assert data.source_kind == "saved" and data.format == "prompt_completion"
    assert _clean(data) == PAIR_EXAMPLES

    both = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                 "test": datasets.Dataset.from_dict({"text": ["held out"]})})
    both.save_to_disk(str(tmp_path / "dict"))
    assert _clean(load_data(tmp_path / "dict", split="test")) == [{"text": "held out"}]
    with pytest.raises(DataError) as info:
        load_data(tmp_path / "dict", split="validation")
    assert "no split 'validation' (splits: train, test)" in str(info.value)


def test_a_folder_of_data_files_as_downloaded_from_the_hub(tmp_path):
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    _jsonl(folder / "data" / "train.jsonl", *({"prompt": q, "completion": a} for q, a in PAIRS))
    data = load_data(folder)
    assert data.source_kind == "folder"
    assert _clean(data) == PAIR_EXAMPLES


def test_a_hub_id_without_network_says_so_and_points_to_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError) as info:
        load_data("someone/some-dataset", hub_reachable=lambda: False)
    message = str(info.value)
    assert message.startswith("someone/some-dataset: the Hugging Face Hub cannot be reached")
    assert "open the local file" in message


def test_an_unsupported_file_or_missing_path_is_named(tmp_path):
    sheet = tmp_path / "data.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError) as info:
        load_data(sheet)
    assert str(sheet) in str(info.value) and "'.xlsx'" in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "missing.csv")


def test_a_plain_text_file_is_read_as_documents_split_at_blank_lines(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("\n\nNimbus outage report\r\nİzmir was down for an hour.\r\n\r\n \t\n"
                       "Second document,\nover two lines.\n\n\nThird.".encode("utf-8"))
    data = load_data(corpus)
    assert data.source_kind == "text" and data.format == "text" and data.confident
    assert "plain text file" in data.evidence and "blank lines" in data.evidence
    assert _clean(data) == [{"text": "Nimbus outage report\nİzmir was down for an hour."},
                            {"text": "Second document,\nover two lines."}, {"text": "Third."}]
    assert data.lines == [3, 7, 11]  # each document is located by its first line

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nA paragraph.\n\n- a list\n", encoding="utf-8")
    whole = load_data(notes, text_split="file")
    assert _clean(whole) == [{"text": "# Notes\n\nA paragraph.\n\n- a list"}] and whole.lines == [1]
    assert "whole file as one document" in whole.evidence
    assert len(load_data(notes).examples) == 3  # the cached blank-line scan is not reused for another split
    with pytest.raises(DataError, match="unknown text split 'pages'"):
        load_data(notes, text_split="pages")


def test_problems_in_a_plain_text_file_point_at_the_document_first_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"Fine text.\n\nOne more\nparagraph with caf\xe9.\n")  # Latin-1 byte on line 4
    with pytest.raises(DataError, match=r"corpus.txt:4: not UTF-8 text"):
        load_data(corpus)
    assert len(load_data(corpus, encoding="latin-1").examples) == 2
    corpus.write_text("same\n\nother\n\nsame\n", encoding="utf-8")
    assert load_data(corpus).duplicate_pairs == [(5, 1)]
    chosen = load_data(corpus, "messages")  # a shape a text file cannot have: every document, at its first line
    assert [(i.line, i.reason) for i in chosen.issues] == [(1, "'messages' is missing"), (3, "'messages' is missing"),
                                                          (5, "'messages' is missing")]


def test_text_files_are_offered_but_do_not_make_a_hub_repository_a_data_folder(tmp_path):
    from studio.core.data.sources import FILE_DIALOG_FILTER, looks_like_hub_id

    assert "*.txt" in FILE_DIALOG_FILTER and "*.md" in FILE_DIALOG_FILTER
    assert not looks_like_hub_id("books/moby-dick.txt")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("# A dataset card\n", encoding="utf-8")
    with pytest.raises(DataError, match="neither one saved with datasets' save_to_disk nor one holding data files"):
        load_data(folder)


# ------------------------------------------------------------------ shapes, mapping


def test_every_shape_is_detected_with_evidence_from_the_first_records():
    cases = {
        "messages": {"messages": CHAT},
        "conversations": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        "alpaca": {"instruction": "q", "input": "", "output": "a"},
        "prompt_completion": {"prompt": "q", "completion": "a"},
        "text": {"text": "a document"},
    }
    for fmt, record in cases.items():
        detection = detect_shape([record] * 3)
        assert detection.format == fmt and detection.confident
        assert "in 3 of the first 3 records" in detection.evidence
    mixed = detect_shape([cases["text"]] * 6 + [cases["alpaca"]] * 4)
    assert mixed.format == "text" and not mixed.confident and "4 look like Alpaca" in mixed.evidence


def test_columns_named_otherwise_get_a_suggested_mapping_and_load_with_it(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("id,question,answer\n1,2+2?,4\n2,Capital of France?,Paris\n", encoding="utf-8")
    unmapped = load_data(path)
    assert unmapped.format == "" and not unmapped.confident
    assert unmapped.mapping == {"prompt": "question", "completion": "answer"}
    assert len(unmapped.examples) == 0 and unmapped.issue_count == 2
    assert "prompt=question, completion=answer" in str(unmapped.issues[0])

    mapped = load_data(path, mapping=["prompt=question", "completion=answer"])
    assert mapped.format == "prompt_completion" and "from the column mapping" in mapped.evidence
    assert list(mapped.examples)[1] == {"messages": [{"role": "user", "content": "Capital of France?"},
                                                     {"role": "assistant", "content": "Paris"}]}


def test_a_mapping_can_name_the_system_column_and_errors_name_the_source_column(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", {"q": "Hi", "a": "Hello", "persona": "Be brief."}, {"q": "Hi", "a": 7})
    data = load_data(path, "prompt_completion", mapping={"prompt": "q", "completion": "a", "system": "persona"})
    assert list(data.examples) == [{"messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello"}]}]
    assert [str(i) for i in data.issues] == [f"{path}:2: 'a' must be a string, got int"]


def test_bad_mapping_entries_are_refused_by_name():
    assert parse_column_mapping(["prompt = question", "completion=answer"]) == {"prompt": "question",
                                                                                "completion": "answer"}
    with pytest.raises(ValueError, match="'prompt' is not field=column"):
        parse_column_mapping(["prompt"])
    with pytest.raises(ValueError, match="unknown field 'answer'"):
        parse_column_mapping(["answer=reply"])


def test_tool_calls_content_parts_and_developer_role(tmp_path):
    record = {"messages": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Outage in "}, {"type": "text", "text": "İzmir?"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "check_outage", "arguments": "{\"city\": \"Izmir\"}"}}]},
        {"role": "tool", "content": "no outage"},
        {"role": "assistant", "content": "There is no outage."},
    ]}
    (example,) = _clean(load_data(_jsonl(tmp_path / "tools.jsonl", record)))
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert example["messages"][1]["content"] == "Outage in İzmir?"
    assert '"name": "check_outage"' in example["messages"][2]["content"]  # the call is trained as text


# ------------------------------------------------------------------ validation, located


def test_every_kind_of_bad_row_is_listed_with_its_line(tmp_path):
    good = {"messages": CHAT[1:3]}
    path = _jsonl(
        tmp_path / "bad.jsonl",
        good,                                                                        # 1
        '{"messages": [',                                                            # 2
        {"messages": "hello"},                                                       # 3
        {"messages": []},                                                            # 4
        {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},   # 5
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},  # 6
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]},  # 7
        {"messages": [{"role": "user", "content": "only a question"}]},              # 8
        "42",                                                                        # 9
        good,                                                                        # 10
    )
    data = load_data(path)
    assert data.lines == [1, 10]
    reasons = {issue.line: issue.reason for issue in data.issues}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert reasons[2].startswith("malformed JSON")
    assert reasons[3] == "'messages' must be a list"
    assert reasons[4] == "'messages' is empty"
    assert reasons[5].startswith("messages[1]: unknown role 'bot'")
    assert reasons[6] == "messages[0]: empty user message"
    assert reasons[7] == "messages[1].content must be a string, got int"
    assert reasons[8] == "'messages' has no assistant turn to learn from"
    assert reasons[9] == "expected a JSON object, got int"
    assert all(str(issue) == f"{path}:{issue.line}: {issue.reason}" for issue in data.issues)


def test_a_windows_1254_turkish_csv_is_detected_and_read_with_that_encoding(tmp_path):
    path = tmp_path / "turkish.csv"
    path.write_bytes("prompt,completion\nMerhaba,Selam\nİzmir'de hava nasıl?,Güneşli ve ılık.\n".encode("cp1254"))
    with pytest.raises(DataError) as info:
        load_data(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not UTF-8 text (byte 0xdd)")
    assert "Windows-1254 (Turkish)" in message and 'data.encoding = "cp1254"' in message
    assert info.value.encoding_guess.encoding == "cp1254"
    assert "İzmir'de hava nasıl?" in info.value.encoding_guess.sample

    data = load_data(path, encoding="cp1254")
    assert data.encoding == "cp1254"
    assert data.examples[1] == {"messages": [{"role": "user", "content": "İzmir'de hava nasıl?"},
                                             {"role": "assistant", "content": "Güneşli ve ılık."}]}


def test_a_byte_not_in_the_encoding_is_a_problem_located_at_its_line(tmp_path):
    path = tmp_path / "turkish.csv"
    path.write_bytes("prompt,completion\nşüç,hello\n".encode("cp1254"))
    with pytest.raises(DataError) as info:
        load_data(path)
    [issue] = info.value.issues
    assert (issue.path, issue.line, issue.unit) == (path, 2, "line")
    assert issue.reason.startswith("not UTF-8 text (byte 0xfe); it looks like Windows-1254 (Turkish)")
    assert str(info.value) == str(issue)  # said once, not once as the message and again as its issue

    utf16 = tmp_path / "broken.tsv"
    utf16.write_bytes("prompt\tcompletion\n".encode("utf-16") + b"\x00\xdc" + "x\ty\n".encode("utf-16-le"))
    with pytest.raises(DataError) as info:
        load_data(utf16, encoding="utf-16")
    [issue] = info.value.issues
    assert issue.line >= 1 and issue.reason.startswith("not UTF-16 text")
    assert str(info.value) == str(issue)


def test_legacy_encodings_are_told_apart():
    assert guess_encoding("Quelle journée — très réussie, déjà!".encode("cp1252")).encoding == "cp1252"
    assert guess_encoding("Şişli'de ığdır, İstanbul".encode("cp1254")).encoding == "cp1254"
    assert guess_encoding("plain ascii".encode()) is None
    assert guess_encoding("x".encode("utf-16")).encoding == "utf-16"


def test_a_utf8_file_read_with_a_legacy_encoding_is_recognised_as_utf8(tmp_path):
    text = "Şimdi mi? Evet, şimdi. İzmir'de hava güneşli.".encode("utf-8")
    assert guess_encoding(text).encoding == "utf-8"
    assert guess_encoding(text[:-1]).encoding == "utf-8", "a sample cut inside a character still counts"
    path = tmp_path / "chats.csv"
    path.write_bytes(b"prompt,completion\n" + text + b",tamam\n")
    with pytest.raises(DataError, match=r"not Windows-1254 \(Turkish\) text .*it looks like UTF-8"):
        load_data(path, encoding="cp1254")


def test_utf16_with_a_byte_order_mark_is_read_as_is(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes('{"text": "İzmir"}\n{"text": "Ankara"}\n'.encode("utf-16"))
    data = load_data(path)
    assert data.encoding == "utf-16"
    assert list(data.examples) == [{"text": "İzmir"}, {"text": "Ankara"}]


def test_nothing_in_a_file_escapes_as_anything_but_a_data_error(tmp_path):
    garbage = tmp_path / "random.jsonl"
    garbage.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DataError):
        load_data(garbage)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet PAR1")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_data(broken)
    for text in ("", "[", "{\"data\": 5}", "[1, 2", "null", "\"a string\""):
        path = tmp_path / "odd.json"
        path.write_text(text, encoding="utf-8")
        data = load_data(path)  # reported as issues, never raised
        assert len(data.examples) == 0


# ------------------------------------------------------------------ the settings training uses


def test_skip_bad_rows_is_honoured_and_every_skipped_row_is_logged(tmp_path):
    from studio.core.config.settings import DataSettings

    path = _jsonl(tmp_path / "mixed.jsonl", {"text": "good"}, "{oops", {"text": ""}, {"text": "also good"})
    settings = DataSettings(train_file=str(path))
    with pytest.raises(DataError) as info:
        training_data(settings)
    assert [i.line for i in info.value.issues] == [2, 3]

    settings.skip_bad_rows = True
    events: list[dict] = []
    data = training_data(settings, emit=events.append)
    assert list(data.examples) == [{"text": "good"}, {"text": "also good"}]
    assert events and events[0]["level"] == "warning"
    assert f"{path}:2: malformed JSON" in events[0]["message"] and f"{path}:3: 'text' is empty" in events[0]["message"]


def test_data_settings_carry_format_mapping_and_encoding(tmp_path):
    from studio.core.config.settings import DataSettings, RunConfig, dumps, loads

    path = tmp_path / "qa.csv"
    path.write_bytes("question;answer\nNasılsın?;İyiyim.\n".encode("cp1254"))
    config = RunConfig()
    config.model.name_or_path = "m"
    config.data = DataSettings(train_file=str(path), format="prompt_completion",
                               column_mapping=["prompt=question", "completion=answer"], encoding="cp1254")
    again = loads(dumps(config))  # the mapping survives the TOML round trip
    assert again.data.column_mapping == ["prompt=question", "completion=answer"]
    data = load_with_settings(again.data)
    assert list(data.examples) == [{"messages": [{"role": "user", "content": "Nasılsın?"},
                                                 {"role": "assistant", "content": "İyiyim."}]}]


# ------------------------------------------------------------------ scale: lazily held, partial, cancellable


def test_large_files_are_held_by_arrow_read_in_order_and_cached(tmp_path, monkeypatch):
    import studio.core.data.table as table_module

    monkeypatch.setattr(table_module, "_SPILL_BYTES", 50_000)  # spill to the cache file early
    path = _jsonl(tmp_path / "many.jsonl", *({"prompt": f"question {i}", "completion": f"answer {i}"}
                                             for i in range(5000)))
    heads, progress = [], []
    data = load_data(path, on_head=heads.append, progress=lambda f, n: progress.append((f, n)))
    assert isinstance(data.examples, ExampleRows) and data.examples.arrow_path is not None
    assert len(data.examples) == 5000 and data.lines[-1] == 5000
    assert data.examples[4321]["messages"][0]["content"] == "question 4321"
    assert [e["messages"][1]["content"] for e in data.examples[10:12]] == ["answer 10", "answer 11"]
    assert len(heads) == 1 and not heads[0].complete and heads[0].examples[0] == data.examples[0]
    assert [f for f, _ in progress] == sorted(f for f, _ in progress) and progress[-1] == (1.0, 5000)
    dataset = data.to_dataset()
    assert dataset.column_names == ["line", "messages", "text"] and len(dataset) == 5000

    again = load_data(path)  # the scan is reused...
    assert again.examples.arrow_path == data.examples.arrow_path
    path.write_text(path.read_text(encoding="utf-8") + json.dumps({"prompt": "new", "completion": "row"}) + "\n",
                    encoding="utf-8")
    assert len(load_data(path).examples) == 5001  # ...until the file changes


def test_reading_can_be_cancelled(tmp_path):
    path = _jsonl(tmp_path / "many.jsonl", *({"text": f"row {i}"} for i in range(3000)))
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(ScanCancelled):
        load_data(path, should_stop=stop, use_cache=False)


def test_duplicates_are_counted_with_an_example(tmp_path):
    row = {"prompt": "same", "completion": "same"}
    data = load_data(_jsonl(tmp_path / "dup.jsonl", row, {"prompt": "other", "completion": "x"}, row, row))
    assert data.duplicates == 2
    assert data.duplicate_pairs == [(3, 1), (4, 1)]


# ------------------------------------------------------------------ a file that changes while it is read


def _change_mid_read(monkeypatch, path: Path, change, *, after_lines: int = 3) -> None:
    """Make the text reader change `path` (as a writer still at work would) after it has read a few lines."""
    import studio.core.data.sources as sources

    original = sources._ByteCounter.lines

    def lines(self):
        for number, raw in enumerate(original(self), start=1):
            if number == after_lines:
                change(path)
            yield raw

    monkeypatch.setattr(sources._ByteCounter, "lines", lines)


def _truncate_to_half(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _touch_only(path: Path) -> None:
    stat = path.stat()  # same size, later modification time: rewritten in place
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.mark.parametrize("change", [_truncate_to_half, _touch_only], ids=["truncated", "rewritten"])
def test_a_jsonl_file_that_changes_while_it_is_read_is_refused(tmp_path, monkeypatch, change):
    from studio.core.config.settings import DataSettings

    path = _jsonl(tmp_path / "growing.jsonl", *({"text": f"row {i} " + "x" * 200} for i in range(2000)))
    _change_mid_read(monkeypatch, path, change)
    message = f"{path}: the file changed while it was read; read it again once it is complete"
    with pytest.raises(DataError) as info:
        load_data(path, use_cache=False)
    assert str(info.value) == message
    # Training reads through the same reader: skip_bad_rows must not turn a torn file into "usable" rows.
    with pytest.raises(DataError, match="the file changed while it was read"):
        training_data(DataSettings(train_file=str(path), skip_bad_rows=True))


def test_a_json_or_csv_file_cut_while_it_is_read_says_it_changed_not_that_it_is_broken(tmp_path, monkeypatch):
    records = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(500)]
    document = tmp_path / "array.json"
    document.write_text(json.dumps(records, indent=2), encoding="utf-8")
    table = tmp_path / "pairs.csv"
    table.write_text("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(500)), encoding="utf-8")
    for path in (document, table):
        _change_mid_read(monkeypatch, path, _truncate_to_half)
        with pytest.raises(DataError, match="the file changed while it was read"):
            load_data(path, use_cache=False)


def test_a_parquet_file_replaced_while_it_is_read_is_refused(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    path = _write_parquet(tmp_path / "rows.parquet", [{"text": f"row {i}"} for i in range(3000)])
    original = pq.ParquetFile.iter_batches

    def iter_batches(self, *args, **kwargs):
        for number, batch in enumerate(original(self, *args, **kwargs)):
            if number == 1:
                _touch_only(path)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    with pytest.raises(DataError, match="rows.parquet: the file changed while it was read"):
        load_data(path, use_cache=False)


def test_a_record_nested_100k_deep_is_a_bad_row_at_its_line_and_the_others_are_read(tmp_path):
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    good = {"prompt": "What are your support hours?", "completion": "08:00 to 22:00."}
    lines = _jsonl(tmp_path / "deep.jsonl", good, deep, good)
    data = load_data(lines)
    assert [(i.line, i.reason) for i in data.issues] == [(2, "nested too deeply to read (lists or objects inside "
                                                             "each other about a thousand levels deep)")]
    assert data.lines == [1, 3]

    document = tmp_path / "deep.json"
    document.write_text('[\n' + json.dumps(good) + ',\n{"text": "a \\" ] {\\\\", "x": ' + "[" * 100_000
                        + "]" * 100_000 + '},\n' + json.dumps(good) + "\n]\n", encoding="utf-8")
    data = load_data(document)
    assert [(i.line, i.reason.split(" (")[0]) for i in data.issues] == [(3, "nested too deeply to read")]
    assert data.lines == [2, 4]

    table = tmp_path / "deep.csv"
    table.write_text("messages\n\"" + "[" * 100_000 + "]" * 100_000 + "\"\n", encoding="utf-8")
    data = load_data(table)
    assert [i.line for i in data.issues] == [2] and "nested too deeply" in data.issues[0].reason
