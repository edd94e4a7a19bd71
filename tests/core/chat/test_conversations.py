"""Chat conversations as JSON in OpenAI's messages shape: round trip, plain lists, clear errors."""

from __future__ import annotations

import json

import pytest

from studio.core.chat.conversations import Conversation, ConversationError, load_conversation, save_conversation


def test_a_conversation_round_trips_with_its_compare_side(tmp_path):
    conversation = Conversation(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}],
        model="/models/base", adapters=["/runs/a/adapter"], generation={"temperature": 0.0, "max_new_tokens": 64},
        base_messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "asdf"}],
        compare_adapter="a")
    path = save_conversation(tmp_path / "chat.json", conversation)

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["messages"][0] == {"role": "system", "content": "Be brief."}  # a valid OpenAI request as is
    loaded = load_conversation(path)
    assert loaded == conversation
    assert loaded.system_prompt == "Be brief." and [m["role"] for m in loaded.turns] == ["user", "assistant"]


def test_a_bare_list_of_messages_opens(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"role": "user", "content": "Hi"}]), encoding="utf-8")
    assert load_conversation(path).messages == [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("text, reason", [
    ('{"messages": [{"role": "user", "content": "Hi"}', "not valid JSON"),
    ('{"messages": [{"role": "robot", "content": "Hi"}]}', "messages[0]: role 'robot'"),
    ('{"messages": [{"role": "user", "content": 3}]}', "messages[0]: content must be text"),
    ('{"conversation": []}', "'messages' list"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_problem(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConversationError) as error:
        load_conversation(path)
    assert str(path) in str(error.value) and reason in str(error.value)


def _run_with_data(tmp_path, rows: list[dict], name: str = "run"):
    from studio.core.config.settings import RunConfig, save_config

    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    run = tmp_path / name
    (run / "adapter").mkdir(parents=True)
    config = RunConfig()
    config.data.train_file = str(data)
    save_config(config, run / "run.toml")
    return run


def _turns(*pairs: tuple[str, str]) -> dict:
    return {"messages": [m for q, a in pairs for m in ({"role": "user", "content": q},
                                                       {"role": "assistant", "content": a})]}


def test_a_second_turn_with_an_adapter_trained_on_one_turn_conversations_gets_a_hint(tmp_path):
    from studio.core.chat.conversations import single_turn_warning, trained_turns

    one_turn = _run_with_data(tmp_path, [_turns(("hi", "hello"))] * 5, "one")
    assert trained_turns(one_turn / "adapter") == 1
    assert single_turn_warning(one_turn / "adapter", user_turns=1) is None, "the first turn is what it learned"
    assert "one-turn conversations" in single_turn_warning(one_turn / "adapter", user_turns=2)

    several = _run_with_data(tmp_path, [_turns(("hi", "hello")), _turns(("a", "b"), ("c", "d"))], "multi")
    assert trained_turns(several) == 2
    assert single_turn_warning(several / "adapter", user_turns=3) is None


def test_no_hint_when_the_runs_data_cannot_be_read(tmp_path):
    from studio.core.chat.conversations import single_turn_warning, trained_turns

    gone = _run_with_data(tmp_path, [_turns(("hi", "hello"))])
    (tmp_path / "run.jsonl").unlink()
    assert trained_turns(gone / "adapter") is None
    assert single_turn_warning(gone / "adapter", user_turns=2) is None
    assert single_turn_warning(tmp_path / "not-a-run" / "adapter", user_turns=2) is None
    assert single_turn_warning(None, user_turns=2) is None
