"""The Chat tab's state without Qt: compare mode, regenerate, the repair of unanswered turns, clear, the jobs,
the single-turn hint, loading decisions and the reply loop."""

from __future__ import annotations

import json
import threading
from pathlib import Path


from studio.core.chat.model import BASE_MODEL, GenerationSettings
from studio.core.sessions.chat import (
    AS_TRAINED, BASE, NF4, NO_ADAPTER_TO_COMPARE, ORIGINAL, TUNED, ChatSession, LoadRequest, generate_replies, saved_generation,
)


class FakeChatModel:
    """A ChatModel stand-in: the tuned side answers 'tuned reply to <last question>', the base side (adapters
    disabled) 'base reply to ...', one word per piece. `fail_on` names a side whose reply raises;
    `on_piece(adapter, n)` runs after each piece (a test presses Stop there)."""

    def __init__(self, adapters=("support-run",), fail_on=None, on_piece=None):
        self.adapters = list(adapters)
        self.adapter_paths = {name: Path("/runs") / name / "adapter" for name in self.adapters}
        self.base_name = "base-model"
        self.loaded_as, self.load_in_4bit, self.notes = "", False, []
        self.fail_on, self.on_piece = fail_on, on_piece
        self.active_adapter = self.adapters[0] if self.adapters else None
        self.asked: list[tuple[str | None, list[dict[str, str]]]] = []
        self.unloaded = False

    def set_adapter(self, name):
        self.active_adapter = name

    def unload(self):
        self.unloaded = True

    def stream_reply(self, messages, settings=None, *, adapter=None, stop=None, stats=None):
        self.asked.append((adapter, messages))
        side = "base" if adapter == BASE_MODEL else "tuned"
        if self.fail_on == side:
            raise RuntimeError(f"{side} side out of memory")
        for n, word in enumerate(f"{side} reply to {messages[-1]['content']}".split(" ")):
            if stop.is_set():
                break
            stats.tokens += 1
            yield (" " if n else "") + word
            if self.on_piece is not None:
                self.on_piece(adapter, n)
        stats.seconds = 0.5
        stats.stopped = stop.is_set()


def _session(model=None, *, compare=False, system="") -> ChatSession:
    session = ChatSession(model=FakeChatModel() if model is None else model, system_prompt=system)
    session.set_compare(compare)
    return session


def _answer(session: ChatSession, stop: threading.Event | None = None) -> list[str]:
    """Run the session's jobs as the tab does (callbacks straight into the session); returns the repaired sides."""
    plan = session.start_replies()
    pieces = []
    generate_replies(session.model, plan.jobs, GenerationSettings(), stop=stop or threading.Event(),
                     on_piece=lambda side, text: pieces.append((side, text)), on_reply=session.reply_done,
                     on_failed=session.reply_failed)
    assert all(side in (TUNED, BASE) for side, _ in pieces)
    return session.finish_replies()


def _roles(history) -> list[str]:
    return [message["role"] for message in history]


# ------------------------------------------------------------------ jobs and compare mode


def test_the_jobs_carry_the_system_prompt_and_the_conversation_of_each_side():
    session = _session(compare=True, system="  Answer as Nimbus support.  ")
    assert session.ask("Where is my order?")

    plan = session.start_replies()

    system = {"role": "system", "content": "Answer as Nimbus support."}
    question = {"role": "user", "content": "Where is my order?"}
    assert plan.jobs == [(TUNED, None, [system, question]), (BASE, BASE_MODEL, [system, question])]
    assert plan.base_error is None and session.generating
    assert session.history == [question], "the system prompt is not part of the history"


def test_compare_mode_answers_both_sides_and_keeps_their_conversations_apart():
    session = _session(compare=True)
    session.ask("hi")

    assert _answer(session) == []

    assert session.history[-1] == {"role": "assistant", "content": "tuned reply to hi"}
    assert session.base_history[-1] == {"role": "assistant", "content": "base reply to hi"}
    assert [adapter for adapter, _ in session.model.asked] == [None, BASE_MODEL]
    text = session.stats_text()
    assert "tuned: 4 tokens in 0.5 s · 8.0 tokens/s" in text and "base: 4 tokens" in text
    assert not session.generating


