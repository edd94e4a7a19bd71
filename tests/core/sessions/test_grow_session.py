"""The Grow panel's session without Qt (issue 25): take the Dataset tab's rows, edit slots, preview, write beside
the data and point the run at the grown and held-out files, list rows apart, drop a row and a whole variant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from studio.core.data.issues import DataError
from studio.core.data.loading import load_data
from studio.core.sessions.dataset import DatasetSession
from studio.core.sessions.grow import GrowSession

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402


def read_into(dataset: DatasetSession, path: Path) -> None:
    dataset.open(str(path))
    dataset.begin_read()
    dataset.read_done(load_data(path, "auto"))


@pytest.fixture
def session(tmp_path):
    dataset = DatasetSession()
    read_into(dataset, write_callcentre(tmp_path / "calls.jsonl", 10, seed=6))
    grow = GrowSession(dataset)
    changes = []
    grow.subscribe(changes.append)
    assert grow.take()
    grow.changes = changes
    return grow


def test_slots_edit_preview_write_list_and_drop(session, tmp_path):
    rows = {row.key: row for row in session.slot_rows()}
    assert rows["phone"].kind == "digits" and rows["phone"].shape == "05#########"
    assert rows["order_id"].shape == "SP########"
    session.set_slot("phone", "0555#######")  # a shape changed: every new phone starts 0555
    previews = [p for p in session.preview(100) if "phone" in p.difference]
    assert previews and all(" → 0555" in p.difference for p in previews)
    session.drop_slot("order_id")
    assert not any("order_id" in p.difference for p in session.preview(100))
    assert "order_id" in {r.key for r in session.slot_rows() if not r.used}

    outputs = session.write()
    assert (tmp_path / "calls.grow.toml").read_text().startswith("# finetune-studio grow recipe")
    settings = session.dataset.settings
    assert (settings.train_file, settings.eval_file, settings.eval_fraction) == \
        (str(outputs.train), str(outputs.held_out), 0.0)
    originals, generated = session.rows_apart()
    held_out = outputs.held_out.read_text().splitlines()
    assert len(originals) + len(held_out) == 10 and len(held_out) >= 2  # a duplicate goes where its twin goes
    # Four variants of each phone, fewer of a city (its pool of other cities is small), none of an order now.
    phones = [o for o in originals if "0" in o.question and "SP" not in o.question]
    assert len(generated) >= 4 * len(phones) and all("→" in g.difference for g in generated)

    session.drop(generated[0].id)
    session.drop("v4")  # the fourth variant of every original
    written = [json.loads(line) for line in outputs.train.read_text().splitlines()]
    ids = {f"{r['grown']['original']}:{r['grown']['variant']}" for r in written}
    assert generated[0].id not in ids and not any(i.endswith(":v4") for i in ids)
    assert generated[0].id in (tmp_path / "calls.grow.toml").read_text()

    # Opened again later, the recipe beside the data comes back with its edits and drops.
    again = GrowSession(session.dataset)
    read_into(again.dataset, tmp_path / "calls.jsonl")
    assert again.take() and again.recipe.slots == {"phone": "0555#######", "order_id": ""}
    assert generated[0].id in again.recipe.drop


def test_a_users_recipe_file_is_never_overwritten(session, tmp_path):
    (tmp_path / "calls.grow.toml").write_text("my notes\n", encoding="utf-8")
    with pytest.raises(DataError, match="was not saved by the studio"):
        session.write()
    assert (tmp_path / "calls.grow.toml").read_text() == "my notes\n"


def test_a_grown_file_is_not_grown_again(session):
    session.write()
    read_into(session.dataset, Path(session.dataset.settings.train_file))
    assert "already grown" in session.can_take and not session.take()


class Scripted:
    def __init__(self):
        self.prompts = []

    def write(self, prompt, *, seed):
        self.prompts.append(prompt)
        values = prompt.split("Keep these values exactly as written: ", 1)[1].split(". Reply", 1)[0]
        return f"Merhaba, {values} konusunda yardımınızı rica ediyorum, lütfen ilgilenir misiniz?"


class State:
    def progress(self, *values):
        self.last = values

    def cancelled(self):
        return False


def test_paraphrase_asks_only_about_training_originals_and_keeps_what_passes(session):
    writer = Scripted()
    state = State()
    outcome = session.paraphrase_task(writer, per_turn=1)(state)
    assert session.paraphrasing
    session.paraphrase_done(outcome)
    held = {json.dumps(r.messages[1]["content"], ensure_ascii=False) for r in session.grown.held_out}
    asked = {json.dumps(p.rsplit("Message: ", 1)[1], ensure_ascii=False) for p in writer.prompts}
    assert asked and not asked & held  # a held-out conversation is never shown to the model
    assert session.recipe.paraphrases == outcome.accepted and outcome.accepted
    assert any(r.variant == "p1" for r in session.grown.train)
    assert session.paraphrase_summary().startswith(f"{len(outcome.accepted)} accepted of {outcome.asked} asked")
    assert state.last[0] == state.last[1] and not session.paraphrasing


class CancelledAfter(State):
    """Cancel is pressed once the writer has answered `replies` times."""

    def __init__(self, writer, replies):
        self.writer, self.replies = writer, replies

    def cancelled(self):
        return len(self.writer.prompts) >= self.replies


def test_a_cancelled_paraphrase_job_keeps_what_it_accepted(session):
    writer = Scripted()
    job = session.paraphrase_task(writer, per_turn=1)
    job(CancelledAfter(writer, 2))  # a cancelled background task's return value never reaches the session
    session.paraphrase_stopped()
    outcome = session.last_paraphrase
    assert outcome.cancelled and outcome.asked == 2 and len(outcome.accepted) == 2
    assert session.recipe.paraphrases == outcome.accepted and not session.paraphrasing
    assert any(r.variant == "p1" for r in session.grown.train)
    assert session.paraphrase_summary().startswith("2 accepted of 2 asked (cancelled)")


def test_a_failed_paraphrase_job_is_its_error_and_keeps_nothing_it_did_not_accept(session):
    from studio.core.chat.paraphrase import ParaphraseError

    class Refused:
        def write(self, prompt, *, seed):
            raise ParaphraseError("http://127.0.0.1:9/v1/chat/completions: [Errno 111] Connection refused")

    job = session.paraphrase_task(Refused())
    with pytest.raises(ParaphraseError) as raised:
        job(State())
    session.paraphrase_stopped(str(raised.value))
    assert session.error == str(raised.value) and not session.paraphrasing
    assert session.last_paraphrase is None and session.recipe.paraphrases == []


def test_a_server_that_stops_answering_mid_run_keeps_what_was_accepted_before(session):
    from studio.core.chat.paraphrase import ParaphraseError

    class StopsAnswering(Scripted):
        def write(self, prompt, *, seed):
            if self.prompts:
                raise ParaphraseError("http://127.0.0.1:9/v1/chat/completions: [Errno 111] Connection refused")
            return super().write(prompt, seed=seed)

    job = session.paraphrase_task(StopsAnswering(), per_turn=1)
    with pytest.raises(ParaphraseError) as raised:
        job(State())
    session.paraphrase_stopped(str(raised.value))
    assert session.error == str(raised.value) and not session.paraphrasing
    outcome = session.last_paraphrase
    assert outcome.asked == 1 and len(outcome.accepted) == 1 and not outcome.cancelled
    assert session.recipe.paraphrases == outcome.accepted


@pytest.mark.parametrize("mode, gpu, four_bit", [("4bit", True, True), ("none", True, False), ("4bit", False, False)])
def test_a_model_folder_paraphrases_as_the_run_will_train_it(session, monkeypatch, mode, gpu, four_bit):
    """On a card, a QLoRA run's base model paraphrases in 4-bit too (an 8B base in 16-bit would not fit the 8 GB card
    the run was made 4-bit for); the CPU keeps its float32 load; a server URL is a server whatever the run."""
    import studio.core.system.gpu as gpu_module

    monkeypatch.setattr(gpu_module, "detect_gpu", lambda index=0: object() if gpu else None)
    session.dataset.draft.update("quantization", mode=mode)
    writer = session.writer("/models/Llama-3.1-8B")
    assert (writer.folder, writer.load_in_4bit) == ("/models/Llama-3.1-8B", four_bit)
    assert session.writer("http://127.0.0.1:8080").url == "http://127.0.0.1:8080"
