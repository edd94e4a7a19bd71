"""The Chat tab's state, without Qt: the conversation, compare mode, regenerate, the repair of unanswered turns.

A `ChatSession` holds the loaded `ChatModel`, the conversation on the tuned side and (in compare mode) the base
side's own, the system prompt and the last reply's stats. The tab calls its methods on the GUI thread and redraws
from its state; the replies themselves come from `generate_replies`, which runs the session's jobs on a worker
thread and reports through plain callbacks.

Compare mode answers each prompt twice on the same loaded weights: with the active adapter (`TUNED`) and with the
adapters disabled (`BASE`). Each side keeps a conversation whose roles alternate: a side that never answered
(a failure, or Stop before its turn) drops its unanswered user turn, because the next message would otherwise
follow it as a second user turn in a row, which templates that require alternating roles reject.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.chat.conversations import (
    Conversation, ConversationError, load_conversation, save_conversation, single_turn_warning,
)
from studio.core.chat.model import BASE_MODEL, ChatModel, GenerationSettings, ReplyStats
from studio.core.models.source import ModelLoadError
from studio.core.sessions.runs import RunsChange

log = logging.getLogger(__name__)

TUNED, BASE = "tuned", "base"
LOAD_ERRORS: tuple[type[Exception], ...] = (ModelLoadError,)
"""A load that fails with one of these says why in one line (a missing folder, an adapter of another base)."""
ADD_ADAPTER_ERRORS: tuple[type[Exception], ...] = (ModelLoadError, ValueError)
CONVERSATION_ERRORS: tuple[type[Exception], ...] = (ConversationError,)
Message = dict[str, str]
Job = tuple[str, str | None, list[Message]]
"""One reply to generate: the side it is for, the adapter (None: the active one; BASE_MODEL: none) and the
messages it answers, system prompt first."""

AS_TRAINED, ORIGINAL, NF4 = "trained", "16-bit", "4-bit"
"""The weights a load asks for: the base as the adapter's run trained on it, the original 16-bit weights, or
4-bit NF4 for less memory."""

STOPPED_NOTE = "stopped before this model answered"
NO_ADAPTER_TO_COMPARE = "compare needs an adapter: load one to see the difference"
GENERATION_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")


@dataclass(frozen=True)
class LoadRequest:
    """What Load was pressed with: the base and adapter fields and the weights chosen."""

    base: str
    adapter: str = ""
    weights: str = AS_TRAINED

    def problem(self) -> str | None:
        """Why nothing can be loaded from these fields, or None."""
        return None if self.base or self.adapter else "Name a base model or an adapter first."

    def loads_4bit(self) -> bool:
        """Whether the weights will be 4-bit: asked for, or 'as trained' for a run trained on a 4-bit base."""
        if self.weights == NF4:
            return True
        if self.weights != AS_TRAINED or not self.adapter:
            return False
        from studio.core.models.adapters import resolve_adapter_dir
        from studio.core.models.source import ModelLoadError
        from studio.core.models.trained_base import TrainedBase

        try:
            return TrainedBase.of_adapter(resolve_adapter_dir(Path(self.adapter))).quantization == "4bit"
        except ModelLoadError:
            return False

    def memory_warning(self, gpu: Any, training_running: Callable[[], bool]) -> str | None:
        """Warn before loading when a training run holds the GPU (or the model will not fit); None on a CPU."""
        from studio.core.chat.model import chat_memory_warning, estimate_chat_memory
        from studio.core.models.adapters import adapter_base_model, resolve_adapter_dir
        from studio.core.models.source import (
            ModelLoadError,
            ModelSourceError,
            find_model_config,
        )
        from studio.core.plan.vram import ShapeError

        if gpu is None:
            return None  # chat runs on the CPU: nothing to share with a training run
        base = self.base
        try:
            if not base:
                base = adapter_base_model(resolve_adapter_dir(Path(self.adapter)))
            config = find_model_config(base).config
            need = estimate_chat_memory(config, load_in_4bit=self.loads_4bit())
        except (ModelLoadError, ModelSourceError, ShapeError, OSError):
            return None  # the load itself will say what is wrong
        return chat_memory_warning(need, gpu, training_running=training_running())

    def load(self) -> ChatModel:
        """Load the model (slow: call it off the GUI thread). A lone adapter or run folder brings its own base."""
        return ChatModel.load(self.base or self.adapter, [self.adapter] if self.base and self.adapter else [],
                              load_in_4bit=self.weights == NF4, weights="original" if self.weights == ORIGINAL
                              else "trained")


@dataclass
class ReplyPlan:
    """The replies to generate for a prompt, and what the base side shows when it has nothing to compare."""

    jobs: list[Job]
    base_error: str | None = None


@dataclass
class ChatSession:
    """One chat: the loaded model, both sides' conversations (without the system prompt) and their last stats."""

    model: Any = None  # a ChatModel (tests use stand-ins with the same attributes)
    history: list[Message] = field(default_factory=list)
    base_history: list[Message] = field(default_factory=list)
    system_prompt: str = ""
    compare: bool = False
    last_stats: dict[str, ReplyStats] = field(default_factory=dict)
    generating: bool = False
    loading: LoadRequest | None = None
    loaded_adapter: Path | None = None  # the adapter folder (or run folder) the loaded model came with
    loaded_fields: tuple[str, str] | None = None  # the base and adapter fields the loaded model was asked with
    answering: dict[str, str] = field(default_factory=dict)  # side → what answers it, while replies are under way
    reply_labels: dict[tuple[str, int], str] = field(default_factory=dict)  # (side, index in its history) → label
    _turn_warnings: dict[Path, str | None] = field(default_factory=dict, init=False, repr=False)

    # --- the model ------------------------------------------------------------------------------------------
    def loaded(self, model: Any, fields: tuple[str, str]) -> bool:
        """Take the model the `loading` request produced. False when the fields now differ from that request
        (a run that ended fills in its adapter a moment after Load was pressed): what shows is what the user
        expects to talk to, so the caller loads again."""
        request, self.loading = self.loading, None
        self.model = model
        if request is not None and (request.base, request.adapter) != tuple(fields):
            return False
        self.loaded_adapter = Path(request.adapter) if request is not None and request.adapter else None
        self.loaded_fields = (request.base, request.adapter) if request is not None else None
        self._turn_warnings = {}  # read once per loaded adapter
        return True

    def must_load_for(self, fields: tuple[str, str]) -> bool:
        """Whether the model fields name another model than the loaded one, so Send loads it before answering:
        the screen names the model that answers. A named adapter that is loaded (added beside others) becomes the
        active one instead; an empty adapter field asks for the base alone."""
        from studio.core.models.adapters import resolve_adapter_dir
        from studio.core.models.source import ModelLoadError

        base, adapter = (text.strip() for text in fields)
        if not (base or adapter):
            return False  # nothing named: whatever is loaded answers (Send without a model does nothing)
        if self.model is None or self.loaded_fields is None or base != self.loaded_fields[0]:
            return True
        if not adapter:
            return bool(self.model.adapters)
        if adapter == self.loaded_fields[1]:  # the adapter it was loaded with is its first
            if self.model.adapters and self.model.active_adapter != self.model.adapters[0]:
                self.model.set_adapter(self.model.adapters[0])
            return False
        try:
            folder = resolve_adapter_dir(Path(adapter))
        except ModelLoadError:
            return True  # the load says what is wrong with the field
        for name, path in self.model.adapter_paths.items():
            if Path(path) == folder:
                if name != self.model.active_adapter:
                    self.model.set_adapter(name)
                return False
        return True

    def unload(self) -> bool:
        """Drop the model and return its memory; False when none was loaded."""
        if self.model is None:
            return False
        self.model.unload()
        self.model = None
        self.loaded_fields = None
        return True

    def loaded_status(self) -> str:
        model = self.model
        precision = model.loaded_as or ("4-bit NF4" if model.load_in_4bit else "16-bit")
        adapters = f" with {', '.join(model.adapters)}" if model.adapters else " (no adapter)"
        notes = "".join(f"\n{note}" for note in model.notes)
        return f"Loaded {model.base_name} ({precision}){adapters}.{notes}"

    def added_status(self, name: str) -> str:
        return f"Added {name}; {len(self.model.adapters)} adapters share one copy of {self.model.base_name}."

    def set_adapter(self, name: str) -> bool:
        """Make a loaded adapter the one replies use; False for a name that is not loaded."""
        if self.model is None or not name or name not in self.model.adapters:
            return False
        self.model.set_adapter(name)
        return True

    def export_source(self, adapter_field: str = "") -> Path | None:
        """The run (or adapter folder) to export: the active adapter's, else the adapter field's."""
        folder = None
        if self.model is not None and self.model.active_adapter:
            folder = self.model.adapter_paths.get(self.model.active_adapter)
        if folder is None and adapter_field.strip():
            folder = Path(adapter_field.strip())
        if folder is not None and folder.name == "adapter" and (folder.parent / "run.toml").is_file():
            return folder.parent
        return folder

    # --- the conversation -------------------------------------------------------------------------------------
    def side_history(self, side: str) -> list[Message]:
        return self.base_history if side == BASE else self.history

    def with_system(self, history: list[Message]) -> list[Message]:
        system = self.system_prompt.strip()
        return ([{"role": "system", "content": system}] if system else []) + list(history)

    def set_compare(self, on: bool) -> None:
        self.compare = on
        if on:  # the base side starts a conversation of its own from here
            self.base_history = []

    def ask(self, text: str) -> bool:
        """Add a user turn (to both sides in compare mode); False when there is nothing to send or no one to
        answer it (no model, or a reply still under way)."""
        text = text.strip()
        if not text or self.model is None or self.generating:
            return False
        self.history.append({"role": "user", "content": text})
        if self.compare:
            self.base_history.append({"role": "user", "content": text})
        return True

    def turn_hint(self) -> str | None:
        """From the second turn on: a warning when the loaded adapter never saw a conversation that long."""
        turns = sum(1 for message in self.history if message["role"] == "user")
        adapter = self.loaded_adapter if self.model is not None and self.model.adapters else None
        if turns < 2 or adapter is None:
            return None
        if adapter not in self._turn_warnings:  # reads a few thousand rows of the run's data: once per adapter
            self._turn_warnings[adapter] = single_turn_warning(adapter, turns)
        return self._turn_warnings[adapter]

    def regenerate(self) -> bool:
        """Drop the last reply (both sides in compare mode) so the last message is answered again; False when
        there is nothing to answer again (no model, a reply under way, an empty chat)."""
        if self.model is None or self.generating or not self.history:
            return False
        for history in (self.history, self.base_history):
            while history and history[-1]["role"] == "assistant":
                history.pop()
        if not (self.history and self.history[-1]["role"] == "user"):
            return False
        if self.compare and not (self.base_history and self.base_history[-1]["role"] == "user"):
            self.base_history.append(dict(self.history[-1]))  # the base side answers the same question
        return True

    def start_replies(self) -> ReplyPlan:
        """The replies the conversation waits for: the tuned side's, and the base side's in compare mode."""
        plan = ReplyPlan(jobs=[(TUNED, None, self.with_system(self.history))])
        if self.compare and self.model.adapters:
            plan.jobs.append((BASE, BASE_MODEL, self.with_system(self.base_history)))
        elif self.compare and self.base_history and self.base_history[-1]["role"] == "user":
            self.base_history.pop()  # nothing to compare: the loaded model has no adapter
            plan.base_error = NO_ADAPTER_TO_COMPARE
        self.last_stats = {}
        self.generating = True
        self.answering = {side: self.answered_by(adapter) for side, adapter, _ in plan.jobs}
        return plan

    def answered_by(self, adapter: str | None) -> str:
        """The label of a reply: the adapter that produces it (None: the active one), or the base model."""
        name = self.model.active_adapter if adapter is None else None if adapter == BASE_MODEL else adapter
        return name or "base model, no adapter"

    def reply_done(self, side: str, reply: str, stats: ReplyStats) -> None:
        history = self.side_history(side)
        self.reply_labels[(side, len(history))] = self.answering.get(side, "")
        history.append({"role": "assistant", "content": reply})
        self.last_stats[side] = stats

    def reply_label(self, side: str, index: int) -> str:
        """What answered the side's message at `index` ("" for a reply of an opened conversation)."""
        return self.reply_labels.get((side, index), "")

    def reply_failed(self, side: str, message: str) -> str:
        """Forget the turn that failed; returns what the side's transcript shows."""
        history = self.side_history(side)
        if history and history[-1]["role"] == "user":
            history.pop()
        return f"generation failed: {message}"

    def finish_replies(self) -> list[str]:
        """Every reply of the prompt is done, failed or stopped: drop the user turn of a side that never answered
        (see the module docstring); returns those sides, whose transcripts say STOPPED_NOTE."""
        repaired = []
        for side in (TUNED, BASE):
            history = self.side_history(side)
            if history and history[-1]["role"] == "user":
                history.pop()
                repaired.append(side)
        self.generating = False
        return repaired

    def stats_text(self) -> str:
        """Tokens, seconds and speed of the last replies ('base:' and 'tuned:' in compare mode)."""
        parts = []
        for side in (TUNED, BASE):
            stats = self.last_stats.get(side)
            if stats is None:
                continue
            label = f"{side}: " if self.compare else ""
            stopped = " (stopped)" if stats.stopped else ""
            # Tenths of a second: a reply takes seconds, and format_duration's whole seconds would hide that.
            parts.append(f"{label}{stats.tokens} tokens in {stats.seconds:.1f} s · "
                         f"{stats.tokens_per_second:.1f} tokens/s{stopped}")
        return "   |   ".join(parts)

    def clear(self) -> None:
        self.history.clear()
        self.base_history.clear()
        self.reply_labels.clear()

    def can_regenerate(self) -> bool:
        """Whether Regenerate has a message to answer again: a model, no reply under way, a user turn asked."""
        return self.model is not None and not self.generating and any(m["role"] == "user" for m in self.history)

    def prompt_placeholder(self) -> str:
        """What the empty conversation says: how to begin, for the model loaded or for none."""
        if self.model is None:
            return ("Load a model, then ask it something. With temperature 0 replies are greedy (deterministic), so "
                    "a trained question gets its trained answer.")
        who = self.model.active_adapter or f"{Path(str(self.model.base_name)).name} (no adapter)"
        return (f"{who} is loaded: ask it something. With temperature 0 replies are greedy (deterministic), so a "
                "trained question gets its trained answer.")

    # --- saved conversations ----------------------------------------------------------------------------------
    def conversation(self, generation: dict[str, Any], fields: tuple[str, str] = ("", "")) -> Conversation:
        """The chat as a saveable Conversation; without a model, the model fields say what it was meant for."""
        model = self.model
        base, adapter = (text.strip() for text in fields)
        return Conversation(
            messages=self.with_system(self.history),
            model=model.base_name if model else base,
            adapters=[str(model.adapter_paths[n]) for n in model.adapters] if model else ([adapter] if adapter else []),
            generation=dict(generation),
            base_messages=self.with_system(self.base_history) if self.compare else None,
            compare_adapter=(model.active_adapter or "") if model and self.compare else "",
        )

    def save(self, path: Path, generation: dict[str, Any], fields: tuple[str, str]) -> Path:
        """Write the chat as a conversation file (JSON, OpenAI messages)."""
        return save_conversation(Path(path), self.conversation(generation, fields))

    @staticmethod
    def read(path: Path) -> Conversation:
        """A saved conversation; ConversationError (one of CONVERSATION_ERRORS) names the file and what is wrong."""
        return load_conversation(Path(path))

    @staticmethod
    def turns(messages: list[Message]) -> Conversation:
        """Messages (an eval case's turns before its question) as a conversation to continue."""
        return Conversation(messages=list(messages))

    def open(self, conversation: Conversation) -> None:
        """Continue a saved conversation: its system prompt, its turns and (if it compared) the base side's."""
        self.system_prompt = conversation.system_prompt
        self.compare = conversation.base_messages is not None
        self.reply_labels = {}
        self.history = [dict(m) for m in conversation.turns]
        if conversation.base_messages is not None:
            self.base_history = [dict(m) for i, m in enumerate(conversation.base_messages)
                                 if not (i == 0 and m["role"] == "system")]