def test_turning_compare_on_starts_the_base_side_afresh_and_off_asks_once():
    session = _session()
    session.ask("first")
    _answer(session)
    session.set_compare(True)
    session.ask("second")
    assert _roles(session.base_history) == ["user"], "the base side starts at the next question"
    assert _roles(session.history) == ["user", "assistant", "user"]
    _answer(session)

    session.set_compare(False)
    session.ask("third")
    asked = len(session.model.asked)
    _answer(session)
    assert [adapter for adapter, _ in session.model.asked[asked:]] == [None], "the tuned side alone"
    assert session.stats_text().startswith("4 tokens in"), "one side: no side labels"


def test_compare_without_an_adapter_says_so_on_the_base_side_and_keeps_no_question_there():
    session = _session(FakeChatModel(adapters=()), compare=True)
    session.ask("hi")

    plan = session.start_replies()

    assert [side for side, _, _ in plan.jobs] == [TUNED]
    assert plan.base_error == NO_ADAPTER_TO_COMPARE
    assert session.base_history == []


# ------------------------------------------------------------------ regenerate


def test_regenerate_drops_the_last_reply_on_both_sides_and_asks_the_same_question():
    session = _session(compare=True)
    session.ask("hi")
    _answer(session)

    assert session.regenerate()

    assert session.history == [{"role": "user", "content": "hi"}]
    assert session.base_history == [{"role": "user", "content": "hi"}]
    _answer(session)
    assert _roles(session.history) == _roles(session.base_history) == ["user", "assistant"]


def test_regenerate_after_compare_was_turned_on_asks_the_base_side_the_last_question_too():
    session = _session()
    session.ask("hi")
    _answer(session)
    session.set_compare(True)  # the base side has no conversation yet

    assert session.regenerate()

    assert session.base_history == [{"role": "user", "content": "hi"}]
    assert [side for side, _, _ in session.start_replies().jobs] == [TUNED, BASE]


def test_regenerate_is_refused_without_a_model_a_conversation_or_while_replying():
    assert not ChatSession().regenerate()
    session = _session()
    assert not session.regenerate(), "an empty chat"
    session.ask("hi")
    session.start_replies()
    assert not session.regenerate(), "a reply is under way"
    assert session.history == [{"role": "user", "content": "hi"}]


# ------------------------------------------------------------------ unanswered turns


def test_stop_during_the_tuned_reply_leaves_no_unanswered_turn_on_the_base_side():
    stop = threading.Event()
    model = FakeChatModel(on_piece=lambda adapter, n: stop.set() if adapter is None and n == 1 else None)
    session = _session(model, compare=True)
    session.ask("Tell me a long story")

    assert _answer(session, stop) == [BASE], "the base model never got its turn"

    assert session.history == [{"role": "user", "content": "Tell me a long story"},
                               {"role": "assistant", "content": "tuned reply"}], "the stopped reply is kept"
    assert session.last_stats[TUNED].stopped and session.last_stats[TUNED].tokens == 2
    assert "(stopped)" in session.stats_text()
    assert session.base_history == []
    assert [adapter for adapter, _ in model.asked] == [None]

    model.on_piece = None
    session.ask("And then?")
    _answer(session)
    assert _roles(session.base_history) == ["user", "assistant"], "roles alternate on both sides"
    assert _roles(session.history) == ["user", "assistant", "user", "assistant"]


def test_a_failed_reply_forgets_its_question_and_the_other_side_that_never_answered_too():
    session = _session(FakeChatModel(fail_on="tuned"), compare=True)
    session.ask("hi")
    failures = []
    plan = session.start_replies()

    generate_replies(session.model, plan.jobs, GenerationSettings(), stop=threading.Event(),
                     on_piece=lambda side, text: None, on_reply=session.reply_done,
                     on_failed=lambda side, message: failures.append((side, session.reply_failed(side, message))))

    assert failures == [(TUNED, "generation failed: RuntimeError: tuned side out of memory")]
    assert session.history == []
    assert session.finish_replies() == [BASE] and session.base_history == []
    assert not session.generating and session.ask("again")


