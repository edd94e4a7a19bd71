"""The Dataset tab's Grow panel: grow the shown tool-call data by value variation and kept paraphrases, the
held-out originals apart (studio.core.data.grow), with every decision here and tested without Qt.

The panel binds to a `GrowSession` over the tab's `DatasetSession`: `take()` the rows the tab read; the detected
slots (`slot_rows`) are edited in the recipe (`set_slot`: a kind, a mask, or "" to leave an argument alone);
`preview()` shows variants before anything is written; `write()` saves the recipe beside the data (never over a
user's file), writes the grown and held-out files and points the run's data at them (train on the grown rows,
evaluate on the held-out originals); `rows_apart()` lists originals and generated rows apart, each generated row
with its difference; `drop()` removes a row or a whole variant, in the recipe, so a re-run leaves them out too.
Paraphrasing is a task function (`paraphrase_task`) the panel runs in the background; what it accepts is stored
in the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.chat.paraphrase import FolderWriter, ParaphraseOutcome, ServerWriter, paraphrase
from studio.core.data.grow.build import Grown, Row, conversation, grow
from studio.core.data.grow.recipe import RECIPE_SUFFIX, Recipe, load_recipe, recipe_text
from studio.core.data.grow.record import (
    GROWN_SUFFIX, GrowOutputs, check_outputs, outputs_of, source_path, write_grown,
)
from studio.core.data.grow.slots import KINDS, default_shape
from studio.core.data.issues import DataError
from studio.core.sessions.dataset import DatasetSession

SLOTS, PREVIEW, WRITTEN, PARAPHRASE = "slots", "preview", "written", "paraphrase"
Listener = Callable[[frozenset], None]
RECIPE_MARK = "# finetune-studio grow recipe"


@dataclass(frozen=True)
class SlotRow:
    key: str
    kind: str
    shape: str
    example: str
    count: int
    used: bool


@dataclass(frozen=True)
class ShownRow:
    id: str
    question: str
    difference: str
    """For a generated row: what was replaced ("phone 05321234567 → 05449876543"), or the reworded turn."""


def difference(row: Row) -> str:
    parts = [f"{key} {old} → {new}" for key, (old, new) in row.replaced.items()]
    if row.paraphrased:
        parts.insert(0, f"turn {row.paraphrased[0]} reworded")
    return "; ".join(parts) or "the original"


def _question(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")


class GrowSession:
    def __init__(self, dataset: DatasetSession):
        self.dataset = dataset
        self.recipe: Recipe | None = None
        self.recipe_path: Path | None = None
        self.examples: list[dict[str, Any]] = []
        self.grown: Grown | None = None
        self.outputs: GrowOutputs | None = None
        self.error = ""
        self.paraphrasing = False
        self.last_paraphrase: ParaphraseOutcome | None = None
        self._running: ParaphraseOutcome | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self, *aspects: str) -> None:
        for listener in list(self._listeners):
            listener(frozenset(aspects))

    # --- the source ------------------------------------------------------------------------------------------
    @property
    def can_take(self) -> str:
        """Why the shown data cannot be grown ("" when it can)."""
        data, path = self.dataset.data, self.dataset.settings.train_file
        if data is None or not len(data.examples):
            return "Open a tool-call data file first."
        if not path or not Path(path).is_file():
            return "Growing reads a local data file."
        if str(path).endswith(GROWN_SUFFIX):
            return "This file is already grown; open its source to grow it again."
        if not self.dataset.shows_conversations:
            return "Growing needs conversations (SFT data)."
        return ""

    def take(self) -> bool:
        """Grow the rows the Dataset tab read: a recipe beside the file is reloaded (its paraphrases and drops
        kept), else a new one with the run's seed and held-out fraction."""
        if self.can_take:
            self.error = self.can_take
            self._changed(SLOTS)
            return False
        source = Path(self.dataset.settings.train_file)
        self.examples = [dict(e) for e in self.dataset.data.examples]
        self.recipe_path = source.with_name(source.stem + RECIPE_SUFFIX)
        self.recipe = None
        if self.recipe_path.is_file():
            try:
                self.recipe = load_recipe(self.recipe_path)
            except DataError as error:
                self.error = str(error)
        if self.recipe is None:
            fraction = self.dataset.settings.eval_fraction
            self.recipe = Recipe(source=source.name, seed=self.dataset.seed,
                                 held_out_fraction=fraction if 0 < fraction < 1 else 0.2)
        self.outputs = None
        self._regrow()
        return True

    def _regrow(self) -> None:
        if self.recipe is None:
            return
        self.grown = grow(self.recipe, self.examples)
        self.error = "" if self.grown.slot_summary() else "No values carried from the user's words into a tool call."
        self._changed(SLOTS, PREVIEW)

    # --- the slots -------------------------------------------------------------------------------------------
    def slot_rows(self) -> list[SlotRow]:
        if self.grown is None or self.recipe is None:
            return []
        rows = []
        summary = self.grown.slot_summary()
        for key, entry in summary.items():
            given = self.recipe.slots.get(key)
            shape = given if given and "#" in given else default_shape(entry["kind"], entry["example"])
            rows.append(SlotRow(key, entry["kind"], shape, str(entry["example"]), entry["count"], True))
        for key, given in self.recipe.slots.items():
            if given == "" and key not in summary:
                rows.append(SlotRow(key, "", "", "", 0, False))
        return rows

    def set_slot(self, key: str, value: str) -> None:
        """An argument's kind, its mask ("05#########"), or "" to leave it alone; the preview follows."""
        if value not in KINDS and value and "#" not in value:
            raise ValueError(f"{value!r} is not a kind ({', '.join(KINDS)}), a mask with # or \"\"")
        self.recipe.slots[key] = value
        self._regrow()

    def drop_slot(self, key: str) -> None:
        self.set_slot(key, "")

    def set_variants(self, count: int) -> None:
        self.recipe.variants = max(0, min(100, int(count)))
        self._regrow()

    # --- preview, write, list, drop ----------------------------------------------------------------------------
    def preview(self, limit: int = 20) -> list[ShownRow]:
        if self.grown is None:
            return []
        return [ShownRow(r.id, _question(r.messages), difference(r)) for r in self.grown.train if r.generated][:limit]

    @property
    def problems(self) -> list[str]:
        return list(self.grown.problems) if self.grown is not None else []

    def write(self) -> GrowOutputs:
        """Save the recipe beside the data (a recipe of the user's own that is not ours is refused), write the
        grown and held-out files and the record, and train on them: data.train_file = the grown rows,
        data.eval_file = the held-out originals."""
        assert self.recipe is not None and self.recipe_path is not None
        path = self.recipe_path
        if path.exists() and not path.read_text(encoding="utf-8").startswith(RECIPE_MARK):
            raise DataError(f"{path}: exists and was not saved by the studio; move it to grow here")
        check_outputs(outputs_of(path), source_path(self.recipe, path))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(recipe_text(self.recipe), encoding="utf-8")
        tmp.replace(path)
        self.outputs = write_grown(self.recipe, path, self.grown)
        self.dataset.edit(train_file=str(self.outputs.train), eval_file=str(self.outputs.held_out),
                          eval_fraction=0.0)
        self._changed(WRITTEN)
        return self.outputs

    def rows_apart(self) -> tuple[list[ShownRow], list[ShownRow]]:
        """(originals, generated rows) as written."""
        if self.grown is None:
            return [], []
        originals = [ShownRow(r.id, _question(r.messages), "the original") for r in self.grown.train
                     if not r.generated]
        generated = [ShownRow(r.id, _question(r.messages), difference(r)) for r in self.grown.train if r.generated]
        return originals, generated

    def drop(self, row_id: str) -> None:
        """Drop one generated row ("<hash>:v2"), or a whole variant of every original ("v2")."""
        if self.grown is None:
            return
        ids = [r.id for r in self.grown.train if r.generated and (r.id == row_id or r.variant == row_id)]
        self.recipe.drop += [i for i in ids if i not in self.recipe.drop]
        self._regrow()
        if self.outputs is not None:
            self.write()

    # --- paraphrase --------------------------------------------------------------------------------------------
    def writer(self, where: str, model: str = "local") -> Any:
        """The model to paraphrase with: a server URL on this machine, or a local model folder ("" = the
        run's base model)."""
        where = where.strip() or self.dataset.model_name
        if where.startswith(("http://", "https://")):
            return ServerWriter(where, model or "local")
        # On a card, the folder loads as the run will train it: in 4-bit where the run is QLoRA (the card is small
        # for the 16-bit weights), so paraphrasing fits where training does. The CPU keeps its float32 load.
        from studio.core.system.gpu import detect_gpu

        four_bit = self.dataset.draft.config.quantization.mode == "4bit" and detect_gpu() is not None
        return FolderWriter(where, load_in_4bit=four_bit)

    def paraphrase_task(self, writer: Any, *, per_turn: int = 2) -> Callable[[Any], ParaphraseOutcome]:
        """The background job: paraphrase the training originals' user turns (held-out ones are never shown
        to the model)."""
        held = set(self.grown.held_out_hashes) if self.grown is not None else set()
        conversations = [(r.original, r.messages) for r in (self.grown.train if self.grown else [])
                         if r.variant == "original" and r.original not in held]
        kinds, seed = self.recipe.kinds(), self.recipe.seed
        tokenizer = self.dataset.tokenizer
        count = (lambda text: len(tokenizer(text)["input_ids"])) if tokenizer is not None else None
        # Without the tokenizer a turn is measured in characters, about four to a token.
        max_length = self.dataset.max_length * (1 if count else 4)
        self.paraphrasing = True
        # Filled as the job goes: a job that is cancelled or fails returns nothing, and what it had accepted is
        # kept all the same (paraphrase_stopped).
        running = self._running = ParaphraseOutcome()
        self._changed(PARAPHRASE)
        return lambda state: paraphrase(conversations, writer, per_turn=per_turn, seed=seed, state=state,
                                        kinds=kinds, max_length=max_length, count=count, into=running)

    def paraphrase_done(self, outcome: ParaphraseOutcome) -> None:
        """The job returned: what it accepted goes into the recipe."""
        self.paraphrasing = False
        self._running = None
        self.last_paraphrase = outcome
        self.recipe.paraphrases += outcome.accepted
        self._regrow()
        self._changed(PARAPHRASE)

    def paraphrase_stopped(self, error: str = "") -> None:
        """The job ended without returning: cancelled (it stops after the reply in flight), or failed with
        `error` (a server that does not answer). Call it once the job has returned, so what it judged is final:
        the paraphrases it accepted until then are kept, as after a finished run."""
        outcome, self._running = self._running, None
        if outcome is not None and outcome.asked:
            outcome.cancelled = outcome.cancelled or not error
            self.paraphrase_done(outcome)
        else:
            self.paraphrasing = False
        if error:
            self.error = error
        self._changed(PARAPHRASE)

    def paraphrase_summary(self) -> str:
        outcome = self.last_paraphrase
        if outcome is None:
            return ""
        rejected = ", ".join(f"{reason} {count}" for reason, count in outcome.rejected.most_common()) or "none"
        return (f"{len(outcome.accepted)} accepted of {outcome.asked} asked"
                f"{' (cancelled)' if outcome.cancelled else ''}; rejected: {rejected}")


__all__ = ["GrowSession", "SlotRow", "ShownRow", "difference", "SLOTS", "PREVIEW", "WRITTEN", "PARAPHRASE",
           "conversation"]
