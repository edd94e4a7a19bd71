"""The run's event log: what a second process (the window, a re-attach) reads while a run writes."""

from __future__ import annotations

import json

from studio.core.runs.events import EventReader, EventWriter, append_event, make_event, read_events


def test_each_event_is_readable_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "run" / "events.jsonl"
    reader = EventReader(path)
    assert reader.read_new() == []  # not created yet: nothing, no error

    writer = EventWriter(path)
    try:
        writer.write(make_event("started", pid=123, total_steps=60))
        assert [e["event"] for e in reader.read_new()] == ["started"]
        assert [e["event"] for e in read_events(path)] == ["started"]  # a fresh reader too

        writer.write(make_event("step", step=1, loss=2.5))
        new = reader.read_new()
        assert [(e["event"], e["step"], e["loss"]) for e in new] == [("step", 1, 2.5)]
        assert reader.read_new() == []  # nothing new, nothing repeated
    finally:
        writer.close()


def test_events_carry_their_kind_and_time_and_keep_non_ascii_text(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        writer(make_event("log", level="info", message="Reading İzmir.jsonl"))
    (event,) = read_events(path)
    assert event["event"] == "log"
    assert isinstance(event["time"], float)
    assert event["message"] == "Reading İzmir.jsonl"
    assert "İzmir" in path.read_text(encoding="utf-8")  # readable when opened by hand


def test_a_partial_last_line_waits_for_the_rest(tmp_path):
    path = tmp_path / "events.jsonl"
    first = json.dumps(make_event("step", step=1, loss=3.0)) + "\n"
    second = json.dumps(make_event("step", step=2, loss=2.0)) + "\n"
    path.write_text(first + second[:15], encoding="utf-8")  # the writer is mid-line

    reader = EventReader(path)
    assert [e["step"] for e in reader.read_new()] == [1]
    assert reader.read_new() == []

    with open(path, "a", encoding="utf-8") as f:
        f.write(second[15:])
    assert [e["step"] for e in reader.read_new()] == [2]
    assert reader.read_new() == []


def test_a_torn_line_is_skipped_and_later_events_are_read(tmp_path):
    path = tmp_path / "events.jsonl"
    good = [json.dumps(make_event("step", step=n, loss=1.0 / n)) for n in (1, 2)]
    path.write_text(good[0] + "\n" + '{"event": "step", "st\n' + "\xff not json\n" + good[1] + "\n",
                    encoding="utf-8")
    assert [e["step"] for e in read_events(path)] == [1, 2]


def test_lines_that_are_not_events_are_ignored(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('[1, 2]\n{"no_event_key": 1}\n\n{"event": "log", "message": "ok"}\n', encoding="utf-8")
    assert read_events(path) == [{"event": "log", "message": "ok"}]


def test_an_event_appended_after_a_kill_mid_write_is_not_lost(tmp_path):
    # The training process was killed while writing a step: the file ends in a partial line. The
    # supervisor then records how the run ended; that record must survive, not be glued to the torn line.
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(make_event("step", step=7, loss=1.0)) + "\n" + '{"event": "step", "ste',
                    encoding="utf-8")

    append_event(path, {"event": "failed", "time": 0.0, "kind": "crash", "message": "killed", "hint": ""})

    events = read_events(path)
    assert [e["event"] for e in events] == ["step", "failed"]
    assert events[-1]["message"] == "killed"


def test_append_event_adds_to_an_existing_log(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        writer.write(make_event("started", pid=1))
    append_event(path, make_event("finished", status="completed", step=3))
    assert [e["event"] for e in read_events(path)] == ["started", "finished"]


def test_a_failed_event_can_be_made_with_its_kind(tmp_path):
    # `failed` events carry a `kind` field (oom | data | config | disk | crash), as documented in events.py.
    event = make_event("failed", kind="oom", message="CUDA out of memory", hint="Lower max length.")
    assert event["event"] == "failed"
    assert event["kind"] == "oom"