def saved_generation(generation: dict[str, Any]) -> dict[str, int | float]:
    """The generation settings a saved conversation can restore (seed -1: random), skipping what is not a number."""
    values: dict[str, int | float] = {key: generation[key] for key in GENERATION_FIELDS
                                      if isinstance(generation.get(key), (int, float))}
    if "seed" in generation:
        values["seed"] = generation["seed"] if isinstance(generation["seed"], int) else -1
    return values


def generate_replies(chat_model: Any, jobs: Iterable[Job], settings: GenerationSettings, *, stop: threading.Event,
                     on_piece: Callable[[str, str], Any], on_reply: Callable[[str, str, ReplyStats], Any],
                     on_failed: Callable[[str, str], Any]) -> None:
    """Generate one reply per job, in order, on one ChatModel: `on_piece(side, text)` as it streams,
    `on_reply(side, reply, stats)` per reply, `on_failed(side, message)` (which ends the run). `stop` ends the
    reply under way (reported with `stats.stopped`) and skips the rest."""
    for side, adapter, messages in jobs:
        if stop.is_set():
            return
        stats, pieces = ReplyStats(), []
        try:
            for piece in chat_model.stream_reply(messages, settings, adapter=adapter, stop=stop, stats=stats):
                pieces.append(piece)
                on_piece(side, piece)
        except Exception as error:  # noqa: BLE001 - shown in the transcript; the traceback goes to the log
            log.error("chat generation failed:\n%s", traceback.format_exc())
            on_failed(side, f"{type(error).__name__}: {error}")
            return
        on_reply(side, "".join(pieces), stats)