def test_a_failure_on_the_base_side_keeps_the_tuned_reply():
    session = _session(FakeChatModel(fail_on="base"), compare=True)
    session.ask("hi")
    failed = []
    plan = session.start_replies()
    generate_replies(session.model, plan.jobs, GenerationSettings(), stop=threading.Event(),
                     on_piece=lambda side, text: None, on_reply=session.reply_done,
                     on_failed=lambda side, message: failed.append(session.reply_failed(side, message)))

    assert failed == ["generation failed: RuntimeError: base side out of memory"]
    assert session.finish_replies() == []
    assert _roles(session.history) == ["user", "assistant"] and session.base_history == []


# ------------------------------------------------------------------ asking and clearing


def test_a_question_is_refused_when_empty_without_a_model_or_while_replying():
    assert not ChatSession().ask("hi"), "no model loaded"
    session = _session()
    assert not session.ask("   ")
    assert session.ask("  hi  ") and session.history == [{"role": "user", "content": "hi"}]
    session.start_replies()
    assert not session.ask("another"), "a reply is under way"


def test_clear_empties_both_sides():
    session = _session(compare=True)
    session.ask("hi")
    _answer(session)

    session.clear()

    assert session.history == [] and session.base_history == []
    assert session.compare and session.ask("fresh") and _roles(session.base_history) == ["user"]


# ------------------------------------------------------------------ the single-turn hint


def _one_turn_run(tmp_path) -> Path:
    from studio.core.config.settings import RunConfig, save_config

    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    run = tmp_path / "runs" / "one-turn"
    (run / "adapter").mkdir(parents=True)
    config = RunConfig()
    config.data.train_file = str(data)
    save_config(config, run / "run.toml")
    return run


def test_the_second_turn_warns_when_the_adapter_only_learned_one_turn_conversations(tmp_path):
    run = _one_turn_run(tmp_path)
    session = ChatSession()
    session.loading = LoadRequest("base-model", str(run / "adapter"))
    assert session.loaded(FakeChatModel(), ("base-model", str(run / "adapter")))
    session.ask("Where is my order?")
    assert session.turn_hint() is None, "the first turn is what it was trained on"
    _answer(session)

    session.ask("And the other one?")

    assert "one-turn conversations" in session.turn_hint()
    session.clear()
    assert session.turn_hint() is None


def test_no_turn_hint_for_a_base_model_alone(tmp_path):
    session = ChatSession()
    session.loading = LoadRequest("base-model")
    assert session.loaded(FakeChatModel(adapters=()), ("base-model", ""))
    for question in ("one", "two"):
        session.ask(question)
        _answer(session)
    assert session.loaded_adapter is None and session.turn_hint() is None


# ------------------------------------------------------------------ loading


def test_a_model_loaded_after_the_fields_changed_is_not_the_one_to_talk_to():
    session = ChatSession()
    session.loading = LoadRequest("base-model")
    model = FakeChatModel(adapters=())

    assert not session.loaded(model, ("base-model", "/runs/new/adapter")), "a run filled in its adapter meanwhile"

    assert session.model is model, "kept until the next load unloads it"
    assert session.loading is None and session.loaded_adapter is None
    assert session.unload() and model.unloaded and session.model is None
    assert not session.unload()


def test_the_status_of_a_loaded_model_names_its_weights_adapters_and_notes():
    session = ChatSession()
    session.loading = LoadRequest("base-model", "/runs/support-run/adapter")
    model = FakeChatModel()
    model.loaded_as, model.notes = "4-bit NF4, as it was trained", ["other-run was trained on a 16-bit base"]
    assert session.loaded(model, ("base-model", "/runs/support-run/adapter"))

    assert session.loaded_status() == ("Loaded base-model (4-bit NF4, as it was trained) with support-run.\n"
                                       "other-run was trained on a 16-bit base")
    assert session.loaded_adapter == Path("/runs/support-run/adapter")
    model.adapters.append("second")
    assert session.added_status("second") == "Added second; 2 adapters share one copy of base-model."
    assert session.set_adapter("second") and model.active_adapter == "second"
    assert not session.set_adapter("not-loaded") and model.active_adapter == "second"


def test_a_load_request_names_what_to_load_and_which_weights(monkeypatch):
    from studio.core.chat import model as chat

    loads = []
    monkeypatch.setattr(chat.ChatModel, "load", staticmethod(lambda *args, **kwargs: loads.append((args, kwargs))))

    assert LoadRequest("", "").problem() == "Name a base model or an adapter first."
    LoadRequest("base", "/runs/a/adapter").load()
    LoadRequest("", "/runs/a", weights=ORIGINAL).load()
    LoadRequest("base", weights=NF4).load()

    assert loads == [(("base", ["/runs/a/adapter"]), {"load_in_4bit": False, "weights": "trained"}),
                     (("/runs/a", []), {"load_in_4bit": False, "weights": "original"}),
                     (("base", []), {"load_in_4bit": True, "weights": "trained"})]