def detected_gpu() -> Any:
    """The GPU a load is checked against (None without one)."""
    from studio.core.system.gpu import detect_gpu

    return detect_gpu()


def fields_after(change: RunsChange, fields: tuple[str, str]) -> tuple[str, str]:
    """What the Base model and Adapter fields say after the runs changed: an adapter field inside a renamed run
    follows it, one inside a deleted run is cleared (a loaded adapter stays in memory until Unload), and a run that
    ended with an adapter fills both, so the next Send answers with the model just trained."""
    base, adapter = (text.strip() for text in fields)
    for old, new in change.renamed:
        if adapter_in_runs(adapter, [old]):
            adapter = str(Path(new) / Path(adapter).relative_to(old))
    if adapter_in_runs(adapter, change.removed):
        adapter = ""
    finished = [row for row in change.ended if row.status != "failed" and row.adapter_bytes is not None]
    if finished:
        base, adapter = finished[0].model, str(finished[0].run_dir.adapter_dir)
    return base, adapter


def adapter_in_runs(adapter_field: str, folders: Iterable[Path]) -> bool:
    """Whether the adapter field points into one of these (deleted) run folders."""
    text = adapter_field.strip()
    return bool(text) and any(Path(text) == folder or folder in Path(text).parents for folder in map(Path, folders))


def run_adapter(run_dir: Path) -> tuple[Path, str | None]:
    """A run's adapter folder and the base model it was trained on (None when the adapter does not say)."""
    from studio.core.models.adapters import adapter_base_model
    from studio.core.models.source import ModelLoadError

    adapter = Path(run_dir) / "adapter"
    try:
        return adapter, adapter_base_model(adapter)
    except ModelLoadError:
        return adapter, None