def _run_trained_with(tmp_path, quantization: str) -> Path:
    from studio.core.config.settings import RunConfig, save_config

    run = tmp_path / f"run-{quantization}"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base-model"}))
    config = RunConfig()
    config.quantization.mode = quantization
    save_config(config, run / "run.toml")
    return run / "adapter"


def test_as_trained_weights_are_4_bit_for_a_qlora_runs_adapter(tmp_path):
    qlora, lora = _run_trained_with(tmp_path, "4bit"), _run_trained_with(tmp_path, "none")

    assert LoadRequest("", str(qlora)).loads_4bit()
    assert not LoadRequest("", str(qlora), weights=ORIGINAL).loads_4bit()
    assert not LoadRequest("base-model", str(lora), weights=AS_TRAINED).loads_4bit()
    assert LoadRequest("base-model", str(lora), weights=NF4).loads_4bit()
    assert not LoadRequest("base-model").loads_4bit()
    assert not LoadRequest("", str(tmp_path / "missing")).loads_4bit(), "the load itself says what is wrong"


def test_loading_while_a_run_trains_on_the_gpu_warns_with_the_estimated_need(demo_assets):
    from studio.core.system.gpu import GpuInfo

    gpu = GpuInfo(name="RTX 4060", total_bytes=8 * 1024**3, free_bytes=600 * 1024**2)
    request = LoadRequest(str(demo_assets.model_dir))
    asked = []

    assert request.memory_warning(None, lambda: asked.append(1) or True) is None, "a CPU shares nothing"
    assert asked == []
    warning = request.memory_warning(gpu, lambda: True)
    assert "training run is using RTX 4060" in warning and "needs about" in warning
    assert "only 600 MiB is free on RTX 4060" in request.memory_warning(gpu, lambda: False)
    idle = GpuInfo(name="RTX 4060", total_bytes=8 * 1024**3, free_bytes=7 * 1024**3)
    assert request.memory_warning(idle, lambda: False) is None, "the tiny model fits in what is free"
    assert LoadRequest("", "/no/such/adapter").memory_warning(gpu, lambda: True) is None, "the load will say why"


# ------------------------------------------------------------------ conversations, runs, export


def test_a_compared_conversation_round_trips_through_the_session(tmp_path):
    from studio.core.chat.conversations import load_conversation, save_conversation

    session = _session(compare=True, system="Be brief.")
    session.ask("hi")
    _answer(session)
    conversation = session.conversation({"temperature": 0.0, "seed": None}, ("ignored", ""))
    assert conversation.model == "base-model" and conversation.adapters == ["/runs/support-run/adapter"]
    assert conversation.compare_adapter == "support-run"
    path = save_conversation(tmp_path / "chat.json", conversation)

    reopened = ChatSession()
    reopened.open(load_conversation(path))

    assert reopened.system_prompt == "Be brief." and reopened.compare
    assert reopened.history == session.history and reopened.base_history == session.base_history
    assert saved_generation({"temperature": 0.0, "seed": None, "top_k": "x"}) == {"temperature": 0.0, "seed": -1}


def test_without_a_model_a_conversation_names_the_model_fields():
    conversation = ChatSession(history=[{"role": "user", "content": "hi"}]).conversation(
        {}, (" base-model ", " /runs/a/adapter "))
    assert conversation.model == "base-model" and conversation.adapters == ["/runs/a/adapter"]
    assert conversation.base_messages is None


def test_the_export_source_is_the_active_adapters_run(tmp_path):
    run = tmp_path / "support-run"
    (run / "adapter").mkdir(parents=True)
    (run / "run.toml").write_text("", encoding="utf-8")
    model = FakeChatModel()
    model.adapter_paths["support-run"] = run / "adapter"

    assert ChatSession(model=model).export_source("/elsewhere") == run
    assert ChatSession().export_source(str(tmp_path / "loose-adapter")) == tmp_path / "loose-adapter"
    assert ChatSession().export_source("  ") is None
